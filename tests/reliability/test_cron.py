"""Cron across processes: a simulated day on three workers, the leader SIGKILLed at noon."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from . import ledger
from .harness import Fleet, wait_until

pytestmark = pytest.mark.slow

T0 = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
STEP_S = 60.0  # simulated seconds per tick of the shared clock
TICK_REAL_S = 0.006


def set_clock(path: Path, value: float) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(repr(value))
    os.replace(tmp, path)  # readers never see a half-written number


def leader(db: Path) -> str | None:
    """The worker leading the cron plugin's election (each leader-scoped plugin has its own)."""
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT owner FROM minijobs_leadership WHERE name='minijobs.cron'").fetchone()
    except sqlite3.OperationalError:
        return None  # table not created yet
    finally:
        conn.close()
    return None if row is None else row[0]


def test_cron_day_on_three_processes_with_the_leader_killed_midway(fleet: Fleet, tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    now = T0 - STEP_S
    set_clock(clock, now)
    # Job leases of an hour of simulated time: jobs take milliseconds, and only the killed
    # leader's jobs may legitimately expire.  Leadership lease of 10 minutes < the 30-minute slots.
    args = ("--queue", "default:4", "--shared-clock", str(clock), "--cron", "*/30 * * * *",
            "--leader-lease-s", "600", "--lease-s", "3600", "--recovery-interval-s", "60")
    workers = [fleet.worker(*args) for _ in range(3)]
    by_id = {w.worker_id: w for w in workers}
    wait_until(lambda: leader(fleet.db) in by_id, what="a leader to be elected")

    killed = None
    while now < T0 + 86_400 - STEP_S:
        now += STEP_S
        set_clock(clock, now)
        if killed is None and now >= T0 + 12 * 3600 + 10 * 60:  # 12:10, between two slots
            killed = by_id[leader(fleet.db)]
            killed.kill()
        time.sleep(TICK_REAL_S)  # real time for the processes to react to this simulated minute
    assert killed is not None

    def cron_jobs() -> dict[int, ledger.Row]:
        return {i: r for i, r in ledger.read_rows(fleet.db).items() if r.meta.get("cron") == "rel"}

    wait_until(lambda: len(cron_jobs()) == 48 and all(r.state == "succeeded" for r in cron_jobs().values()),
               timeout_s=30, what="48 cron jobs to succeed")
    new_leader = leader(fleet.db)
    assert new_leader in by_id and by_id[new_leader] is not killed

    fleet.ledger.ack(cron_jobs())  # the slots are the acknowledgement: each must be done exactly once
    report = ledger.check(fleet.db, fleet.ledger_dir, slot_of=lambda row: (row.meta.get("cron"), row.meta.get("slot")))
    slots = sorted(r.meta["slot"] for r in report.rows.values() if r.meta.get("cron") == "rel")
    expected = [datetime.fromtimestamp(T0 + i * 1800, UTC).isoformat() for i in range(48)]
    assert slots == expected, "a slot was missed or doubled"
    assert not any(r.meta.get("catch_up") for r in report.rows.values()), "no slot may need a catch-up"
    assert all(w.alive() for w in workers if w is not killed)
