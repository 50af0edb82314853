"""No job can kill its worker or strand other jobs.

Whatever a job raises (``BaseException`` included), whatever it reports as
progress, and whatever its exception holds, only *its* attempt fails: the
worker keeps running and the outcomes of its other jobs are all recorded.
Each case runs on every executor, for plain ``def`` and ``async def`` jobs.
"""

from __future__ import annotations

import enum
import multiprocessing
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import executor_jobs as jobs
import pytest

import minijobs
from minijobs import Backoff, JobState, Progress
from minijobs.context import MAX_PROGRESS_MESSAGE_BYTES, JobContext, encode_progress
from minijobs.errors import PayloadTypeError, PayloadValueError
from minijobs.executors._pool import DaemonThreadPool
from minijobs.executors.concurrent import ConcurrentExecutor

WAIT_S = 20.0  # generous bound on waits for things that take milliseconds
NOW = Backoff(base_s=0, jitter=0)  # retries due at once

EXECUTORS: dict[str, type[minijobs.Executor]] = {
    "async": minijobs.AsyncExecutor,
    "thread": minijobs.ThreadExecutor,
    "process": minijobs.ProcessExecutor,
}
#: (executor, style of the job function): every way a job's code can be run.
RUNS = [(kind, style) for kind in EXECUTORS for style in ("def", "async def")]
RUN_IDS = [f"{kind}-{style.replace(' ', '-')}" for kind, style in RUNS]

#: What each job raises, and the error type its failed attempt records.
BASE_EXCEPTIONS = {
    "SystemExit": "SystemExit",
    "SystemExit(3)": "SystemExit",
    "KeyboardInterrupt": "KeyboardInterrupt",
    "GeneratorExit": "GeneratorExit",
    "CustomBaseException": "executor_jobs.CustomBaseException",
}


class Runner:
    """An app with one queue on the executor under test, and a way to wait for a job to start."""

    def __init__(self, db_path: Path, kind: str, *, concurrency: int = 2) -> None:
        self.app = minijobs.App(
            db_path, queues=[minijobs.Queue("default", executor=EXECUTORS[kind], concurrency=concurrency)], plugins=[]
        )
        self._started: set[int] = set()
        self._changed = threading.Condition()
        self.app.events.subscribe("job.progress", self._on_progress)

    def _on_progress(self, event: minijobs.Event) -> None:
        with self._changed:
            self._started.add(event.data["job_id"])
            self._changed.notify_all()

    def wait_started(self, refs: list[minijobs.JobRef]) -> None:
        """Wait until every job in ``refs`` has reported progress (they report once they run)."""
        with self._changed:
            ok = self._changed.wait_for(lambda: {r.id for r in refs} <= self._started, WAIT_S)
        assert ok, f"jobs never started: {[r.get() for r in refs]}"


