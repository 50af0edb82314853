"""Crash scenarios: workers die (SIGKILL), freeze (SIGSTOP) or are killed by their own jobs.

Recovery runs in the surviving workers (``--sweep-every-s``: the core's
``store.recover_expired`` on a timer), exactly as a deployment would run it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from minijobs import App

from . import ledger
from .harness import Fleet, wait_until
from .jobs import ATASK, TASK, build_app

pytestmark = pytest.mark.slow

LEASE = "0.5"


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


def test_sigkill_with_50_running_jobs_recovers_all(fleet: Fleet, app: App) -> None:
    ids = enqueue(fleet, app, {"hang": [1]}, 50)
    victim = fleet.worker("--queue", "default:50", "--lease-s", LEASE)
    wait_until(lambda: running_by(app, victim.worker_id) == 50, what="50 jobs running in the victim")
    wait_until(lambda: sum(len(ledger.read(fleet.ledger_dir).starts(i)) for i in ids) == 50, what="50 starts")
    assert victim.kill() == -signal.SIGKILL

    fleet.worker("--queue", "default:50", "--lease-s", LEASE, "--sweep-every-s", "0.1")
    wait_until(lambda: settled(app, ids), what="all 50 jobs finished after recovery")

    report = ledger.check(fleet.db, fleet.ledger_dir)
    for job_id in ids:
        row = report.rows[job_id]
        assert (row.attempts, row.rescues) == (2, 1), row
        runs = report.executions(job_id)
        assert [r.pid for r in runs][0] == victim.pid and len(runs) == 2
