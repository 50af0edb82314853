"""Executors: one behaviour suite run on every executor, then what only threads or processes do."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import executor_jobs as jobs
import pytest

import minijobs
from minijobs import Backoff, JobState, Progress
from minijobs.executors._pool import DaemonThreadPool
from minijobs.testing import FakeClock

NOW = Backoff(base_s=0, jitter=0)  # retries due at once
WAIT_S = 20.0  # generous bound on waits for things that take milliseconds

EXECUTORS: dict[str, type[minijobs.Executor] | None] = {
    "async": minijobs.AsyncExecutor,
    "thread": minijobs.ThreadExecutor,
    "process": minijobs.ProcessExecutor,
    "interpreter": getattr(minijobs, "InterpreterExecutor", None),
}
needs_interpreters = pytest.mark.skipif(
    EXECUTORS["interpreter"] is None, reason="InterpreterExecutor needs Python 3.14+"
)
ALL = ["async", "thread", "process", pytest.param("interpreter", marks=needs_interpreters)]
# Interpreters cannot be cancelled, killed or report progress: they join only the plain outcomes.
STOPPABLE = ["async", "thread", "process"]


class Harness:
    """An app with one queue on the executor under test, plus event-driven waits."""

    def __init__(
        self,
        db_path: Path,
        kind: str,
        concurrency: int = 2,
        plugins: Sequence[minijobs.Plugin] = (),
        clock: FakeClock | None = None,
        **options: Any,
    ) -> None:
        executor = EXECUTORS[kind]
        assert executor is not None
        self.kind = kind
        self.app = minijobs.App(
            db_path,
            queues=[minijobs.Queue("default", executor=executor, concurrency=concurrency, executor_options=options)],
            plugins=list(plugins),
            clock=clock,
        )
        self._lock = threading.Lock()
        self._progress: dict[int, list[Progress]] = {}
        self._changed = threading.Condition(self._lock)
        self.app.events.subscribe("job.progress", self._on_progress)

    def register(self, func: Callable[..., Any], **options: Any) -> minijobs.JobFunction[..., Any]:
        return self.app.job(name=func.__name__, **options)(func)

    def _on_progress(self, event: minijobs.Event) -> None:
        with self._changed:
            self._progress.setdefault(event.data["job_id"], []).append(event.data["progress"])
            self._changed.notify_all()

    def started(self, ref: minijobs.JobRef, *, count: int = 1) -> Progress:
        """Wait for the ``count``-th progress report of ``ref`` (blocking jobs report their pid first)."""
        with self._changed:
            ok = self._changed.wait_for(lambda: len(self._progress.get(ref.id, ())) >= count, WAIT_S)
            assert ok, f"job {ref.id} never reported progress: {ref.get()}"
            return self._progress[ref.id][count - 1]


@pytest.fixture
def harness_factory(db_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(kind: str, **kwargs: Any) -> Harness:
        h = Harness(db_path if not made else db_path.with_name(f"jobs{len(made)}.sqlite3"), kind, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.app.close()
    # Every child process was stopped with its worker.
    assert multiprocessing.active_children() == []


def wait(ref: minijobs.JobRef) -> minijobs.Job:
    return ref.wait(timeout_s=WAIT_S)


# -- the common behaviour, on every executor ---------------------------------------------


@pytest.mark.parametrize("kind", ALL)
def test_success_of_plain_and_async_functions(harness_factory: Callable[..., Harness], kind: str) -> None:
    h = harness_factory(kind)
    add, add_async = h.register(jobs.add), h.register(jobs.add_async)
    with h.app.running():
        plain, coro = add.enqueue(2, 3), add_async.enqueue(4, 5)
        assert (wait(plain).state, wait(plain).result) == (JobState.SUCCEEDED, 5)
        assert (wait(coro).state, wait(coro).result) == (JobState.SUCCEEDED, 9)


@pytest.mark.parametrize("kind", ALL)
def test_failure_is_recorded_with_type_message_and_traceback(
    harness_factory: Callable[..., Harness], kind: str
) -> None:
    h = harness_factory(kind)
    fail = h.register(jobs.fail, max_attempts=1)
    with h.app.running():
        job = wait(fail.enqueue("bad input"))
    assert job.state is JobState.FAILED
    (error,) = job.errors
    assert (error.attempt, error.type, error.message) == (1, "ValueError", "bad input")
    assert 'raise ValueError(message)' in error.traceback  # the frame inside the job, wherever it ran


@pytest.mark.parametrize("kind", ALL)
def test_failed_attempt_is_retried(harness_factory: Callable[..., Harness], kind: str) -> None:
    h = harness_factory(kind)
    flaky = h.register(jobs.flaky, max_attempts=3, retry=NOW)
    with h.app.running():
        job = wait(flaky.enqueue())
    assert (job.state, job.result, job.attempts) == (JobState.SUCCEEDED, 2, 2)
    assert [(e.attempt, e.type) for e in job.errors] == [(1, "RuntimeError")]


@pytest.mark.parametrize("kind", STOPPABLE)
def test_timeout_fails_the_attempt_and_retries_while_attempts_remain(
    harness_factory: Callable[..., Harness], kind: str
) -> None:
    h = harness_factory(kind)
    block = h.register(jobs.block, max_attempts=2, timeout_s=0.2, retry=NOW)
    with h.app.running():
        job = wait(block.enqueue())
    assert (job.state, job.attempts, job.result) == (JobState.FAILED, 2, None)
    assert [(e.attempt, e.type) for e in job.errors] == [(1, "minijobs.JobTimeoutError"), (2, "minijobs.JobTimeoutError")]
    assert "timed out after 0.2 s" in job.errors[0].message


@pytest.mark.parametrize("kind", STOPPABLE)
def test_cancel_stops_a_running_job(harness_factory: Callable[..., Harness], kind: str) -> None:
    h = harness_factory(kind)
    block, add = h.register(jobs.block), h.register(jobs.add)
    with h.app.running():
        ref = block.enqueue()
        h.started(ref)
        h.app.cancel(ref.id)
        job = wait(ref)
        assert job.state is JobState.CANCELLED
        assert wait(add.enqueue(1, 1)).result == 2  # the executor goes on


@pytest.mark.parametrize("kind", STOPPABLE)
def test_progress_reaches_the_app_and_the_last_one_is_stored(
    harness_factory: Callable[..., Harness], kind: str
) -> None:
    h = harness_factory(kind)
    steps = h.register(jobs.progress_steps)
    with h.app.running():
        ref = steps.enqueue()
        job = wait(ref)
    assert (job.state, job.result) == (JobState.SUCCEEDED, "ok")
    assert job.progress == Progress(done=3, total=3, message="done")
    assert [p.message for p in h._progress[ref.id]] == ["one", "two", "done"]


@pytest.mark.parametrize("kind", ALL)
def test_unencodable_result_fails_without_retry(harness_factory: Callable[..., Harness], kind: str) -> None:
    h = harness_factory(kind)
    bad = h.register(jobs.bad_result, max_attempts=3, retry=NOW)
    with h.app.running():
        job = wait(bad.enqueue())
    assert (job.state, job.attempts) == (JobState.FAILED, 1)
    assert job.errors[0].type == "minijobs.PayloadTypeError"


# -- suspects (jobs rescued from a dead worker) run alone, on every executor ---------------


class StartLog(minijobs.Plugin):
    """Notes, as each job starts, which jobs its executor runs already."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[tuple[int, list[int]]] = []

    @classmethod
    def get_identifier(cls) -> str:
        return "tests.start_log"

    def on_job_starting(self, *, job: minijobs.Job, worker: minijobs.Worker) -> minijobs.Job:
        self.starts.append((job.id, sorted(worker.executors[job.queue].running)))
        return job


