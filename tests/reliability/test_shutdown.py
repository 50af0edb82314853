"""Stopping: SIGTERM with short and long jobs, a second SIGTERM, and (process pool) a child SIGKILLed."""

from __future__ import annotations

import os
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


@pytest.fixture
def app(fleet: Fleet) -> Iterator[App]:
    app = build_app(fleet.db)
    yield app
    app.close()


def enqueue(fleet: Fleet, app: App, fn: str, plan: dict[str, Any], n: int) -> list[int]:
    refs = app.enqueue_many([app.registry[fn].prepare(plan) for _ in range(n)])
    fleet.ledger.ack(r.id for r in refs)
    return [r.id for r in refs]


def rows(app: App, ids: list[int]) -> list[tuple[str, int, str]]:
    return [(j.state.value, j.attempts, str(len(j.errors))) for j in (app.get(i) for i in ids)]


@pytest.mark.parametrize(("kind", "n"), [("async", 5), ("thread", 5), ("process", 2)])
def test_sigterm_finishes_short_jobs_and_releases_long_ones(fleet: Fleet, app: App, kind: str, n: int) -> None:
    grace = 1.0
    victim = fleet.worker("--queue", f"default:{4 * n}:{kind}", "--grace-s", str(grace))
    # Short sync bodies that ignore cancellation: a body that checks it gives up when the stop begins
    # (it sees current_job().cancelled at once) and is released like the long ones.
    short = enqueue(fleet, app, ATASK, {"sleep_s": 0.3}, n) + enqueue(fleet, app, TASK, {"stubborn_s": 0.3}, n)
    long = (enqueue(fleet, app, ATASK, {"sleep_s": 60, "in_pid": victim.pid}, n)
            + enqueue(fleet, app, TASK, {"sleep_s": 60, "in_pid": victim.pid}, n))
    wait_until(lambda: len(ledger.read(fleet.ledger_dir).executions) == 4 * n, what="every body to start")
    started = time.monotonic()
    victim.signal(signal.SIGTERM)
    assert victim.wait() == 0
    took = time.monotonic() - started
    assert took < grace + 3, f"graceful stop took {took:.1f} s with grace_s={grace}"
    assert rows(app, short) == [("succeeded", 1, "0")] * 2 * n, "short jobs finish within the grace period"
    assert rows(app, long) == [("pending", 0, "0")] * 2 * n, "long jobs go back untouched, no attempt used"
    assert "unwritten" not in victim.stderr

    fleet.worker("--queue", f"default:{4 * n}:{kind}")
    wait_until(lambda: all(app.store.state_of(i).is_terminal for i in long), what="released jobs to rerun")
    report = ledger.check(fleet.db, fleet.ledger_dir)
    assert all(report.rows[i].attempts == 1 for i in long)


@pytest.mark.parametrize("kind", ["async", "thread"])
def test_second_sigterm_stops_at_once(fleet: Fleet, app: App, kind: str) -> None:
    victim = fleet.worker("--queue", f"default:20:{kind}", "--grace-s", "60", "--log-level", "INFO")
    long = (enqueue(fleet, app, ATASK, {"sleep_s": 60, "in_pid": victim.pid}, 5)
            + enqueue(fleet, app, TASK, {"sleep_s": 60, "in_pid": victim.pid}, 5))
    wait_until(lambda: app.store.count_by_state()["running"] == 10, what="10 jobs running")
    victim.signal(signal.SIGTERM)
    wait_until(lambda: "stopping gracefully" in victim.stderr, what="the first SIGTERM to be handled")
    started = time.monotonic()
    victim.signal(signal.SIGTERM)
    assert victim.wait(timeout_s=20) == 0
    took = time.monotonic() - started
    assert took < 5, f"a second SIGTERM must not wait for the 60 s grace period (took {took:.1f} s)"
    assert rows(app, long) == [("pending", 0, "0")] * 10
    fleet.worker("--queue", "default:20")
    wait_until(lambda: all(app.store.state_of(i).is_terminal for i in long), what="released jobs to rerun")
    ledger.check(fleet.db, fleet.ledger_dir)


def test_process_pool_child_sigkilled_fails_only_its_job_which_is_retried(fleet: Fleet, app: App) -> None:
    worker = fleet.worker("--queue", "default:2:process", "--lease-s", "5")
    # Attempt 1 hangs in its child until the test kills that child; attempt 2 just runs.
    (victim,) = [r.id for r in app.enqueue_many([app.registry[TASK].options(max_attempts=2).prepare({"hang": [1]})])]
    fleet.ledger.ack([victim])
    wait_until(lambda: ledger.read(fleet.ledger_dir).starts(victim), what="the job to start in a child")
    child = ledger.read(fleet.ledger_dir).starts(victim)[0].pid
    assert child != worker.pid, "the job must run in a child process"
    others = enqueue(fleet, app, TASK, {"sleep_s": 0.05}, 10)
    fleet.ledger.fault(child, "SIGKILL")
    os.kill(child, signal.SIGKILL)

    wait_until(lambda: all(app.store.state_of(i).is_terminal for i in [victim, *others]), what="all jobs to finish")
    report = ledger.check(fleet.db, fleet.ledger_dir)
    job = app.get(victim)
    assert (job.state.value, job.attempts) == ("succeeded", 2)
    assert "ProcessDiedError" in job.errors[0].type and job.errors[0].attempt == 1
    runs = report.executions(victim)
    assert runs[0].pid == child and runs[1].pid not in (child, worker.pid)
    assert worker.alive()
