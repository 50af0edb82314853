"""The plugins' job hooks (:mod:`minijobs.hooks`): ``def`` or ``async def``, what they change is what is stored.

Every test runs real jobs on a SQLite file (``app.drain()`` or a running
worker) and reads the job back with ``app.get``: the stored row, not what a
hook saw, is the contract.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, ClassVar

import executor_jobs
import pytest

import minijobs
from minijobs import Job, JobState, Plugin, PluginTrigger, Queue, current_job


class Stamp(Plugin):
    """Starting hook: adds ``kwargs["seen"]`` (the plugin chain so far) and a meta stamp."""

    identifier: ClassVar[str] = "tests.stamp"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def get_identifier(self) -> str:
        return f"tests.stamp.{self.name}"

    def on_job_starting(self, *, job: Job, worker: Any) -> Job:
        return job.replace(kwargs={**job.kwargs, "seen": [*job.kwargs.get("seen", []), self.name]},
                           meta={**job.meta, self.name: True})


class AsyncStamp(Stamp):
    async def on_job_starting(self, *, job: Job, worker: Any) -> Job:  # type: ignore[override]
        await asyncio.sleep(0)  # really suspends: the worker must await it, not call it
        return super().on_job_starting(job=job, worker=worker)


def echo(seen: list[str] | None = None) -> dict[str, Any]:
    return {"seen": seen, "kwargs": current_job().job.kwargs}


@pytest.mark.parametrize("kinds", [("sync", "sync"), ("async", "async"), ("sync", "async"), ("async", "sync")])
def test_starting_hooks_def_or_async_run_in_order_and_the_arguments_they_give_are_stored(
    db_path: Path, kinds: tuple[str, str]
) -> None:
    plugins = [(Stamp if kind == "sync" else AsyncStamp)(name) for kind, name in zip(kinds, ("a", "b"), strict=True)]
    app = minijobs.App(db_path, plugins=plugins)
    fn = app.job(name="echo")(echo)
    ref = fn.enqueue()
    assert app.drain() == 1
    job = app.get(ref.id)
    assert (job.state, job.result["seen"]) == (JobState.SUCCEEDED, ["a", "b"])
    assert job.kwargs == {"seen": ["a", "b"]}  # stored: what the attempt ran with
    assert job.meta == {"a": True, "b": True}
    app.close()


def test_arguments_a_starting_hook_cannot_store_leave_the_job_as_claimed(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Unstorable(Plugin):
        def get_identifier(self) -> str:
            return "tests.unstorable"

        def on_job_starting(self, *, job: Job, worker: Any) -> Job:
            return job.replace(kwargs={"seen": {1, 2}})  # a set: not JSON

    app = minijobs.App(db_path, plugins=[Unstorable()])
    ref = app.job(name="echo")(echo).enqueue(seen=["original"])
    with caplog.at_level(logging.ERROR):
        assert app.drain() == 1
    job = app.get(ref.id)
    assert (job.state, job.kwargs, job.result["seen"]) == (JobState.SUCCEEDED, {"seen": ["original"]}, ["original"])
    assert any("tests.unstorable: on_job_starting gave job" in r.getMessage() and "hook ignored" in r.getMessage()
               for r in caplog.records)
    app.close()


class Verdict(Plugin):
    """Completion hook that turns the proposed outcome into ``self.state`` (with ``self.result``)."""

    def __init__(self, state: JobState, result: Any = None) -> None:
        super().__init__()
        self.state, self.result = state, result
        self.updated: list[tuple[JobState, Any]] = []

    def get_identifier(self) -> str:
        return "tests.verdict"

    def on_job_completed(self, *, job: Job, worker: Any, exc: BaseException | None, result: Any) -> Job:
        return job.replace(state=self.state, result=self.result if self.result is not None else job.result)

    def on_job_updated(self, *, job: Job, worker: Any) -> None:
        self.updated.append((job.state, job.result))


class AsyncVerdict(Verdict):
    """The same, with real ``async def`` hooks (detected as such, awaited by the worker)."""

    async def on_job_completed(self, *, job: Job, worker: Any, exc: BaseException | None,  # type: ignore[override]
                               result: Any) -> Job:
        await asyncio.sleep(0)
        return job.replace(state=self.state, result=self.result if self.result is not None else job.result)

    async def on_job_updated(self, *, job: Job, worker: Any) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.updated.append((job.state, job.result))


@pytest.mark.parametrize("plugin_class", [Verdict, AsyncVerdict])
def test_a_success_a_hook_turns_into_a_failure_keeps_no_result_and_records_why(
    db_path: Path, plugin_class: type[Verdict]
) -> None:
    verdict = plugin_class(JobState.FAILED)
    app = minijobs.App(db_path, plugins=[verdict])
    ref = app.job(name="ok", max_attempts=3)(lambda: {"value": 1}).enqueue()
    assert app.drain() == 1
    job = app.get(ref.id)
    assert (job.state, job.result, job.attempts) == (JobState.FAILED, None, 1)
    assert job.completed_at is not None
    (error,) = job.errors
    assert (error.attempt, error.type) == (1, "minijobs.PluginOutcome")
    assert "on_job_completed set the attempt's outcome to failed" in error.message
    assert verdict.updated == [(JobState.FAILED, None)]  # told of what was written, after the write
    app.close()


@pytest.mark.parametrize("plugin_class", [Verdict, AsyncVerdict])
def test_a_failure_a_hook_turns_into_a_success_stores_the_hooks_result(
    db_path: Path, plugin_class: type[Verdict]
) -> None:
    app = minijobs.App(db_path, plugins=[plugin_class(JobState.SUCCEEDED, {"replaced": True})])

    @app.job(name="broken", max_attempts=1)
    def broken() -> None:
        raise ValueError("no")

    ref = broken.enqueue()
    assert app.drain() == 1
    job = app.get(ref.id)
    assert (job.state, job.result) == (JobState.SUCCEEDED, {"replaced": True})
    # The attempt's own error stays in the history: it happened.
    assert [(e.type, e.message) for e in job.errors] == [("ValueError", "no")]
    app.close()


class Quota(Plugin):
    """Trigger hook: decides ``quota`` triggers (succeeded with the trigger's data), leaves others alone."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, str, dict[str, Any]]] = []

    def get_identifier(self) -> str:
        return "tests.quota"

    def decide(self, job: Job, reason: str, data: dict[str, Any]) -> Job | None:
        self.seen.append((job.id, reason, data))
        if reason != "quota":
            return None
        return job.replace(state=JobState.SUCCEEDED, result={"deferred": data})

    def on_job_trigger(self, *, job: Job, reason: str, data: dict[str, Any], worker: Any) -> Job | None:
        return self.decide(job, reason, data)


class AsyncQuota(Quota):
    async def on_job_trigger(self, *, job: Job, reason: str, data: dict[str, Any],  # type: ignore[override]
                             worker: Any) -> Job | None:
        await asyncio.sleep(0)
        return self.decide(job, reason, data)


@pytest.mark.parametrize("plugin_class", [Quota, AsyncQuota])
def test_a_trigger_a_plugin_decides_gets_that_outcome(db_path: Path, plugin_class: type[Quota]) -> None:
    quota = plugin_class()
    app = minijobs.App(db_path, plugins=[quota])

    @app.job(name="raises")
    def raises(n: int) -> None:
        raise PluginTrigger("quota", n=n)

    @app.job(name="calls")
    def calls(n: int) -> None:
        current_job().plugin_trigger("quota", n=n)

    refs = [raises.enqueue(1), calls.enqueue(2)]
    assert app.drain() == 2
    assert [(app.get(r.id).state, app.get(r.id).result) for r in refs] == [
        (JobState.SUCCEEDED, {"deferred": {"n": 1}}), (JobState.SUCCEEDED, {"deferred": {"n": 2}})]
    assert [app.get(r.id).errors for r in refs] == [(), ()]
    assert sorted(quota.seen) == [(refs[0].id, "quota", {"n": 1}), (refs[1].id, "quota", {"n": 2})]
    app.close()


def test_a_trigger_no_plugin_decides_fails_the_attempt_like_any_error(db_path: Path) -> None:
    quota = Quota()
    app = minijobs.App(db_path, plugins=[quota])

    @app.job(name="other", max_attempts=2)
    def other() -> None:
        raise PluginTrigger("unknown-reason", detail="x")

    ref = other.enqueue()
    assert app.drain() == 1  # the retry is scheduled later: left for a later drain
    job = app.get(ref.id)
    assert job.state is JobState.RETRYING  # retried like any error while attempts remain
    assert [(e.type, e.message) for e in job.errors] == [("minijobs.PluginTrigger", "unknown-reason")]
    assert quota.seen == [(ref.id, "unknown-reason", {"detail": "x"})]
    app.close()


def test_a_trigger_raised_in_a_process_child_reaches_the_plugins_with_its_data(db_path: Path) -> None:
    quota = Quota()
    app = minijobs.App(db_path, queues=[Queue("default", executor=minijobs.ProcessExecutor, concurrency=1)],
                       plugins=[quota])
    fn = app.job(name="trigger_quota")(executor_jobs.trigger_quota)
    ref = fn.enqueue(7)
    assert app.drain() == 1
    job = app.get(ref.id)
    assert (job.state, job.result) == (JobState.SUCCEEDED, {"deferred": {"n": 7}})
    app.close()
