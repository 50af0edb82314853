"""minijobs.testing: FakeClock with real workers, drain semantics, enqueued/assert_enqueued, eager mode."""

from __future__ import annotations

import asyncio
import unittest
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import minijobs
from minijobs import JobFailedError, JobState, Queue
from minijobs.errors import ConfigurationError, PayloadTypeError
from minijobs.testing import FakeClock, assert_enqueued, assert_not_enqueued, eager, enqueued

START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture
def app(tmp_path: Path, clock: FakeClock):
    app = minijobs.App(tmp_path / "jobs.sqlite3", clock=clock, queues=[Queue("default"), Queue("mail")])
    yield app
    app.close()


def register(app: minijobs.App):
    calls: list[tuple] = []

    @app.job(name="tests.add")
    def add(a, b):
        calls.append((a, b))
        return a + b

    @app.job(name="tests.fail", max_attempts=2, retry=minijobs.Backoff(base_s=30, jitter=0))
    def fail(message):
        raise RuntimeError(message)

    @app.job(name="tests.fan_out")
    async def fan_out(n):
        for i in range(n):
            await add.enqueue_async(i, 100)
        return n

    @app.job(name="tests.send", queue="mail")
    def send(to, *, subject="hi", tags=None):
        return {"to": to, "subject": subject, "tags": tags}

    return add, fail, fan_out, send, calls


# -- FakeClock -----------------------------------------------------------------


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(start=START)
    assert clock.now() == START.timestamp()
    assert clock.advance(1.5) == START.timestamp() + 1.5
    clock.set(START + timedelta(hours=1))
    assert clock.now() == START.timestamp() + 3600
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(START)  # backwards
    with pytest.raises(ValueError):
        FakeClock(start=datetime(2030, 1, 1))  # naive


def test_fake_clock_listeners_are_called_and_removable() -> None:
    clock = FakeClock(start=START)
    seen: list[float] = []
    def listener() -> None:
        seen.append(clock.now())

    clock.add_listener(listener)
    clock.advance(1)
    clock.remove_listener(listener)
    clock.advance(1)
    assert seen == [START.timestamp() + 1]


def test_advancing_the_clock_wakes_a_running_worker(app: minijobs.App, clock: FakeClock) -> None:
    add, *_ = register(app)
    with app.running():
        ref = add.options(delay_s=3600).enqueue(1, 2)
        with pytest.raises(minijobs.WaitTimeoutError):
            ref.wait(timeout_s=0.2)  # not due: an hour away on the fake clock
        clock.advance(3600)
        assert ref.wait(timeout_s=10).result == 3


# -- drain ---------------------------------------------------------------------


def test_drain_runs_only_due_jobs_and_returns_the_count(app: minijobs.App, clock: FakeClock) -> None:
    add, *_ = register(app)
    now_refs = [add.enqueue(i, i) for i in range(3)]
    later = add.options(delay_s=60).enqueue(10, 10)
    assert app.drain() == 3
    assert [r.get().result for r in now_refs] == [0, 2, 4]
    assert later.get().state is JobState.PENDING
    assert app.drain() == 0
    clock.advance(60)
    assert app.drain() == 1
    assert later.get().result == 20


def test_drain_runs_retries_once_the_clock_reaches_them(app: minijobs.App, clock: FakeClock) -> None:
    _, fail, *_ = register(app)
    ref = fail.enqueue("boom")
    assert app.drain() == 1
    job = ref.get()
    assert job.state is JobState.RETRYING and job.attempts == 1
    assert job.scheduled_at == datetime.fromtimestamp(clock.now() + 30, UTC)
    clock.advance(29)
    assert app.drain() == 0
    clock.advance(1)
    with pytest.raises(JobFailedError) as info:
        app.drain(raise_on_failure=True)
    assert info.value.job_id == ref.id
    job = ref.get()
    assert job.state is JobState.FAILED
    assert [e.message for e in job.errors] == ["boom", "boom"]


def test_drain_runs_jobs_enqueued_by_jobs(app: minijobs.App) -> None:
    add, _, fan_out, *_ = register(app)
    fan_out.enqueue(3)
    assert app.drain() == 4
    assert sorted(j.args for j in enqueued(app, add, state="succeeded")) == [(0, 100), (1, 100), (2, 100)]