@pytest.fixture
def runner(db_path: Path) -> Iterator[Callable[..., Runner]]:
    made: list[Runner] = []

    def make(kind: str, **kwargs: Any) -> Runner:
        r = Runner(db_path, kind, **kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.app.close()
    assert multiprocessing.active_children() == []  # every child process was stopped with its worker


def wait(ref: minijobs.JobRef) -> minijobs.Job:
    return ref.wait(timeout_s=WAIT_S)


def raiser(style: str) -> Callable[..., Any]:
    return jobs.raise_base if style == "def" else jobs.raise_base_async


# -- 1. any BaseException is that attempt's failure -------------------------------------------


@pytest.mark.parametrize("raised", list(BASE_EXCEPTIONS))
@pytest.mark.parametrize(("kind", "style"), RUNS, ids=RUN_IDS)
def test_a_base_exception_fails_its_attempt_and_the_worker_and_other_jobs_go_on(
    runner: Callable[..., Runner], kind: str, style: str, raised: str
) -> None:
    r = runner(kind)
    boom = r.app.job(name="boom", max_attempts=1)(raiser(style))
    add = r.app.job(name="add")(jobs.add)
    with r.app.running() as worker:
        bad, sibling = boom.enqueue(raised), add.enqueue(1, 2)
        failed = wait(bad)
        assert (wait(sibling).state, wait(sibling).result) == (JobState.SUCCEEDED, 3)
        after = add.enqueue(3, 4)
        assert (wait(after).state, wait(after).result) == (JobState.SUCCEEDED, 7)
        assert not worker.stopped.is_set()
    assert (failed.state, failed.attempts) == (JobState.FAILED, 1)
    assert failed.errors[-1].type == BASE_EXCEPTIONS[raised]
    if raised == "SystemExit(3)":
        assert failed.errors[-1].message == "3"


@pytest.mark.parametrize("kind", EXECUTORS)
def test_a_base_exception_is_an_ordinary_failure_retried_while_attempts_remain(
    runner: Callable[..., Runner], kind: str
) -> None:
    r = runner(kind)
    job = r.app.job(name="exit_on_first_attempt", max_attempts=2, retry=NOW)(jobs.exit_on_first_attempt)
    with r.app.running():
        done = wait(job.enqueue())
    assert (done.state, done.result, done.attempts) == (JobState.SUCCEEDED, 2, 2)
    assert [(e.attempt, e.type, e.message) for e in done.errors] == [(1, "SystemExit", "2")]


@pytest.mark.parametrize(
    ("raised", "recorded"),
    [("StopIteration", "StopIteration"), ("CancelledError", "asyncio.exceptions.CancelledError")],
)
@pytest.mark.parametrize(("kind", "style"), RUNS, ids=RUN_IDS)
def test_exceptions_asyncio_treats_specially_are_failures_when_a_job_raises_them(
    runner: Callable[..., Runner], kind: str, style: str, raised: str, recorded: str
) -> None:
    """An asyncio future refuses StopIteration; a CancelledError no one asked for is the job's own error.

    (Raised from a coroutine, StopIteration becomes RuntimeError, as Python itself decides.)
    """
    r = runner(kind)
    boom = r.app.job(name="boom", max_attempts=1)(raiser(style))
    add = r.app.job(name="add")(jobs.add)
    with r.app.running():
        bad, sibling = boom.enqueue(raised), add.enqueue(1, 2)
        failed = wait(bad)
        assert wait(sibling).state is JobState.SUCCEEDED
    assert failed.state is JobState.FAILED  # not released to run again and again
    expected = "RuntimeError" if raised == "StopIteration" and style == "async def" else recorded
    assert failed.errors[-1].type == expected


@pytest.mark.parametrize("kind", EXECUTORS)
def test_a_job_answering_its_timeout_with_system_exit_still_records_the_timeout(
    runner: Callable[..., Runner], kind: str
) -> None:
    r = runner(kind)
    stubborn = r.app.job(name="exit_when_cancelled", max_attempts=1, timeout_s=0.2)(jobs.exit_when_cancelled)
    add = r.app.job(name="add")(jobs.add)
    with r.app.running() as worker:
        job = wait(stubborn.enqueue())
        assert wait(add.enqueue(1, 1)).result == 2
        assert not worker.stopped.is_set()
    assert (job.state, job.errors[-1].type) == (JobState.FAILED, "minijobs.JobTimeoutError")
    if kind == "async":  # what the job raised instead is kept as the cause
        assert "SystemExit: 4" in job.errors[-1].traceback


def test_daemon_thread_pool_threads_outlive_base_exceptions_of_their_calls() -> None:
    pool = DaemonThreadPool(1, thread_name_prefix="t")
    try:
        names: list[str] = []

        def exit_then_record() -> None:
            names.append(threading.current_thread().name)
            raise SystemExit(5)

        errors = [pool.submit(exit_then_record).exception(timeout=WAIT_S) for _ in range(3)]
        assert [type(e) for e in errors] == [SystemExit] * 3
        assert pool.submit(lambda: 42).result(timeout=WAIT_S) == 42
        assert names == ["t_0"] * 3  # one thread ran every call: none ended it
    finally:
        pool.shutdown(wait=True)


# -- the CLI worker, as a real process ---------------------------------------------------------

WORKER_APP = '''
from pathlib import Path

import minijobs

app = minijobs.App(Path(__file__).resolve().parent / "jobs.sqlite3", plugins=[])


@app.job(name="exit3", max_attempts=1)
def exit3() -> None:
    raise SystemExit(3)


@app.job(name="exit3_async", max_attempts=1)
async def exit3_async() -> None:
    raise SystemExit(3)


@app.job(name="interrupt", max_attempts=1)
async def interrupt() -> None:
    raise KeyboardInterrupt


@app.job(name="add")
def add(a: int, b: int) -> int:
    return a + b
'''


@pytest.mark.slow
def test_cli_worker_survives_a_job_raising_system_exit_and_stops_cleanly_on_sigterm(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    (tmp_path / "exitapp.py").write_text(textwrap.dedent(WORKER_APP))
    app = minijobs.App(tmp_path / "jobs.sqlite3", plugins=[])  # the test's own handle: enqueue and wait
    stand_ins = {name: app.job(name=name)(_stand_in) for name in ("exit3", "exit3_async", "interrupt", "add")}
    log = tmp_path / "worker.log"  # a file, not a pipe nobody reads while the worker runs
    with log.open("w") as stderr_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "minijobs", "--app", "exitapp:app", "worker"],
            cwd=tmp_path, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=stderr_file,
        )
        try:
            bad = [stand_ins[name].enqueue() for name in ("exit3", "exit3_async", "interrupt")]
            failed = [wait(ref) for ref in bad]
            later = wait(stand_ins["add"].enqueue(2, 3))
            assert proc.poll() is None, "the worker died with its job:\n" + log.read_text()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            app.close()
    stderr = log.read_text()
    assert proc.returncode == 0, stderr
    assert [(j.state, j.errors[-1].type) for j in failed] == [
        (JobState.FAILED, "SystemExit"), (JobState.FAILED, "SystemExit"), (JobState.FAILED, "KeyboardInterrupt"),
    ]
    assert failed[0].errors[-1].message == "3"
    assert (later.state, later.result) == (JobState.SUCCEEDED, 5)
    assert "stopped after 4 job attempt(s)" in stderr


