"""Stopping: SIGTERM with short and long jobs, a second SIGTERM, and (process pool) a child SIGKILLed."""

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


@pytest.mark.parametrize("kind", ["async", "thread"])
def test_sigterm_finishes_short_jobs_and_releases_long_ones(fleet: Fleet, app: App, kind: str) -> None:
    grace = 1.0
    victim = fleet.worker("--queue", f"default:20:{kind}", "--grace-s", str(grace))
    short = enqueue(fleet, app, ATASK, {"sleep_s": 0.3}, 5) + enqueue(fleet, app, TASK, {"sleep_s": 0.3}, 5)
    long = (enqueue(fleet, app, ATASK, {"sleep_s": 60, "in_pid": victim.pid}, 5)
            + enqueue(fleet, app, TASK, {"sleep_s": 60, "in_pid": victim.pid}, 5))
    wait_until(lambda: app.store.count_by_state()["running"] == 20, what="20 jobs running")
    started = time.monotonic()
    victim.signal(signal.SIGTERM)
    assert victim.wait() == 0
    took = time.monotonic() - started
    assert took < grace + 3, f"graceful stop took {took:.1f} s with grace_s={grace}"
    assert rows(app, short) == [("succeeded", 1, "0")] * 10, "short jobs finish within the grace period"
    assert rows(app, long) == [("pending", 0, "0")] * 10, "long jobs go back untouched, no attempt used"
    assert "unwritten" not in victim.stderr

    fleet.worker("--queue", "default:20")
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