def test_advance_then_drain_fires_due_cron_slots(tmp_path: Path) -> None:
    from minijobs.plugins import Cron, CronSchedule, Leadership

    clock = FakeClock(start=START + timedelta(seconds=30))
    cron = Cron()
    app = minijobs.App(tmp_path / "cron.sqlite3", clock=clock, plugins=[Leadership(), cron])
    try:

        @app.job(name="tests.tick")
        def tick(n: int) -> int:
            return n

        cron.configure({"schedules": [CronSchedule("every-minute", "* * * * *", job=tick, args=[7])]})
        assert app.drain() == 0  # nothing due yet: the next slot is 00:01
        clock.advance(30)
        assert app.drain() == 1
        (job,) = enqueued(app, tick)
        assert (job.state, job.result, job.meta["cron"]) == (JobState.SUCCEEDED, 7, "every-minute")
        clock.advance(59)
        assert app.drain() == 0
        clock.advance(1)
        assert app.drain() == 1
        assert len(enqueued(app, tick)) == 2
    finally:
        app.close()


# -- enqueued / assert_enqueued --------------------------------------------------


def test_enqueued_filters_and_orders_oldest_first(app: minijobs.App) -> None:
    add, _, _, send, _ = register(app)
    a1 = add.enqueue(1, 1)
    s1 = send.enqueue("ann@example.com")
    a2 = add.enqueue(2, 2)
    assert [j.id for j in enqueued(app)] == [a1.id, s1.id, a2.id]
    assert [j.id for j in enqueued(app, add)] == [a1.id, a2.id]
    assert [j.id for j in enqueued(app, name="tests.send")] == [s1.id]
    assert [j.id for j in enqueued(app, queue="mail")] == [s1.id]
    app.drain(queues=["default"])
    assert [j.id for j in enqueued(app, state="pending")] == [s1.id]
    assert [j.id for j in enqueued(app, add, state=["succeeded", "failed"])] == [a1.id, a2.id]
    with pytest.raises(TypeError):
        enqueued(app, add, name="tests.add")
    with pytest.raises(TypeError):
        enqueued(app, lambda: None)  # type: ignore[arg-type]


def test_enqueued_pages_through_many_jobs(app: minijobs.App) -> None:
    add, *_ = register(app)
    app.enqueue_many([add.prepare(i, 0) for i in range(1203)])
    jobs = enqueued(app, add)
    assert len(jobs) == 1203
    assert [j.args[0] for j in jobs] == list(range(1203))


def test_assert_enqueued_matches_stored_arguments(app: minijobs.App) -> None:
    _, _, _, send, _ = register(app)
    ref = send.enqueue("bob@example.com", subject="welcome", tags=["a", {"b": 1}])
    job = assert_enqueued(app, send, "bob@example.com", subject="welcome", tags=["a", {"b": 1}])
    assert job.id == ref.id
    assert assert_enqueued(app, "tests.send", "bob@example.com", subject="welcome", tags=["a", {"b": 1}]).id == ref.id
    with pytest.raises(AssertionError) as info:
        assert_enqueued(app, send, "bob@example.com", subject="bye", tags=["a", {"b": 1}])
    message = str(info.value)
    assert "tests.send('bob@example.com', subject='bye'" in message
    assert f"job {ref.id} [pending]: tests.send('bob@example.com', subject='welcome'" in message


def test_assert_enqueued_and_not_enqueued_when_nothing_was(app: minijobs.App) -> None:
    add, _, _, send, _ = register(app)
    with pytest.raises(AssertionError, match="no tests.add job was enqueued"):
        assert_enqueued(app, add, 1, 2)
    assert_not_enqueued(app, add)
    send.enqueue("x@example.com")
    assert_not_enqueued(app, add)
    with pytest.raises(AssertionError, match="expected no tests.send job"):
        assert_not_enqueued(app, send)


# -- eager ---------------------------------------------------------------------


def test_eager_runs_the_job_before_enqueue_returns(app: minijobs.App) -> None:
    add, _, _, _, calls = register(app)
    with eager(app):
        ref = add.enqueue(2, 3)
        assert calls == [(2, 3)]
        job = ref.get()
        assert job.state is JobState.SUCCEEDED and job.result == 5 and job.attempts == 1
    ref = add.enqueue(4, 4)  # outside the block: back to normal
    assert ref.get().state is JobState.PENDING
    assert calls == [(2, 3)]


