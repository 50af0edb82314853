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
from minijobs.store import Outcome
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


# -- suspects: rescued jobs run alone ------------------------------------------------------


def suspects_app(db_path: Path) -> tuple[minijobs.App, minijobs.JobFunction[..., None], FakeClock]:
    clock = FakeClock()
    app = minijobs.App(db_path, clock=clock, queues=[minijobs.Queue("default"), minijobs.Queue("other")])

    @app.job
    def noop() -> None:
        return None

    return app, noop, clock


def make_suspect(app: minijobs.App, clock: FakeClock, ref: minijobs.JobRef) -> None:
    """Have ``ref`` (the first due job of its queue) lost with a dead worker and rescued once."""
    queue = ref.get().queue
    (claimed,) = app.store.claim(queue, 1, owner="dead-worker", now=clock.now(), lease_s=10)
    assert claimed.id == ref.id
    clock.advance(11)
    assert app.store.recover_expired(now=clock.now(), max_rescues=3) == ([ref.id], [])


def claim(app: minijobs.App, *, idle: bool, queue: str = "default") -> list[int]:
    return [j.id for j in app.store.claim(queue, 100, owner="w", now=app.clock.now(), lease_s=1000, idle=idle)]


def test_a_suspect_is_claimed_alone_and_only_by_an_idle_executor(db_path: Path) -> None:
    app, noop, clock = suspects_app(db_path)
    suspect = noop.enqueue()
    make_suspect(app, clock, suspect)
    normal = [noop.enqueue().id for _ in range(3)]
    assert app.store.first_suspect("default", now=clock.now()) == suspect.id
    assert claim(app, idle=False) == []  # a barrier: nothing behind the suspect either
    assert claim(app, idle=True) == [suspect.id]  # alone, though 100 were asked for
    assert app.store.first_suspect("default", now=clock.now()) is None
    assert claim(app, idle=False) == normal


def test_a_claim_stops_before_the_first_suspect_in_claim_order(db_path: Path) -> None:
    app, noop, clock = suspects_app(db_path)
    suspect = noop.enqueue()
    make_suspect(app, clock, suspect)
    after = [noop.enqueue().id for _ in range(2)]
    ahead = [noop.options(priority=5).enqueue().id for _ in range(2)]
    # Jobs ahead of the suspect flow; the suspect is not taken along, even by an idle executor.
    assert claim(app, idle=True) == ahead
    assert app.store.first_suspect("default", now=clock.now()) == suspect.id
    assert claim(app, idle=False) == []
    assert claim(app, idle=True) == [suspect.id]
    assert claim(app, idle=True) == after


def test_normal_jobs_flow_when_no_suspect_is_due_in_their_queue(db_path: Path) -> None:
    app, noop, clock = suspects_app(db_path)
    running = noop.enqueue()
    make_suspect(app, clock, running)
    assert claim(app, idle=True) == [running.id]  # a suspect that runs (elsewhere) blocks nobody
    elsewhere = noop.options(queue="other").enqueue()
    make_suspect(app, clock, elsewhere)  # a due suspect in another queue blocks only that one
    later = noop.enqueue()
    make_suspect(app, clock, later)
    # ``later`` fails an attempt as a suspect and retries in a minute: not due, so no barrier yet.
    (claimed,) = app.store.claim("default", 1, owner="w", now=clock.now(), lease_s=1000)
    retry_at = clock.now() + 60
    error = '{"attempt": 2, "type": "E", "message": "", "traceback": "", "at": 0}'
    assert app.store.finish([Outcome(job_id=later.id, owner="w", attempt=claimed.attempts, state=JobState.RETRYING,
                                     completed_at=None, error=error, scheduled_at=retry_at)]) == [True]
    normal = [noop.enqueue().id for _ in range(3)]
    assert claim(app, idle=False) == normal
    assert claim(app, idle=False, queue="other") == []
    more = [noop.enqueue().id for _ in range(2)]
    assert app.store.first_suspect("default", now=clock.now()) is None
    clock.advance(61)
    assert claim(app, idle=False) == []  # due now (the claim promotes the waiting retry): the barrier holds ``more`` back
    assert app.store.first_suspect("default", now=clock.now()) == later.id
    assert app.store.next_due_at(["default"]) < clock.now()  # due work waits behind it...
    assert app.store.next_due_at(["default"], after=clock.now()) is None  # ...and nothing falls due later
    assert claim(app, idle=True) == [later.id]
    assert claim(app, idle=False) == more
