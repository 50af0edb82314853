"""Recovery: jobs whose worker died go back to their queue; poison pills fail instead of looping."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

import minijobs
from minijobs import JobState
from minijobs.plugins import Recovery
from minijobs.testing import FakeClock

WAIT_S = 10.0


def orphan(app: minijobs.App, *, owner: str = "dead-worker", lease_s: float = 30.0) -> list[minijobs.Job]:
    """Claim every due job as a worker that then vanishes (it never renews or finishes)."""
    return app.store.claim("default", 100, owner=owner, now=app.clock.now(), lease_s=lease_s)


def test_jobs_of_a_dead_worker_come_back_and_complete(db_path: Path) -> None:
    clock = FakeClock()
    # Passes every 1 s of app clock: whether the first pass runs before or after the jump below,
    # the next one falls within it.
    app = minijobs.App(db_path, clock=clock, plugins=[Recovery(interval_s=1)])
    recovered: list[minijobs.Event] = []
    app.events.subscribe("job.recovered", recovered.append)

    @app.job
    def square(x: int) -> int:
        return x * x

    refs = [square.enqueue(i) for i in range(3)]
    assert len(orphan(app, lease_s=30)) == 3
    clock.advance(29)
    assert Recovery().recover(app).requeued == []  # leases still valid: left alone
    with app.running():
        clock.advance(2)  # the dead worker's leases expire; Recovery notices the clock jump at once
        jobs = [ref.wait(timeout_s=WAIT_S) for ref in refs]
    assert [j.result for j in jobs] == [0, 1, 4]
    assert all(j.state is JobState.SUCCEEDED and j.attempts == 2 and j.rescues == 1 for j in jobs)
    assert [sorted(e.data["job_ids"]) for e in recovered] == [[r.id for r in refs]]


def test_a_job_that_keeps_losing_its_worker_fails_as_a_poison_pill(db_path: Path) -> None:
    clock = FakeClock()
    recovery = Recovery(max_rescues=2)
    app = minijobs.App(db_path, clock=clock, plugins=[recovery])
    finished = threading.Event()
    app.events.subscribe("job.recovered", lambda e: e.data["poisoned_ids"] and finished.set())

    @app.job(max_attempts=10)
    def crasher() -> None:
        return None

    ref = crasher.enqueue()
    for rescue in (1, 2):
        orphan(app)
        clock.advance(31)
        report = recovery.recover(app)
        assert report.requeued == [ref.id] and report.poisoned == []
        assert ref.get().state is JobState.RETRYING and ref.get().rescues == rescue
    orphan(app)
    clock.advance(31)
    report = recovery.recover(app)
    assert report.poisoned == [ref.id] and finished.is_set()
    job = ref.get()
    assert job.state is JobState.FAILED and job.rescues == 3 and job.attempts == 3
    assert job.errors[-1].type == "minijobs.PoisonJobError"
    assert "lost 3 times" in job.errors[-1].message


def test_one_pass_recovers_in_batches(db_path: Path) -> None:
    clock = FakeClock()
    recovery = Recovery(batch_size=2)
    app = minijobs.App(db_path, clock=clock, plugins=[recovery])

    @app.job
    def noop() -> None:
        return None

    app.enqueue_many([noop.prepare() for _ in range(5)])
    orphan(app, lease_s=5)
    assert recovery.recover(app).requeued == []  # nothing expired yet
    clock.advance(5.001)
    assert len(recovery.recover(app).requeued) == 5
    assert app.store.count_by_state()[JobState.RETRYING] == 5


WORKER_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import minijobs

    app = minijobs.App(sys.argv[1], lease_s=float(sys.argv[2]), plugins=[])

    @app.job(name="slow.square")
    async def square(x):
        print("running", x, flush=True)
        await asyncio.sleep(3600)  # still "running" when the process is killed

    app.run_worker()
    """
)


@pytest.mark.slow
def test_jobs_in_flight_on_a_killed_worker_process_are_recovered_by_another(
    db_path: Path, tmp_path: Path, subprocess_env: dict[str, str], python: str
) -> None:
    lease_s = 1.0
    # The surviving worker's clock starts at the real time and is then moved past the leases.
    clock = FakeClock(time.time())
    app = minijobs.App(db_path, clock=clock, lease_s=lease_s, plugins=[Recovery()])

    @app.job(name="slow.square")
    def square(x: int) -> int:
        return x * x

    refs = [square.enqueue(i) for i in range(4)]
    script = tmp_path / "worker_child.py"
    script.write_text(WORKER_CHILD)
    child = subprocess.Popen([python, str(script), str(db_path), str(lease_s)], env=subprocess_env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        seen = {child.stdout.readline().split()[1] for _ in refs}  # every job started in the child
        assert seen == {"0", "1", "2", "3"}
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    running = app.jobs(state="running")
    assert len(running) == 4 and all(j.lease_owner and str(child.pid) in j.lease_owner for j in running)
    with app.running():
        clock.advance(lease_s + 30)  # the killed worker can no longer renew: its leases lapse
        jobs = [ref.wait(timeout_s=WAIT_S) for ref in refs]
    assert [j.result for j in jobs] == [0, 1, 4, 9]
    assert all(j.state is JobState.SUCCEEDED and j.attempts == 2 and j.rescues == 1 for j in jobs)