def test_eager_keeps_the_json_round_trip_of_production(app: minijobs.App) -> None:
    _, _, _, send, _ = register(app)
    with eager(app):
        with pytest.raises(PayloadTypeError):
            send.enqueue("x@example.com", tags=("a", "b"))  # a tuple would come back as a list
        assert enqueued(app) == []  # refused before anything was written
        ref = send.enqueue("x@example.com", tags=["a", "b"])
    assert ref.get().result == {"to": "x@example.com", "subject": "hi", "tags": ["a", "b"]}


def test_eager_raises_on_failure_and_keeps_the_failed_row(app: minijobs.App) -> None:
    _, fail, *_ = register(app)
    with eager(app), pytest.raises(JobFailedError, match="bad input") as info:
        fail.options(max_attempts=1).enqueue("bad input")
    failed = app.get(info.value.job_id)
    assert failed.state is JobState.FAILED
    assert failed.errors[0].type == "RuntimeError"


def test_eager_without_raise_leaves_failures_in_the_database(app: minijobs.App, clock: FakeClock) -> None:
    _, fail, *_ = register(app)
    with eager(app, raise_on_failure=False):
        ref = fail.enqueue("flaky")
        assert ref.get().state is JobState.RETRYING  # the retry is 30 s away on the fake clock
        clock.advance(30)
        assert app.drain() == 1
    assert ref.get().state is JobState.FAILED


def test_eager_runs_children_in_the_same_drain_and_batches(app: minijobs.App) -> None:
    add, _, fan_out, _, calls = register(app)
    with eager(app):
        ref = fan_out.enqueue(2)
        assert ref.get().state is JobState.SUCCEEDED
        assert sorted(calls) == [(0, 100), (1, 100)]
        refs = app.enqueue_many([add.prepare(7, 1), add.prepare(8, 1)])
    assert [r.get().result for r in refs] == [8, 9]


def test_eager_leaves_jobs_that_are_not_due(app: minijobs.App, clock: FakeClock) -> None:
    add, *_ = register(app)
    with eager(app):
        ref = add.options(delay_s=10).enqueue(1, 1)
        assert ref.get().state is JobState.PENDING
        clock.advance(10)
        app.drain()
    assert ref.get().result == 2


def test_eager_from_async_code(app: minijobs.App) -> None:
    add, *_ = register(app)

    async def main() -> int:
        ref = await add.enqueue_async(20, 22)
        return ref.get().result

    with eager(app):
        assert asyncio.run(main()) == 42


def test_eager_refuses_jobs_of_queues_the_app_does_not_serve(tmp_path: Path) -> None:
    # A remote queue is one this App may enqueue to but never serves: eager mode cannot run its jobs.
    app = minijobs.App(tmp_path / "q.sqlite3", queues=[Queue("default")], remote_queues=["elsewhere"])
    try:

        @app.job(queue="elsewhere")
        def lost() -> None: ...

        with eager(app), pytest.raises(ConfigurationError, match="eager mode: queue 'elsewhere'"):
            lost.enqueue()
        assert app.jobs() == []  # refused before anything was written
    finally:
        app.close()


def test_eager_blocks_nest_and_restore(app: minijobs.App) -> None:
    add, _, _, _, calls = register(app)
    with eager(app):
        with eager(app, raise_on_failure=False):
            add.enqueue(1, 0)
        add.enqueue(2, 0)
    add.enqueue(3, 0)
    assert calls == [(1, 0), (2, 0)]
    assert app._eager_hook is None


# -- unittest ------------------------------------------------------------------


class UnittestStyle(unittest.TestCase):
    """The helpers need nothing from pytest."""

    def setUp(self) -> None:
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.clock = FakeClock()
        self.app = minijobs.App(Path(self.dir.name) / "u.sqlite3", clock=self.clock)

        @self.app.job(name="tests.double")
        def double(x: int) -> int:
            return 2 * x

        self.double = double

    def tearDown(self) -> None:
        self.app.close()
        self.dir.cleanup()

    def test_enqueue_then_drain(self) -> None:
        self.double.enqueue(21)
        assert_enqueued(self.app, self.double, 21)
        self.assertEqual(self.app.drain(), 1)
        (job,) = enqueued(self.app, self.double, state=JobState.SUCCEEDED)
        self.assertEqual(job.result, 42)

    def test_eager(self) -> None:
        with eager(self.app):
            self.assertEqual(self.double.enqueue(5).get().result, 10)
