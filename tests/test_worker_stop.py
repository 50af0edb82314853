"""Graceful stop: running jobs see ``current_job().cancelled`` the moment it begins.

A cooperative job therefore ends a shutdown early and goes back to its queue
untouched (pending again, no attempt used, no stale progress); a job that
finishes within ``grace_s`` anyway has its result written; a job someone
cancelled is still recorded as cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import executor_jobs
import pytest

import minijobs
from minijobs import JobState, Queue, ThreadExecutor, current_job

WAIT_S = 10.0
#: Well under the 30 s grace period: a cooperative job must not make the stop wait for it.
PROMPT_S = 5.0


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.01)


def cooperative(kind: str, started: threading.Event) -> Callable[..., Any]:
    """A job body that reports progress, then loops on ``check_cancelled()`` until told to stop."""
    if kind == "async-def":

        async def body() -> None:
            ctx = current_job()
            ctx.set_progress(1, 10, "working")
            started.set()
            while True:
                ctx.check_cancelled()
                await asyncio.sleep(0.01)

        return body

    def sync_body() -> None:
        ctx = current_job()
        ctx.set_progress(1, 10, "working")
        started.set()
        while True:
            if ctx.cancelled:
                ctx.set_progress(2, 10, "stopping")  # noted after the stop began: must not outlive the release
            ctx.check_cancelled()
            time.sleep(0.01)

    return sync_body


EXECUTORS = {
    "thread": Queue("default", executor=ThreadExecutor),
    "async-plain-def": Queue("default"),
    "async-def": Queue("default"),
}


@pytest.mark.parametrize("kind", list(EXECUTORS))
def test_a_cooperative_job_ends_the_stop_early_and_is_released_untouched(
    db_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = minijobs.App(db_path, queues=[EXECUTORS[kind]], plugins=[])
    started = threading.Event()
    job = app.job(name="loop")(cooperative("thread" if kind == "thread" else kind, started))
    ref = job.enqueue()
    with caplog.at_level(logging.INFO, logger="minijobs.worker"):
        with app.running(grace_s=30, lease_s=2) as worker:
            assert started.wait(WAIT_S)
            wait_until(lambda: app.get(ref.id).progress is not None, "the progress to be written")
            leaving = time.monotonic()
        took = time.monotonic() - leaving
    assert took < PROMPT_S, f"leaving app.running() took {took:.1f} s with a job that checks cancellation"
    stored = app.get(ref.id)
    assert (stored.state, stored.attempts, stored.progress, stored.errors) == (JobState.PENDING, 0, None, ())
    said = [r.getMessage() for r in caplog.records if "stopping" in r.getMessage()]
    assert said == [(f"worker {worker.id} stopping: waiting up to 30.0 s for 1 running job(s) (ids {ref.id}); "
                     "they see current_job().cancelled")]
    app.close()


def test_a_process_child_sees_the_graceful_stop_and_its_job_is_released_untouched(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = minijobs.App(db_path, queues=[Queue("default", executor=minijobs.ProcessExecutor, concurrency=1)],
                       plugins=[])
    job = app.job(name="until_stopped")(executor_jobs.until_stopped)
    started = threading.Event()
    app.events.subscribe("job.progress", lambda event: started.set())
    ref = job.enqueue()
    with caplog.at_level(logging.INFO, logger="minijobs.worker"):
        with app.running(grace_s=30, lease_s=5) as worker:
            assert started.wait(WAIT_S), "the child's job never reported progress"
            leaving = time.monotonic()
        took = time.monotonic() - leaving
    assert took < PROMPT_S, f"leaving app.running() took {took:.1f} s: the child never saw the stop"
    stored = app.get(ref.id)
    assert (stored.state, stored.attempts, stored.progress, stored.errors) == (JobState.PENDING, 0, None, ())
    said = [r.getMessage() for r in caplog.records if "stopping" in r.getMessage()]
    assert said == [(f"worker {worker.id} stopping: waiting up to 30.0 s for 1 running job(s) (ids {ref.id}); "
                     "they see current_job().cancelled")]
    app.close()


def test_a_job_that_finishes_within_grace_has_its_result_written(db_path: Path) -> None:
    app = minijobs.App(db_path, queues=[Queue("default", executor=ThreadExecutor)], plugins=[])
    started, finish = threading.Event(), threading.Event()
    app.events.subscribe("worker.stopping", lambda event: finish.set())

    @app.job(name="careless")
    def careless() -> dict[str, bool]:
        started.set()
        assert finish.wait(WAIT_S)  # ignores the flag, but is done quickly once the stop began
        return {"saw_cancelled": current_job().cancelled}

    ref = careless.enqueue()
    with app.running(grace_s=30):
        assert started.wait(WAIT_S)
    stored = app.get(ref.id)
    assert (stored.state, stored.attempts, stored.result) == (JobState.SUCCEEDED, 1, {"saw_cancelled": True})
    app.close()


def test_a_job_cancelled_as_the_worker_stops_is_recorded_cancelled_not_released(db_path: Path) -> None:
    app = minijobs.App(db_path, plugins=[])
    started = threading.Event()

    @app.job(name="stuck")
    async def stuck() -> None:
        started.set()
        await asyncio.sleep(3600)

    ref = stuck.enqueue()
    with app.running(grace_s=30):
        assert started.wait(WAIT_S)
        app.cancel(ref.id)  # the cancel reaches the worker just before the stop does
    stored = app.get(ref.id)
    assert stored.state is JobState.CANCELLED and stored.attempts == 1
    assert [e.type for e in stored.errors] == ["minijobs.Cancelled"]
    app.close()


WORKER_APP = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path

    import minijobs
    from minijobs import current_job

    HERE = Path(__file__).resolve().parent
    app = minijobs.App(os.environ["MINIJOBS_TEST_DB"], plugins=[])


    @app.job(name="loop")
    def loop() -> None:
        (HERE / "started").write_text("1")
        while True:
            current_job().check_cancelled()
            time.sleep(0.01)
    """
)


@pytest.mark.slow
def test_sigterm_stops_a_cli_worker_promptly_when_its_job_cooperates(
    db_path: Path, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "stopapp.py").write_text(WORKER_APP)
    env = {**subprocess_env, "MINIJOBS_TEST_DB": str(db_path),
           "PYTHONPATH": f"{tmp_path}{':' + subprocess_env['PYTHONPATH']}"}
    app = minijobs.App(db_path, plugins=[])

    @app.job(name="loop")
    def loop() -> None:  # the child's registry has the real body
        raise AssertionError("runs in the worker process only")

    ref = loop.enqueue()
    proc = subprocess.Popen(
        [sys.executable, "-m", "minijobs", "--app", "stopapp:app", "worker", "--grace-s", "30"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: (tmp_path / "started").exists() or proc.poll() is not None, "the job to start")
        assert proc.poll() is None, proc.communicate()
        signalled = time.monotonic()
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert took < PROMPT_S, f"SIGTERM took {took:.1f} s to stop a worker whose job checks cancellation"
    assert f"stopping: waiting up to 30.0 s for 1 running job(s) (ids {ref.id}); they see current_job().cancelled" \
        in stderr, stderr
    stored = app.get(ref.id)
    assert (stored.state, stored.attempts, stored.errors) == (JobState.PENDING, 0, ())
    app.close()