def make_suspect(app: minijobs.App, clock: FakeClock, ref: minijobs.JobRef) -> None:
    """Have ``ref`` (the first due job of its queue) lost with a dead worker and rescued once."""
    (claimed,) = app.store.claim("default", 1, owner="dead-worker", now=clock.now(), lease_s=10)
    assert claimed.id == ref.id
    clock.advance(11)
    assert app.store.recover_expired(now=clock.now(), max_rescues=3) == ([ref.id], [])


@pytest.mark.parametrize("kind", ALL)
def test_drain_runs_a_suspect_alone(harness_factory: Callable[..., Harness], kind: str) -> None:
    clock = FakeClock()
    log = StartLog()
    h = harness_factory(kind, concurrency=4, plugins=[log], clock=clock)
    add = h.register(jobs.add)
    suspect = add.enqueue(1, 1)
    make_suspect(h.app, clock, suspect)
    behind = [add.enqueue(i, i).id for i in range(5)]
    ahead = add.options(priority=5).enqueue(2, 2)
    assert h.app.drain() == 7
    assert [job_id for job_id, _ in log.starts[:2]] == [ahead.id, suspect.id]
    beside = dict(log.starts)
    assert beside[suspect.id] == []
    assert not any(suspect.id in beside[job_id] for job_id in behind)
    assert (suspect.get().state, suspect.get().rescues) == (JobState.SUCCEEDED, 1)


