"""The job registry (:mod:`minijobs.registry`): what ``@app.job`` returns and its per-enqueue options.

Enqueue refuses what the worker would reject: arguments that do not fit,
undeclared queues, a name taken twice.  Each refusal is a typed error at the
call and nothing is written.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import minijobs
from minijobs import App, ConfigurationError, JobArgumentsError, Queue, UnknownQueueError


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    app = App(tmp_path / "jobs.sqlite3", plugins=[], queues=[Queue("default"), Queue("mail")])
    app.open()
    yield app
    app.close()


def rows(app: App) -> int:
    conn = sqlite3.connect(app.path)
    try:
        return int(conn.execute("SELECT count(*) FROM minijobs_jobs").fetchone()[0])
    finally:
        conn.close()


def plain(x: int, y: int = 0) -> int:
    return x + y


def keyword_only(x: int, *, flag: bool) -> int:
    return x


def positional_only(x: int, /, y: int) -> int:
    return x + y


def star(*args: int, **kwargs: int) -> int:
    return len(args) + len(kwargs)


CASES: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], bool]] = [
    (plain, (1,), {}, True),
    (plain, (1, 2), {}, True),
    (plain, (), {"x": 1, "y": 2}, True),
    (plain, (1, 2, 3), {}, False),
    (plain, (), {}, False),
    (plain, (1,), {"x": 1}, False),
    (plain, (1,), {"z": 1}, False),
    (keyword_only, (1,), {"flag": True}, True),
    (keyword_only, (1,), {}, False),
    (keyword_only, (1, True), {}, False),
    (positional_only, (1, 2), {}, True),
    (positional_only, (), {"x": 1, "y": 2}, False),
    (star, (1, 2, 3), {"a": 1}, True),
]


@pytest.mark.parametrize(("func", "args", "kwargs", "fits"), CASES)
def test_enqueue_binds_the_call_against_the_signature(
    app: App, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], fits: bool
) -> None:
    fn = app.job(name=f"registry.{func.__name__}")(func)
    enqueues = [lambda: fn.enqueue(*args, **kwargs), lambda: fn.options(priority=1).enqueue(*args, **kwargs),
                lambda: app.enqueue_many([fn.prepare(*args, **kwargs)])]
    for enqueue in enqueues:
        if fits:
            enqueue()
        else:
            with pytest.raises(JobArgumentsError, match=f"arguments do not fit job registry.{func.__name__}") as caught:
                enqueue()
            assert isinstance(caught.value, TypeError)
    assert rows(app) == (3 if fits else 0)


def test_one_bad_request_refuses_the_whole_batch(app: App) -> None:
    fn = app.job(name="registry.plain")(plain)
    good = [fn.prepare(i) for i in range(50)]
    for bad in (fn.prepare(1, 2, 3), minijobs.EnqueueRequest(fn, (), {}, fn.spec), fn.prepare(1, z=2)):
        with pytest.raises(JobArgumentsError):
            app.enqueue_many([*good, bad, *good])
    assert rows(app) == 0


def test_a_call_that_fits_is_what_the_job_runs_with(app: App) -> None:
    fn = app.job(name="registry.plain")(plain)
    ref = fn.enqueue(2, y=3)
    app.drain()
    assert ref.get().result == 5


@pytest.mark.parametrize("how", ["decorator", "options", "many"])
def test_an_undeclared_queue_is_refused(app: App, how: str) -> None:
    if how == "decorator":
        fn = app.job(name="registry.typo", queue="emial")(plain)
        call = lambda: fn.enqueue(1)  # noqa: E731
    else:
        fn = app.job(name="registry.plain")(plain)
        bound = fn.options(queue="emial")
        call = (lambda: bound.enqueue(1)) if how == "options" else (lambda: app.enqueue_many([bound.prepare(1)]))
    with pytest.raises(UnknownQueueError, match="queue 'emial' is not declared on this App") as caught:
        call()
    assert isinstance(caught.value, LookupError)
    assert "remote_queues=['emial']" in str(caught.value)
    assert rows(app) == 0


def test_remote_queues_are_accepted_by_enqueue_and_never_served(tmp_path: Path) -> None:
    producer = App(tmp_path / "jobs.sqlite3", plugins=[], remote_queues=["mail"])
    send = producer.job(name="registry.send", queue="mail")(plain)
    ref = send.enqueue(1)
    assert producer.drain() == 0  # this process does not serve "mail"
    assert ref.get().state is minijobs.JobState.PENDING
    consumer = App(tmp_path / "jobs.sqlite3", plugins=[], queues=[Queue("mail")])
    consumer.job(name="registry.send", queue="mail")(plain)
    assert consumer.drain() == 1
    assert ref.get().result == 1
    producer.close()
    consumer.close()


def test_remote_queues_are_checked(tmp_path: Path) -> None:
    with pytest.raises(minijobs.InvalidNameError):
        App(tmp_path / "x.sqlite3", remote_queues=["bad name"])
    with pytest.raises(ConfigurationError, match="list of queue names"):
        App(tmp_path / "x.sqlite3", remote_queues="mail")


def test_reconfigured_queues_are_accepted(app: App) -> None:
    fn = app.job(name="registry.plain", queue="late")(plain)
    with pytest.raises(UnknownQueueError):
        fn.enqueue(1)
    app.reconfigure(queues=[*app.queues, Queue("late")])
    fn.enqueue(1)
    assert "late" in app.enqueue_queues


def _factory(n: int) -> Callable[[], int]:
    def job() -> int:
        return n

    return job


def test_a_second_function_under_one_name_is_refused(app: App) -> None:
    app.job(name="registry.same")(plain)
    with pytest.raises(minijobs.InvalidNameError):
        app.job(name="bad name")(plain)
    with pytest.raises(ConfigurationError, match="a different function is already registered as 'registry.same'"):
        app.job(name="registry.same")(keyword_only)
    # Closures from one factory share their code, not what they run.
    app.job(name="registry.closure")(_factory(1))
    with pytest.raises(ConfigurationError, match="registry.closure"):
        app.job(name="registry.closure")(_factory(2))
    assert app.registry["registry.same"].func is plain
    assert app.registry["registry.closure"]() == 1


def test_the_same_definition_again_is_accepted(app: App) -> None:
    source = "def again(x):\n    return x * 2\n"
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    exec(compile(source, "cell", "exec"), first)  # a notebook cell run twice
    exec(compile(source, "cell", "exec"), second)
    app.job(name="registry.again")(first["again"])
    app.job(name="registry.again")(second["again"])
    assert app.registry["registry.again"].func is second["again"]
    shared = _factory(7)
    app.job(name="registry.shared")(shared)
    app.job(name="registry.shared")(shared)


def test_per_enqueue_options_override_the_decorator(app: App) -> None:
    fn = app.job(name="registry.plain", priority=1, max_attempts=1)(plain)
    bound = fn.options(priority=7, queue="mail", max_attempts=4, timeout_s=2, meta={"who": "me"})
    refs = [bound.enqueue(1), *app.enqueue_many([bound.prepare(2)]), asyncio.run(bound.enqueue_async(3))]
    jobs = [ref.get() for ref in refs]
    options = [(j.priority, j.queue, j.max_attempts, j.timeout_s, j.meta) for j in jobs]
    assert options == [(7, "mail", 4, 2, {"who": "me"})] * 3
    assert [j.args for j in jobs] == [(1,), (2,), (3,)]
    plain_job = asyncio.run(fn.enqueue_async(4)).get()  # the decorator's settings are untouched
    assert (plain_job.priority, plain_job.queue, plain_job.max_attempts, plain_job.timeout_s) == (1, "default", 1, None)


def test_the_registry_types_are_the_ones_the_app_module_and_the_package_name() -> None:
    import minijobs.app
    import minijobs.registry

    for name in ("BoundJob", "EnqueueRequest", "JobFunction", "JobRef", "JobSpec"):
        assert getattr(minijobs.app, name) is getattr(minijobs.registry, name)
    for name in ("BoundJob", "EnqueueRequest", "JobFunction", "JobRef"):
        assert getattr(minijobs, name) is getattr(minijobs.registry, name)
