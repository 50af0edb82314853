"""Pruner: retention by age, state and queue; small batches; plugin cleanup; WAL checkpoints."""

from __future__ import annotations

import asyncio
import os
import queue
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import minijobs
from minijobs import JobState, Plugin, Queue
from minijobs.plugins import Leadership, Pruner, prune
from minijobs.testing import FakeClock

WAIT_S = 10.0


class Notes(Plugin):
    """A plugin with stale rows of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.cleanups = 0

    @classmethod
    def get_identifier(cls) -> str:
        return "tests.notes"

    def cleanup(self, app: minijobs.App) -> int:
        self.cleanups += 1
        return 3


def make_app(db_path: Path, clock: FakeClock, pruner: Pruner, *extra: Plugin) -> tuple[minijobs.App, Any, Any]:
    app = minijobs.App(
        db_path,
        clock=clock,
        queues=[Queue("default"), Queue("reports"), Queue("audit")],
        plugins=[Leadership(), pruner, *extra],
    )

    @app.job(name="ok")
    def ok() -> int:
        return 1

    @app.job(name="bad")
    def bad() -> None:
        raise ValueError("no")

    return app, ok, bad


def surviving(app: minijobs.App, ids: dict[str, int]) -> set[str]:
    present = {job.id for job in app.jobs(limit=1000)}
    return {label for label, job_id in ids.items() if job_id in present}


def test_retention_by_age_state_and_queue(db_path: Path) -> None:
    clock = FakeClock()
    pruner = Pruner(keep_s=100, keep_by_state={"failed": 1000}, keep_by_queue={"reports": 10, "audit": None})
    app, ok, bad = make_app(db_path, clock, pruner)
    ids = {
        "succeeded": ok.enqueue().id,
        "failed": bad.enqueue().id,
        "cancelled": ok.enqueue().id,
        "reports-failed": bad.options(queue="reports").enqueue().id,
        "audit": ok.options(queue="audit").enqueue().id,
        "pending": ok.options(delay_s=10**7).enqueue().id,
    }
    app.cancel(ids["cancelled"])
    app.drain()
    assert app.get(ids["reports-failed"]).state is JobState.FAILED
    clock.advance(50)
    assert prune(app).jobs == 1  # reports keeps finished jobs 10 s, whatever their state
    assert surviving(app, ids) == set(ids) - {"reports-failed"}
    clock.advance(100)
    assert prune(app).jobs == 2  # default retention: 100 s
    assert surviving(app, ids) == {"failed", "audit", "pending"}
    clock.advance(1000)
    assert prune(app).jobs == 1  # failed jobs are kept 1000 s
    clock.advance(10**6)
    assert prune(app).jobs == 0
    assert surviving(app, ids) == {"audit", "pending"}  # audit: kept forever; unfinished jobs are never pruned


def test_one_shot_prune_batches_until_done_and_cleans_plugins(db_path: Path) -> None:
    clock = FakeClock()
    notes = Notes()
    app, ok, _ = make_app(db_path, clock, Pruner(keep_s=10, batch_size=7), notes)
    app.enqueue_many([ok.prepare() for _ in range(50)])
    app.drain()
    clock.advance(5)
    assert prune(app).jobs == 0
    clock.advance(6)
    report = prune(app)
    assert report.jobs == 49 and report.complete  # the newest job stays: it holds the highest id
    assert report.plugins == {"tests.notes": 3} and notes.cleanups == 2
    assert report.checkpoint is not None and len(report.checkpoint) == 3
    assert prune(app, cleanup=False).plugins == {} and notes.cleanups == 2
    # Explicit settings win over the app's Pruner.
    app.enqueue_many([ok.prepare() for _ in range(3)])
    app.drain()
    assert prune(app).jobs == 1  # the previous newest job, no longer the newest
    assert prune(app, Pruner(keep_s=None)).jobs == 0
    clock.advance(1)
    assert prune(app, Pruner(keep_s=0.5)).jobs == 2  # all three but the newest


def test_one_shot_prune_with_a_rule_of_its_own(db_path: Path) -> None:
    clock = FakeClock()
    notes = Notes()
    app, ok, bad = make_app(db_path, clock, Pruner(keep_s=None), notes)  # the app's rules keep everything
    ids = {
        "succeeded": ok.enqueue().id,
        "failed-1": bad.enqueue().id,
        "failed-2": bad.enqueue().id,
        "reports-1": ok.options(queue="reports").enqueue().id,
        "reports-2": ok.options(queue="reports").enqueue().id,
    }
    app.drain()
    ids["pending"] = ok.options(delay_s=10**7).enqueue().id  # the newest: every finished job may go
    clock.advance(100)
    assert prune(app).jobs == 0
    seen: list[int] = []
    report = prune(app, older_than_s=50, states=["failed"], batch_size=1, progress=seen.append, checkpoint=False)
    assert report.jobs == 2 and report.plugins == {"tests.notes": 3} and report.checkpoint is None
    assert seen == [1, 2, 2]  # after each batch: one row, one row, then none left
    assert surviving(app, ids) == set(ids) - {"failed-1", "failed-2"}
    # ``now`` moves the cut-off: 50 s before 30 s after the jobs finished is before any of them.
    at_30_s = clock.datetime() - timedelta(seconds=70)
    assert prune(app, older_than_s=50, now=at_30_s).jobs == 0
    assert prune(app, older_than_s=50, queue="reports", states=[JobState.SUCCEEDED], cleanup=False).jobs == 2
    assert prune(app, older_than_s=0).jobs == 1
    assert surviving(app, ids) == {"pending"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"states": ["failed"]}, "states and queue need older_than_s"),
        ({"queue": "reports"}, "states and queue need older_than_s"),
        ({"older_than_s": -1}, "older_than_s must be a number of seconds >= 0"),
        ({"older_than_s": float("nan")}, "older_than_s must be a number of seconds >= 0"),
        ({"older_than_s": 1, "states": ["pending"]}, "states must be finished states"),
        ({"older_than_s": 1, "states": []}, "states must be finished states"),
        ({"older_than_s": 1, "queue": "bad name"}, "queue name"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"now": datetime(2030, 1, 1)}, "now must be a timezone-aware datetime"),  # naive
    ],
)
def test_one_shot_prune_refuses_bad_rules(db_path: Path, options: dict[str, Any], message: str) -> None:
    app, ok, _ = make_app(db_path, FakeClock(), Pruner(keep_s=1))
    ok.enqueue()
    app.drain()
    with pytest.raises((minijobs.ConfigurationError, minijobs.InvalidNameError), match=message):
        prune(app, **options)
    assert app.counts()[JobState.SUCCEEDED] == 1


class Broken(Plugin):
    """A plugin whose cleanup fails."""

    @classmethod
    def get_identifier(cls) -> str:
        return "tests.broken"

    def cleanup(self, app: minijobs.App) -> int:
        raise RuntimeError("cleanup broke")


def test_a_failing_cleanup_is_logged_or_raised(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notes = Notes()
    app, _, _ = make_app(db_path, FakeClock(), Pruner(), Broken(), notes)
    assert prune(app).plugins == {"tests.notes": 3}  # the others still run
    assert "plugin tests.broken failed in cleanup()" in caplog.text
    with pytest.raises(RuntimeError, match="cleanup broke"):
        prune(app, raise_on_cleanup_error=True)
    assert notes.cleanups == 1


def test_a_pass_stops_at_its_time_budget(db_path: Path) -> None:
    clock = FakeClock()
    pruner = Pruner(keep_s=1, batch_size=7, time_budget_s=1e-9)
    app, ok, _ = make_app(db_path, clock, pruner)
    app.enqueue_many([ok.prepare() for _ in range(20)])
    app.drain()
    clock.advance(2)
    worker = minijobs.Worker(app)
    report = asyncio.run(pruner.prune_async(worker, app))
    assert report.jobs == 7 and not report.complete  # one batch, then out of budget
    assert app.store.count_by_state()[JobState.SUCCEEDED] == 13


def test_the_pruner_runs_on_the_leader_driven_by_the_app_clock(db_path: Path) -> None:
    clock = FakeClock()
    notes = Notes()
    app, ok, _ = make_app(db_path, clock, Pruner(keep_s=60, interval_s=30), notes)
    passes: queue.Queue[minijobs.Event] = queue.Queue()
    app.events.subscribe("pruner.pass", passes.put)
    app.enqueue_many([ok.prepare() for _ in range(5)])
    app.drain()
    with app.running() as worker:
        deadline = time.monotonic() + WAIT_S
        clock.advance(61)
        while True:  # the first pass comes 10 s (app clock) after leadership; move the clock until it runs
            try:
                event = passes.get(timeout=0.1)
                break
            except queue.Empty:
                assert time.monotonic() < deadline, "the pruner never ran"
                clock.advance(10)
        assert worker.is_leader
    assert event.data["jobs"] == 4 and event.data["complete"]  # the newest job stays: it holds the highest id
    assert event.data["plugins"] == {"tests.notes": 3}
    assert app.store.count_by_state()[JobState.SUCCEEDED] == 1


def test_the_wal_is_truncated_when_idle_and_over_the_limit(db_path: Path) -> None:
    clock = FakeClock()
    pruner = Pruner(keep_s=1, wal_truncate_bytes=1)
    app, ok, _ = make_app(db_path, clock, pruner)
    app.enqueue_many([ok.prepare() for _ in range(500)])
    app.drain()
    wal = Path(f"{db_path}-wal")
    busy_wal = wal.stat().st_size
    assert busy_wal > 0
    assert pruner.checkpoint(app, idle=False) is not None and wal.stat().st_size == busy_wal  # passive: no shrink
    clock.advance(2)
    report = prune(app)
    assert report.jobs == 499 and report.checkpoint is not None and report.checkpoint[0] == 0  # newest stays
    assert os.path.getsize(wal) == 0


def test_memory_databases_skip_checkpoints() -> None:
    clock = FakeClock()
    app = minijobs.App(":memory:", clock=clock, plugins=[Leadership(), Pruner()])
    assert prune(app).checkpoint is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keep_s": 0}, "'keep_s' must be > 0"),
        ({"keep_by_state": {"pending": 10}}, "not a finished state"),
        ({"keep_by_queue": {"reports": -1}}, r"'keep_by_queue\.reports' must be > 0 or None"),
        ({"batch_size": 0}, "'batch_size' must be >= 1"),
        ({"time_budget_s": "fast"}, "'time_budget_s' must be a number"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(minijobs.ConfigurationError, match=message):
        Pruner().configure(options)
