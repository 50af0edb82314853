"""Crash scenarios: workers die (SIGKILL), freeze (SIGSTOP) or are killed by their own jobs.

Recovery runs in the surviving workers (the built-in Recovery plugin, on a
short interval), exactly as a deployment would run it.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from minijobs import App

from . import ledger
from .harness import Fleet, wait_until
from .jobs import ATASK, TASK, build_app

pytestmark = pytest.mark.slow

LEASE = "0.5"
#: The body each executor kind runs: ``async def`` on the AsyncExecutor, plain ``def`` on threads and processes.
BODY = {"async": ATASK, "thread": TASK, "process": TASK}


@pytest.fixture
def app(fleet: Fleet) -> Iterator[App]:
    """The test process's own handle on the database (enqueue and inspect)."""
    app = build_app(fleet.db)
    yield app
    app.close()


def enqueue(fleet: Fleet, app: App, plan: dict[str, Any], n: int, *, fn: str = ATASK, **options: Any) -> list[int]:
    job = app.registry[fn]
    bound = job.options(**options) if options else job
    refs = app.enqueue_many([bound.prepare(plan) for _ in range(n)])
    ids = [ref.id for ref in refs]
    fleet.ledger.ack(ids)
    return ids


def states(app: App, ids: list[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for job_id in ids:
        state = app.store.state_of(job_id).value
        out[state] = out.get(state, 0) + 1
    return out


def settled(app: App, ids: list[int]) -> bool:
    return all(app.store.state_of(job_id).is_terminal for job_id in ids)


def running_by(app: App, worker_id: str | None) -> int:
    return len([j for j in app.jobs(state="running", limit=10_000) if j.lease_owner == worker_id])


@pytest.mark.parametrize(("kind", "n"), [("async", 50), ("thread", 50), ("process", 4)])
def test_sigkill_with_50_running_jobs_recovers_all(fleet: Fleet, app: App, kind: str, n: int) -> None:
    ids = enqueue(fleet, app, {"hang": [1]}, n, fn=BODY[kind])
    victim = fleet.worker("--queue", f"default:{n}:{kind}", "--lease-s", LEASE)
    wait_until(lambda: running_by(app, victim.worker_id) == n, what=f"{n} jobs running in the victim")
    wait_until(lambda: sum(len(ledger.read(fleet.ledger_dir).starts(i)) for i in ids) == n, what=f"{n} starts")
    assert victim.kill() == -signal.SIGKILL
    if kind == "process":
        # Pool children watch their parent and must not outlive it (no orphans burning CPU).
        children = {ledger.read(fleet.ledger_dir).starts(i)[0].pid for i in ids}
        wait_until(lambda: not any(alive(pid) for pid in children), timeout_s=10, what="orphaned children to exit")

    fleet.worker("--queue", f"default:{n}:{kind}", "--lease-s", LEASE, "--recovery-interval-s", "0.1")
    wait_until(lambda: settled(app, ids), what="all jobs finished after recovery")

    report = ledger.check(fleet.db, fleet.ledger_dir)
    for job_id in ids:
        row = report.rows[job_id]
        assert (row.attempts, row.rescues) == (2, 1), row
        runs = report.executions(job_id)
        assert len(runs) == 2 and (runs[0].pid == victim.pid or report.history.parents[runs[0].pid] == victim.pid)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def no_orphans(app: App) -> None:
    """Nothing may sit in running without an owner and a lease."""
    rows = app.store.query(
        "orphans", "SELECT id FROM minijobs_jobs WHERE state='running' AND (lease_owner IS NULL OR lease_expires_at IS NULL)"
    )
    assert rows == []


def test_sigkill_inside_the_claim_transaction(fleet: Fleet, app: App) -> None:
    ids = enqueue(fleet, app, {}, 50)
    # ~10 VM ticks per claimed row: the kill lands about 20 rows into the 50-row claim.
    victim = fleet.worker("--queue", "default:50", "--lease-s", LEASE, "--die-in", "claim", "--die-ticks", "200",
                          ready=False)
    assert victim.wait() == -signal.SIGKILL
    no_orphans(app)
    assert states(app, ids) == {"pending": 50}, "a claim killed before COMMIT must leave no trace"

    fleet.worker("--queue", "default:50", "--lease-s", LEASE, "--recovery-interval-s", "0.1")
    wait_until(lambda: settled(app, ids), what="all jobs finished")
    report = ledger.check(fleet.db, fleet.ledger_dir)
    assert {report.rows[i].attempts for i in ids} == {1}


def test_sigkill_inside_the_completion_write(fleet: Fleet, app: App, tmp_path: Any) -> None:
    gate = tmp_path / "gate"
    ids = enqueue(fleet, app, {"gate": str(gate)}, 50)
    # ~6 ticks per outcome: killed about 10 outcomes into the batch, before COMMIT.
    victim = fleet.worker("--queue", "default:50", "--lease-s", LEASE, "--die-in", "finish", "--die-ticks", "60")
    wait_until(lambda: running_by(app, victim.worker_id) == 50, what="50 jobs running")
    gate.touch()
    assert victim.wait(timeout_s=15) == -signal.SIGKILL, "the outcome write was never cut"
    no_orphans(app)
    assert states(app, ids).get("succeeded", 0) < 50, "the kill must have cut a completion batch"

    fleet.worker("--queue", "default:50", "--lease-s", LEASE, "--recovery-interval-s", "0.1")
    wait_until(lambda: settled(app, ids), what="all jobs finished after recovery")
    report = ledger.check(fleet.db, fleet.ledger_dir)
    rerun = [i for i in ids if report.rows[i].attempts == 2]
    assert rerun, "jobs whose outcome write was cut must run again"
    for job_id in rerun:
        assert report.rows[job_id].rescues == 1
        assert report.executions(job_id)[0].pid == victim.pid


def test_sigstop_past_the_lease_then_sigcont_refuses_the_stale_completion(fleet: Fleet, app: App) -> None:
    (job_id,) = enqueue(fleet, app, {"sleep_s": 0.3, "sleep_on": [1]}, 1)
    frozen = fleet.worker("--queue", "default:4", "--lease-s", LEASE)
    wait_until(lambda: ledger.read(fleet.ledger_dir).starts(job_id), what="attempt 1 started")
    frozen.signal(signal.SIGSTOP)
    rescuer = fleet.worker("--queue", "default:4", "--lease-s", LEASE, "--recovery-interval-s", "0.1")
    wait_until(lambda: app.store.state_of(job_id).is_terminal, what="the rescuer finished the job")
    frozen.signal(signal.SIGCONT)
    # The frozen worker wakes up holding a finished attempt 1 it no longer owns.
    wait_until(lambda: "lease lost" in frozen.stderr, what="the stale attempt to be refused")
    report = ledger.check(fleet.db, fleet.ledger_dir)
    row = report.rows[job_id]
    assert (row.state, row.attempts, row.rescues) == ("succeeded", 2, 1)
    assert row.result == {"pid": rescuer.pid, "attempt": 2}


def test_frozen_job_finishing_after_takeover_is_refused_by_the_fence(fleet: Fleet, app: App) -> None:
    # The job stops its own process mid-body, so on SIGCONT the body returns before the
    # worker's heartbeat can notice the lost lease: the outcome write itself must be fenced.
    (job_id,) = enqueue(fleet, app, {"stop": [1]}, 1)
    frozen = fleet.worker("--queue", "default:4", "--lease-s", LEASE)
    wait_until(lambda: ledger.read(fleet.ledger_dir).faulted(frozen.pid), what="the job to freeze its worker")
    rescuer = fleet.worker("--queue", "default:4", "--lease-s", LEASE, "--recovery-interval-s", "0.1")
    wait_until(lambda: app.store.state_of(job_id).is_terminal, what="the rescuer finished the job")
    frozen.signal(signal.SIGCONT)
    wait_until(lambda: "refused (lease lost to another worker)" in frozen.stderr, what="the fence to refuse")
    report = ledger.check(fleet.db, fleet.ledger_dir)
    row = report.rows[job_id]
    assert (row.state, row.attempts) == ("succeeded", 2)
    assert row.result == {"pid": rescuer.pid, "attempt": 2}
    runs = report.executions(job_id)
    assert [(r.pid, r.outcome) for r in runs] == [(frozen.pid, "ok"), (rescuer.pid, "ok")]


@pytest.mark.parametrize("kind", ["async", "thread"])
def test_worker_frozen_past_its_lease_reclaims_its_own_job_once(fleet: Fleet, app: App, kind: str) -> None:
    # Recovery happens while the worker is frozen; on waking up the worker finds the job
    # due again and claims it while its own stale attempt is still running locally.
    (job_id,) = enqueue(fleet, app, {"sleep_s": 1.5, "sleep_on": [1]}, 1, fn=BODY[kind])
    (other,) = enqueue(fleet, app, {"sleep_s": 3.0}, 1, fn=BODY[kind])  # keeps the worker busy (and renewing)
    frozen = fleet.worker("--queue", f"default:4:{kind}", "--lease-s", LEASE)
    wait_until(lambda: len(ledger.read(fleet.ledger_dir).executions) == 2, what="both jobs started")
    frozen.signal(signal.SIGSTOP)
    wait_until(lambda: job_id in app.store.recover_expired(now=time.time(), max_rescues=5)[0],
               what="the frozen worker's lease to expire and be recovered")
    app.store.recover_expired(now=time.time() + 10, max_rescues=5)  # the other job too
    frozen.signal(signal.SIGCONT)
    wait_until(lambda: settled(app, [job_id, other]), timeout_s=15, what="both jobs to finish in the same worker")
    report = ledger.check(fleet.db, fleet.ledger_dir)
    for jid in (job_id, other):
        row = report.rows[jid]
        assert row.attempts == 2, row
        assert len(report.executions(jid)) == 2, report.executions(jid)


class Replacing:
    """Workers that a poison job keeps killing: each dead one (SIGKILL, counted) gets a fresh successor."""

    def __init__(self, fleet: Fleet, n: int, *args: str) -> None:
        self.fleet, self.args = fleet, args
        self.procs = [fleet.worker(*args) for _ in range(n)]
        self.deaths = 0

    def replace_the_dead(self) -> None:
        for i, proc in enumerate(self.procs):
            if not proc.alive():
                assert proc.wait() == -signal.SIGKILL
                self.deaths += 1
                self.procs[i] = self.fleet.worker(*self.args)

    def until(self, predicate: Any, what: str) -> None:
        deadline = time.monotonic() + 60
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.replace_the_dead()
            time.sleep(0.02)


def poison_args(max_rescues: int) -> tuple[str, ...]:
    return ("--queue", "default:8", "--lease-s", LEASE, "--recovery-interval-s", "0.1",
            "--max-rescues", str(max_rescues))


def test_poison_job_fails_after_max_rescues_while_other_jobs_flow(fleet: Fleet, app: App) -> None:
    max_rescues = 2
    # The poison job works a little, then kills its worker, and every job running beside it.
    (poison,) = enqueue(fleet, app, {"sleep_s": 0.2, "die": True}, 1)
    normal = enqueue(fleet, app, {"sleep_s": 0.01}, 100)
    workers = Replacing(fleet, 2, *poison_args(max_rescues))
    workers.until(lambda: app.store.state_of(poison).is_terminal, "the poison job to be given up")
    workers.replace_the_dead()  # the last victim died before its job was given up
    later = enqueue(fleet, app, {"sleep_s": 0.01}, 50)
    wait_until(lambda: settled(app, normal + later), what="the other jobs to finish")

    report = ledger.check(fleet.db, fleet.ledger_dir, expect={poison: "failed"})
    row = report.rows[poison]
    assert row.rescues == max_rescues + 1
    assert len(report.executions(poison)) == max_rescues + 1
    (error,) = app.get(poison).errors
    assert error.type == "minijobs.PoisonJobError" and "giving up" in error.message
    assert all(p.alive() for p in workers.procs), "a poisoned job must not kill workers after it failed"
    assert workers.deaths == max_rescues + 1


def test_jobs_that_shared_a_worker_with_a_poison_job_are_rescued_at_most_once(fleet: Fleet, app: App) -> None:
    # Issue 6 ("collateral poisoning"): the first crash takes down the jobs running beside the
    # poison job, and all of them come back as suspects.  Each suspect then runs alone, so only
    # the poison itself kills workers again and reaches max_rescues; before, jobs claimed beside
    # it again and again were failed as poison pills too.
    max_rescues = 2
    (poison,) = enqueue(fleet, app, {"sleep_s": 0.1, "die": True}, 1)
    innocent = enqueue(fleet, app, {"sleep_s": 0.3}, 30)  # slow enough to be running when the poison strikes
    workers = Replacing(fleet, 2, *poison_args(max_rescues))
    workers.until(lambda: settled(app, [poison, *innocent]), "every job to end")

    report = ledger.check(fleet.db, fleet.ledger_dir, expect={poison: "failed"})
    assert states(app, innocent) == {"succeeded": 30}
    rescued = [i for i in innocent if report.rows[i].rescues]
    assert rescued, "no innocent job ran beside the poison job: the scenario did not happen"
    assert {report.rows[i].rescues for i in rescued} == {1}
    row = report.rows[poison]
    assert (row.state, row.rescues) == ("failed", max_rescues + 1)
    (error,) = app.get(poison).errors
    assert error.type == "minijobs.PoisonJobError"
    runs = report.executions(poison)
    assert len(runs) == workers.deaths == max_rescues + 1
    # Once a suspect, the poison ran alone: nothing else ran in the processes it killed.
    for run in runs[1:]:
        end = report.history.death(run.pid) or float("inf")
        beside = [
            e for job_id in innocent for e in report.executions(job_id)
            if e.pid == run.pid and e.start < end and (e.end is None or e.end > run.start)
        ]
        assert beside == [], f"poison attempt {run.attempt} ran beside {beside}"