def _stand_in(*args: Any) -> None:
    """Registered in the test's own app under the worker's job names, only to enqueue them; never run here."""


# -- 2. progress is checked at the call, in the job -------------------------------------------


@pytest.mark.parametrize(
    ("which", "error"),
    [
        ("nan", PayloadValueError), ("inf total", PayloadValueError), ("-inf", PayloadValueError),
        ("huge int", PayloadValueError), ("surrogate message", PayloadValueError),
        ("long message", PayloadValueError), ("bool", PayloadTypeError), ("str done", PayloadTypeError),
        ("bytes message", PayloadTypeError),
    ],
)
def test_set_progress_refuses_bad_values_at_the_call_and_reports_nothing(
    db_path: Path, which: str, error: type[Exception]
) -> None:
    reported: list[tuple[int, Progress, str]] = []
    ctx = JobContext(_any_job(db_path), on_progress=lambda *report: reported.append(report))
    with pytest.raises(error, match="progress") as raised:
        ctx.set_progress(*jobs.BAD_PROGRESS[which])
    assert isinstance(raised.value, ValueError if error is PayloadValueError else TypeError)
    assert reported == []


def test_set_progress_accepts_number_and_str_subclasses_as_their_plain_values(db_path: Path) -> None:
    class Step(enum.IntEnum):
        TWO = 2

    class Label(str):
        def __str__(self) -> str:
            return "something else"

    reported: list[tuple[int, Progress, str]] = []
    ctx = JobContext(_any_job(db_path), on_progress=lambda *report: reported.append(report))
    ctx.set_progress(Step.TWO, 4.0, Label("half"))
    ctx.set_progress(0, None, "é" * (MAX_PROGRESS_MESSAGE_BYTES // 2))  # at the limit, in bytes
    (_, first, text), (_, second, _) = reported
    assert (type(first.done), first.total, type(first.message), first.message) == (int, 4.0, str, "half")
    assert text == '{"done":2,"total":4.0,"message":"half"}'
    assert second.message is not None and len(second.message.encode()) == MAX_PROGRESS_MESSAGE_BYTES
    assert encode_progress(1.5) == (Progress(done=1.5), '{"done":1.5,"total":null,"message":null}')


def _any_job(db_path: Path) -> minijobs.Job:
    app = minijobs.App(db_path, plugins=[])
    try:
        return app.job(name="add")(jobs.add).enqueue(1, 2).get()
    finally:
        app.close()


@pytest.mark.parametrize("which", ["nan", "surrogate message", "bool"])
@pytest.mark.parametrize("kind", EXECUTORS)
def test_a_bad_progress_value_fails_only_its_job_on_every_executor(
    runner: Callable[..., Runner], kind: str, which: str
) -> None:
    r = runner(kind)
    bad = r.app.job(name="bad_progress", max_attempts=1)(jobs.bad_progress)
    steps = r.app.job(name="progress_steps")(jobs.progress_steps)
    with r.app.running():
        failed, fine = wait(bad.enqueue(which)), wait(steps.enqueue())
    expected = "minijobs.PayloadTypeError" if which == "bool" else "minijobs.PayloadValueError"
    assert (failed.state, failed.attempts, failed.errors[-1].type) == (JobState.FAILED, 1, expected)
    assert (fine.state, fine.progress) == (JobState.SUCCEEDED, Progress(done=3, total=3, message="done"))


# -- 3. one broken outcome never loses the others ------------------------------------------------

SIBLINGS = 8


@pytest.mark.parametrize(
    ("then", "state", "recorded"),
    [
        ("progress:nan", JobState.FAILED, "minijobs.PayloadValueError"),
        ("progress:surrogate message", JobState.FAILED, "minijobs.PayloadValueError"),
        ("raise:surrogate", JobState.FAILED, "ValueError"),
        ("raise:Unprintable", JobState.FAILED, "executor_jobs.Unprintable"),
        ("raise:SystemExit", JobState.FAILED, "SystemExit"),
    ],
)
def test_thread_jobs_finishing_together_all_settle_when_one_of_them_breaks(
    runner: Callable[..., Runner], then: str, state: JobState, recorded: str
) -> None:
    """The regression: the broken one used to drop the whole batch of completions; the rest then ran twice."""
    r = runner("thread", concurrency=SIBLINGS + 1)
    gated = r.app.job(name="gated", max_attempts=1)(jobs.gated)
    gate = f"batch-{then}"
    jobs.GATES[gate] = threading.Event()
    try:
        with r.app.running() as worker:
            broken = gated.enqueue(gate, then)
            siblings = [gated.enqueue(gate, f"ok {i}") for i in range(SIBLINGS)]
            r.wait_started([broken, *siblings])
            jobs.GATES[gate].set()  # all of them finish at once, in as few loop hops as the pool makes
            outcome = wait(broken)
            done = [wait(ref) for ref in siblings]  # while the worker runs: not released by its shutdown
            assert not worker.stopped.is_set()
    finally:
        del jobs.GATES[gate]
    assert (outcome.state, outcome.attempts, outcome.errors[-1].type) == (state, 1, recorded)
    assert [(j.state, j.result, j.attempts) for j in done] == [
        (JobState.SUCCEEDED, f"ok {i}", 1) for i in range(SIBLINGS)
    ]


@pytest.mark.parametrize("raised", ["surrogate", "Unprintable"])
@pytest.mark.parametrize(("kind", "style"), RUNS, ids=RUN_IDS)
def test_an_exception_the_worker_cannot_record_as_is_still_recorded_under_its_type(
    runner: Callable[..., Runner], kind: str, style: str, raised: str
) -> None:
    r = runner(kind)
    boom = r.app.job(name="boom", max_attempts=1)(raiser(style))
    add = r.app.job(name="add")(jobs.add)
    with r.app.running():
        bad, sibling = boom.enqueue(raised), add.enqueue(1, 2)
        failed = wait(bad)
        assert wait(sibling).state is JobState.SUCCEEDED
    error = failed.errors[-1]
    assert (failed.state, error.type) == (
        JobState.FAILED, "ValueError" if raised == "surrogate" else "executor_jobs.Unprintable"
    )
    if raised == "surrogate":
        assert "bad \\udc80 byte" in error.message  # escaped, not lost
    assert "raise _base_exception(which)" in error.traceback  # the job's own frame, wherever it ran


def test_a_batch_entry_that_cannot_be_handled_does_not_lose_the_rest(runner: Callable[..., Runner]) -> None:
    """The inbox drain itself: no real path breaks an entry any more, so break two by hand.

    One progress entry is malformed and one completion's call has a broken timer; the
    completions after them in the same batch are still recorded, and the broken
    completion is settled as a failure rather than left running.
    """
    r = runner("thread", concurrency=4)
    gated = r.app.job(name="gated", max_attempts=1)(jobs.gated)
    gate = "drain"
    jobs.GATES[gate] = threading.Event()
    try:
        with r.app.running() as worker:
            refs = [gated.enqueue(gate, "late") for _ in range(4)]
            r.wait_started(refs)
            executor = worker.executors["default"]
            assert isinstance(executor, ConcurrentExecutor)
            drained = threading.Event()
            problems: list[BaseException] = []

            def drain_a_broken_batch() -> None:  # in the loop thread, as every drain
                try:
                    calls = [executor._calls[ref.id] for ref in refs]
                    calls[1].timer = object()  # type: ignore[assignment]  # cancel() will raise AttributeError
                    executor._inbox.extend([
                        (calls[0], None, "not a (progress, text) pair", True),
                        (calls[1], None, "result 1", False),
                        (calls[0], None, "result 0", False),
                        (calls[2], None, "result 2", False),
                        (calls[3], ValueError("job 3 failed"), None, False),
                    ])
                    executor._drain_inbox()
                except BaseException as exc:  # noqa: BLE001 - reported to the test thread
                    problems.append(exc)
                finally:
                    drained.set()

            worker.call_soon(drain_a_broken_batch)
            assert drained.wait(WAIT_S) and problems == []
            outcomes = [wait(ref) for ref in refs]
            jobs.GATES[gate].set()  # the real calls return now: already settled, they are discarded
    finally:
        del jobs.GATES[gate]
    assert [(j.state, j.result) for j in outcomes] == [
        (JobState.SUCCEEDED, "result 0"), (JobState.FAILED, None),
        (JobState.SUCCEEDED, "result 2"), (JobState.FAILED, None),
    ]
    assert outcomes[1].errors[-1].type == "AttributeError"
    assert (outcomes[3].errors[-1].type, outcomes[3].errors[-1].message) == ("ValueError", "job 3 failed")


def test_a_process_child_message_the_parent_cannot_handle_fails_that_job_and_a_new_child_goes_on(
    runner: Callable[..., Runner],
) -> None:
    r = runner("process", concurrency=1)
    smuggle = r.app.job(name="smuggle_nan_progress", max_attempts=1)(jobs.smuggle_nan_progress)
    pid = r.app.job(name="pid")(jobs.pid)
    with r.app.running() as worker:
        first_pid = wait(pid.enqueue()).result
        failed = wait(smuggle.enqueue())
        later = wait(pid.enqueue())
        assert not worker.stopped.is_set()
    assert (failed.state, failed.attempts, failed.errors[-1].type) == (JobState.FAILED, 1, "minijobs.PayloadValueError")
    assert later.state is JobState.SUCCEEDED and later.result != first_pid  # the child that spoke NaN was replaced