@pytest.mark.parametrize("kind", STOPPABLE)
def test_a_busy_worker_holds_back_at_a_suspect_then_runs_it_alone(
    harness_factory: Callable[..., Harness], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    log = StartLog()
    h = harness_factory(kind, concurrency=4, plugins=[log], clock=clock)
    add, block = h.register(jobs.add), h.register(jobs.block)
    suspect = add.options(priority=5).enqueue(1, 1)
    h.app.store.claim("default", 1, owner="dead-worker", now=clock.now(), lease_s=10)
    claims = 0
    claim = h.app.store.claim

    def counted(*args: Any, **kwargs: Any) -> list[minijobs.Job]:
        nonlocal claims
        claims += 1
        return claim(*args, **kwargs)

    monkeypatch.setattr(h.app.store, "claim", counted)
    with h.app.running():
        busy = block.enqueue()
        h.started(busy)
        clock.advance(11)  # the dead worker's lease runs out: the suspect is first in line
        assert h.app.store.recover_expired(now=clock.now(), max_rescues=3) == ([suspect.id], [])
        behind = [add.enqueue(i, i) for i in range(3)]
        ahead = block.options(priority=10).enqueue()
        h.started(ahead)  # a claim ran with ``behind`` due and free slots: it stopped at the suspect
        # Held back, the worker waits for a completion rather than looking again every
        # millisecond: only real time can show that nothing happens.
        before = claims
        time.sleep(0.3)
        assert claims - before < 10
        busy.cancel()
        ahead.cancel()
        assert all(wait(ref).state is JobState.SUCCEEDED for ref in [suspect, *behind])
    assert [job_id for job_id, _ in log.starts[:3]] == [busy.id, ahead.id, suspect.id]
    beside = dict(log.starts)
    assert beside[suspect.id] == []
    assert not any(suspect.id in beside[ref.id] for ref in behind)


# -- thread executor -------------------------------------------------------------------


def test_thread_timeout_is_recorded_at_the_deadline_and_the_late_result_discarded(
    harness_factory: Callable[..., Harness],
) -> None:
    h = harness_factory("thread", concurrency=1)
    gate = jobs.GATES["late"] = threading.Event()
    stuck = h.register(jobs.wait_gate, timeout_s=0.2)
    add = h.register(jobs.add)
    with h.app.running() as worker:
        ref = stuck.enqueue("late")
        job = wait(ref)  # recorded while the thread is still inside the job
        assert (job.state, job.result) == (JobState.FAILED, None)
        assert job.errors[0].type == "minijobs.JobTimeoutError"
        executor = worker.executors["default"]
        assert isinstance(executor, minijobs.ThreadExecutor)
        assert executor.abandoned_calls == 1
        assert executor.free_slots == 0  # the busy thread keeps its slot
        follower = add.enqueue(1, 2)
        gate.set()  # the job returns "late": discarded, and its slot frees
        assert wait(follower).result == 3
        assert executor.abandoned_calls == 0
    job = h.app.get(ref.id)
    assert (job.state, job.result, len(job.errors)) == (JobState.FAILED, None, 1)


def test_thread_pool_never_grows_past_concurrency_with_stuck_jobs(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory("thread", concurrency=2)
    gate = jobs.GATES["pool"] = threading.Event()
    stuck = h.register(jobs.wait_gate, timeout_s=0.1)
    add = h.register(jobs.add)
    with h.app.running() as worker:
        refs = [stuck.enqueue("pool") for _ in range(4)]
        # Two time out and hold both threads; the other two wait for a free slot.
        for ref in refs[:2]:
            assert wait(ref).state is JobState.FAILED
        names = [t.name for t in threading.enumerate() if t.name.startswith("minijobs-default")]
        assert len(names) == 2
        assert worker.executors["default"].free_slots == 0
        assert h.app.get(refs[2].id).state is JobState.PENDING
        gate.set()
        for ref in refs[2:]:
            assert wait(ref).state is JobState.SUCCEEDED  # the gate is open: they return in time
        assert wait(add.enqueue(2, 2)).result == 4
        assert len([t for t in threading.enumerate() if t.name.startswith("minijobs-default")]) <= 2


def test_thread_cancel_is_cooperative_through_check_cancelled(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory("thread")
    raised = jobs.CANCELLED_TASKS["loop"] = threading.Event()
    loop_job = h.register(jobs.check_cancelled_loop)
    with h.app.running():
        ref = loop_job.enqueue("loop")
        h.started(ref)
        assert not raised.is_set()
        h.app.cancel(ref.id)
        assert wait(ref).state is JobState.CANCELLED
        assert raised.wait(WAIT_S)  # the thread saw the flag and stopped itself


def test_thread_timeout_cancels_the_task_of_an_async_job(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory("thread")
    cancelled = jobs.CANCELLED_TASKS["sleepy"] = threading.Event()
    sleepy = h.register(jobs.sleep_async, timeout_s=0.1)
    with h.app.running():
        job = wait(sleepy.enqueue("sleepy"))
        assert job.errors[0].type == "minijobs.JobTimeoutError"
        assert cancelled.wait(WAIT_S)  # the coroutine got CancelledError at its await


def test_async_job_owns_its_task_from_its_first_step(harness_factory: Callable[..., Harness]) -> None:
    """asyncio.timeout and TaskGroup bind to the current task: a job's first step must run in its own.

    On Python 3.12+ the executor starts tasks eagerly (the first step runs inside ``push``); a
    timeout entered there must still cancel only this job, and the worker's loop must survive it.
    """
    h = harness_factory("async", concurrency=4)
    seen: dict[str, Any] = {}

    async def bounded() -> str:
        task = asyncio.current_task()
        seen["task"] = task
        async with asyncio.TaskGroup() as group:
            group.create_task(asyncio.sleep(0))
        async with asyncio.timeout(0.05):
            await asyncio.Event().wait()  # never set: the timeout must end it
        return "unreachable"

    async def quick(n: int) -> int:
        return n * 2

    bounded_fn = h.register(bounded)
    quick_fn = h.register(quick)
    with h.app.running():
        failed = wait(bounded_fn.enqueue())
        results = [wait(quick_fn.enqueue(n)).result for n in range(5)]
    assert failed.state is JobState.FAILED
    assert failed.errors[0].type == "TimeoutError"
    assert seen["task"] is not None
    assert results == [0, 2, 4, 6, 8]


def test_thread_executor_defaults_and_exports() -> None:
    assert minijobs.ThreadExecutor.get_default_concurrency() == 32
    assert issubclass(minijobs.ThreadExecutor, minijobs.ConcurrentExecutor)
    for name in ("ThreadExecutor", "ProcessExecutor", "ConcurrentExecutor", "ProcessDiedError", "RemoteJobError"):
        assert name in minijobs.__all__


# -- jobs that ignore cancellation at exit (thread pools of the thread and async executors) ----


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["thread", "async"])
def test_job_ignoring_cancel_does_not_keep_the_process_alive_after_stop(
    tmp_path: Path, subprocess_env: dict[str, str], kind: str
) -> None:
    db = tmp_path / "jobs.sqlite3"
    script = tmp_path / "script.py"
    executor = EXECUTORS[kind]
    assert executor is not None
    script.write_text(textwrap.dedent(f"""
        import json, threading
        import minijobs

        app = minijobs.App({str(db)!r}, plugins=[], grace_s=0.1, queues=[
            minijobs.Queue("default", executor=minijobs.{executor.__name__}, concurrency=1)])
        started = threading.Event()

        @app.job(name="spin")
        def spin():
            started.set()
            never = threading.Event()
            while True:  # never looks at current_job().cancelled
                never.wait(0.01)

        if __name__ == "__main__":
            ref = spin.enqueue()
            with app.running():
                assert started.wait(20)
            # The worker stopped and released the job; its thread is still inside spin().
            stuck = [t.name for t in threading.enumerate() if t.name.startswith("minijobs-default")]
            print(json.dumps({{"id": ref.id, "stuck": stuck}}))
    """))
    try:
        out = subprocess.run([sys.executable, str(script)], env=subprocess_env, capture_output=True, text=True,
                             timeout=30, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the process did not exit after main returned (killed after 30 s); stdout: {exc.stdout!r}")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["stuck"], "the job's thread should still have been running when main returned"
    assert "still running" in out.stderr  # the worker said it left a call running (logging's last resort)
    app = minijobs.App(db, plugins=[])
    try:
        job = app.get(report["id"])
        assert job.state in (JobState.PENDING, JobState.RETRYING), job  # released, not lost
        app.job(name="spin")(lambda: "ran")
        assert app.drain() == 1  # another worker runs it
        assert app.get(report["id"]).result == "ran"
    finally:
        app.close()


def test_daemon_thread_pool_bounds_threads_and_reports_results_and_errors() -> None:
    pool = DaemonThreadPool(2, thread_name_prefix="test-pool")
    gate = threading.Event()
    entered = threading.Semaphore(0)

    def call(value: object) -> object:
        entered.release()
        gate.wait(WAIT_S)
        if isinstance(value, BaseException):
            raise value
        return value

    futures = [pool.submit(call, v) for v in (1, ValueError("bad"), SystemExit(3), 4)]
    assert entered.acquire(timeout=WAIT_S) and entered.acquire(timeout=WAIT_S)
    assert not entered.acquire(timeout=0.05)  # two threads, both busy: the rest waits
    threads = [t for t in threading.enumerate() if t.name.startswith("test-pool_")]
    assert len(threads) == 2 and all(t.daemon for t in threads)
    gate.set()
    assert futures[0].result(WAIT_S) == 1 and futures[3].result(WAIT_S) == 4
    assert isinstance(futures[1].exception(WAIT_S), ValueError)
    assert isinstance(futures[2].exception(WAIT_S), SystemExit)  # BaseException reaches the future too
    assert pool.submit(call, 5).result(WAIT_S) == 5  # an idle thread takes it: no third thread
    assert len([t for t in threading.enumerate() if t.name.startswith("test-pool_")]) == 2
    pool.shutdown(wait=True)
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(RuntimeError):
        pool.submit(call, 6)


def test_daemon_thread_pool_shutdown_cancels_waiting_calls_and_lets_running_ones_finish() -> None:
    pool = DaemonThreadPool(1, thread_name_prefix="test-pool-stop")
    gate, started = threading.Event(), threading.Event()

    def block() -> bool:
        started.set()
        return gate.wait(WAIT_S)

    running = pool.submit(block)
    assert started.wait(WAIT_S)
    waiting = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    assert waiting.cancelled()
    assert not running.done()
    gate.set()
    assert running.result(WAIT_S) is True


# -- process executor ------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_process_child_killed_mid_job_retries_that_job_only(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory("process", concurrency=2)
    victim_fn = h.register(jobs.block_first_attempt, max_attempts=2, retry=NOW)
    bystander_fn = h.register(jobs.block)
    add = h.register(jobs.add)
    with h.app.running() as worker:
        victim, bystander = victim_fn.enqueue(), bystander_fn.enqueue()
        victim_pid = int(h.started(victim).done)
        bystander_pid = int(h.started(bystander).done)
        assert victim_pid != bystander_pid and victim_pid != os.getpid()
        os.kill(victim_pid, signal.SIGKILL)
        job = wait(victim)
        assert job.state is JobState.SUCCEEDED and job.attempts == 2
        assert job.result not in (victim_pid, bystander_pid)  # attempt 2 ran in a new child
        assert job.errors[0].type == "minijobs.ProcessDiedError"
        assert "SIGKILL" in job.errors[0].message
        # The other child and its job were untouched.
        assert h.app.get(bystander.id).state is JobState.RUNNING and _alive(bystander_pid)
        assert wait(add.enqueue(20, 22)).result == 42
        h.app.cancel(bystander.id)
        assert wait(bystander).state is JobState.CANCELLED
        executor = worker.executors["default"]
        assert isinstance(executor, minijobs.ProcessExecutor)
        assert executor.started_children >= 3  # the pool was rebuilt
        assert len(executor.children) <= 2


def test_process_child_that_exits_fails_its_job_and_the_pool_goes_on(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory("process", concurrency=1)
    crash = h.register(jobs.exit_first_attempt, max_attempts=1)
    add = h.register(jobs.add)
    with h.app.running():
        job = wait(crash.enqueue(7))
        assert job.state is JobState.FAILED
        assert job.errors[0].type == "minijobs.ProcessDiedError"
        assert "exited with code 7" in job.errors[0].message
        assert wait(add.enqueue(1, 2)).result == 3


def test_process_timeout_kills_a_cpu_bound_child(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory("process", concurrency=1)
    spin = h.register(jobs.spin, timeout_s=0.3)
    add = h.register(jobs.add)
    with h.app.running():
        ref = spin.enqueue()
        pid = int(h.started(ref).done)
        job = wait(ref)
        assert job.state is JobState.FAILED
        assert job.errors[0].type == "minijobs.JobTimeoutError"
        assert not _alive(pid)  # killed and reaped before the outcome was recorded
        assert wait(add.enqueue(3, 4)).result == 7


def test_process_errors_keep_their_type_and_the_child_traceback(harness_factory: Callable[..., Harness]) -> None:
    seen: list[BaseException] = []

    class Spy(minijobs.Plugin):
        def on_job_completed(
            self, *, job: minijobs.Job, worker: Any, exc: BaseException | None, result: Any
        ) -> minijobs.Job:
            if exc is not None:
                seen.append(exc)
            return job

    h = harness_factory("process", concurrency=1, plugins=[Spy()])
    custom = h.register(jobs.custom_error)
    exiting = h.register(jobs.exit_job)
    with h.app.running():
        job = wait(custom.enqueue("quota exceeded"))
        exit_job = wait(exiting.enqueue())
    (error,) = job.errors
    assert (error.type, error.message) == ("executor_jobs.CustomError", "quota exceeded")
    assert "raise CustomError(message)" in error.traceback
    assert exit_job.state is JobState.FAILED and exit_job.errors[0].type == "SystemExit"
    assert isinstance(seen[0], minijobs.RemoteJobError)
    assert seen[0].remote_type == "executor_jobs.CustomError"


def test_process_retry_request_keeps_its_delay(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory("process", concurrency=1)
    later = h.register(jobs.retry_later, max_attempts=2)
    states: list[JobState] = []
    done = threading.Event()

    def on_completed(event: minijobs.Event) -> None:
        states.append(event.data["state"])
        done.set()

    h.app.events.subscribe("job.completed", on_completed)
    with h.app.running():
        ref = later.enqueue(3600.0)
        assert done.wait(WAIT_S)
    job = h.app.get(ref.id)
    assert states == [JobState.RETRYING] and job.state is JobState.RETRYING
    assert job.errors[0].type == "minijobs.Retry"
    delay = (job.scheduled_at - job.errors[0].at).total_seconds()
    assert 3599 < delay <= 3600.5


def test_process_refuses_functions_a_child_cannot_import(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory("process", concurrency=1)
    nested = h.app.job(name="nested")(lambda: 1)
    with h.app.running():
        job = wait(nested.enqueue())
    assert job.state is JobState.FAILED
    assert job.errors[0].type == "minijobs.UnknownJobError"
    assert "not a module-level function" in job.errors[0].message


def test_process_max_jobs_per_child_replaces_children(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory("process", concurrency=1, max_jobs_per_child=1)
    pid = h.register(jobs.pid)
    with h.app.running():
        pids = [wait(pid.enqueue()).result for _ in range(3)]
    assert len(set(pids)) == 3 and os.getpid() not in pids


def test_process_shutdown_releases_running_jobs_and_ends_children(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory("process", concurrency=1)
    block = h.register(jobs.spin)
    with h.app.running(grace_s=0.05):
        ref = block.enqueue()
        pid = int(h.started(ref).done)
    job = h.app.get(ref.id)
    assert (job.state, job.attempts, job.errors) == (JobState.PENDING, 0, ())
    assert not _alive(pid)


def test_process_child_that_dies_at_start_fails_a_waiting_job_instead_of_spinning(
    harness_factory: Callable[..., Harness], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dies_on_import.py").write_text("import os\nos._exit(5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # spawn hands the parent's sys.path to children
    h = harness_factory("process", concurrency=1, preload=["dies_on_import"])
    add = h.register(jobs.add, max_attempts=1)
    with h.app.running() as worker:
        job = wait(add.enqueue(1, 1))
        executor = worker.executors["default"]
        assert isinstance(executor, minijobs.ProcessExecutor)
        started = executor.started_children
    assert job.state is JobState.FAILED
    assert job.errors[0].type == "minijobs.ProcessDiedError"
    assert "exited with code 5 before it was ready" in job.errors[0].message
    assert started <= 2  # restarts back off instead of looping


def test_process_cancel_of_a_job_still_waiting_for_its_child(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory("process", concurrency=1)
    add = h.register(jobs.add)
    # job.started is emitted as the job is pushed, before any child is up: cancel right there.
    h.app.events.subscribe("job.started", lambda event: h.app.cancel(event.data["job"].id))
    with h.app.running():
        job = wait(add.enqueue(1, 2))
    assert (job.state, job.result) == (JobState.CANCELLED, None)


def test_process_executor_options_are_checked(db_path: Path) -> None:
    for options in ({"preload": "json"}, {"max_jobs_per_child": 0}, {"start_timeout_s": -1}, {"bogus": 1}):
        app = minijobs.App(db_path, plugins=[], queues=[
            minijobs.Queue("default", executor=minijobs.ProcessExecutor, executor_options=options)])
        with pytest.raises((minijobs.ConfigurationError, TypeError)):
            app.drain()
        app.close()


@pytest.mark.slow
def test_process_executor_runs_jobs_defined_in_a_main_script(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import json, os
        import minijobs

        app = minijobs.App({str(tmp_path / 'jobs.sqlite3')!r}, plugins=[], queues=[
            minijobs.Queue("default", executor=minijobs.ProcessExecutor, concurrency=1)])

        class Oops(Exception):
            pass

        @app.job
        def double(x):
            minijobs.current_job().set_progress(1, 1)
            return {{"value": 2 * x, "pid": os.getpid()}}

        @app.job
        def oops():
            raise Oops("from the script")

        if __name__ == "__main__":
            with app.running():
                good = double.enqueue(21).wait(timeout_s=20)
                bad = oops.enqueue().wait(timeout_s=20)
            print(json.dumps({{"name": good.name, "state": good.state, "result": good.result,
                               "pid": os.getpid(), "error": bad.errors[0].type}}))
    """))
    out = subprocess.run([sys.executable, str(script)], env=subprocess_env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["name"] == "__main__.double" and report["state"] == "succeeded"
    assert report["result"]["value"] == 42 and report["result"]["pid"] != report["pid"]
    assert report["error"] == "__main__.Oops"


# -- interpreter executor ------------------------------------------------------------------


@needs_interpreters
def test_interpreter_executor_is_exported_on_314() -> None:
    assert "InterpreterExecutor" in minijobs.__all__
    assert issubclass(EXECUTORS["interpreter"], minijobs.ConcurrentExecutor)  # type: ignore[arg-type]


def test_interpreter_executor_is_absent_before_314() -> None:
    if sys.version_info >= (3, 14):
        pytest.skip("Python 3.14+ has InterpreterPoolExecutor")
    assert not hasattr(minijobs, "InterpreterExecutor")
    assert "InterpreterExecutor" not in minijobs.__all__
