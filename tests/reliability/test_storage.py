"""Storage under stress: a full disk, a lock held too long, a reader pinning the WAL, file permissions."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minijobs import App, DatabaseBusyError
from minijobs.store import WAL_SIZE_LIMIT_BYTES

from . import ledger
from .harness import ROOT, Fleet, wait_until
from .jobs import TASK, build_app


@pytest.fixture
def app(fleet: Fleet) -> Iterator[App]:
    app = build_app(fleet.db)
    app.open()
    yield app
    app.close()


def rows_snapshot(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT * FROM minijobs_jobs ORDER BY id").fetchall()
    finally:
        conn.close()


def wal_size(db: Path) -> int:
    try:
        return os.path.getsize(f"{db}-wal")
    except FileNotFoundError:
        return 0


def gated(fleet: Fleet, app: App, gate: Path, n: int, **plan: Any) -> list[int]:
    refs = app.enqueue_many([app.registry[TASK].prepare({"gate": str(gate), **plan}) for _ in range(n)])
    fleet.ledger.ack(r.id for r in refs)
    return [r.id for r in refs]


def running(app: App) -> int:
    return app.store.count_by_state()["running"]


# -- disk full (RLIMIT_FSIZE: writes fail with EFBIG, SIGXFSZ is ignored by Python) --------------


def test_disk_full_during_enqueue_is_a_clear_error_and_writes_nothing(fleet: Fleet, app: App) -> None:
    client = fleet.client()
    assert client.enqueue({}).startswith("OK ")  # the file, its WAL and the client's ledger exist now
    before = rows_snapshot(fleet.db)
    headroom = max(os.path.getsize(fleet.db), wal_size(fleet.db)) + 16 * 1024
    assert client.ask(f"fsize {headroom}") == "OK fsize"
    # 100 jobs of 1 KB need more than 16 KB: the write fails part-way through the transaction.
    answer = client.enqueue({"pad": "x" * 1000}, count=100, many=True)
    assert answer.startswith("ERR StorageFullError ") and "RLIMIT_FSIZE" in answer, answer
    assert client.ask("fsize 1") == "OK fsize"
    answer = client.enqueue({})
    assert answer.startswith("ERR StorageFullError "), answer
    assert client.ask("count") == f"OK {len(before)}", "reads keep working on a full disk"
    assert rows_snapshot(fleet.db) == before, "a failed enqueue must leave no row behind"

    assert client.ask("fsize inf") == "OK fsize"
    assert client.enqueue({"pad": "x" * 1000}, count=100, many=True).startswith("OK ")
    assert len(rows_snapshot(fleet.db)) == len(before) + 100
    ledger.check(fleet.db, fleet.ledger_dir, settled=False)


@pytest.mark.slow
def test_disk_full_during_completion_keeps_outcomes_until_space_returns(
    fleet: Fleet, app: App, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    # Each body records its end before the gate: the ledger must not need the full disk.
    ids = gated(fleet, app, gate, 20, end_before_gate=True)
    worker = fleet.worker("--queue", "default:20")
    wait_until(lambda: sum(e.end is not None for runs in ledger.read(fleet.ledger_dir).executions.values()
                           for e in runs) == 20, what="20 bodies done")
    assert worker.ask("fsize 1") == "OK fsize"
    before = rows_snapshot(fleet.db)
    gate.touch()
    wait_until(lambda: "could not write" in worker.stderr and "RLIMIT_FSIZE" in worker.stderr,
               what="the worker to report the full disk")
    assert worker.alive()
    assert rows_snapshot(fleet.db) == before, "nothing half-written while the disk is full"
    assert ledger.integrity(fleet.db) == ["ok"]

    assert worker.ask("fsize inf") == "OK fsize"
    wait_until(lambda: app.store.count_by_state()["succeeded"] == 20, what="outcomes written once space returned")
    report = ledger.check(fleet.db, fleet.ledger_dir)
    assert all(report.rows[i].attempts == 1 and len(report.executions(i)) == 1 for i in ids)


# -- a lock held past the busy timeout ----------------------------------------------------------------


@pytest.mark.slow
def test_exclusive_lock_past_the_busy_timeout(fleet: Fleet, app: App, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    ids = gated(fleet, app, gate, 10)
    worker = fleet.worker("--queue", "default:10", "--busy-timeout-s", "0.2")
    wait_until(lambda: running(app) == 10, what="10 jobs running")
    client = fleet.client("--busy-timeout-s", "0.2")

    holder = sqlite3.connect(fleet.db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        gate.touch()  # the jobs finish while their outcomes cannot be written
        answer = client.enqueue({})
        assert answer.startswith("ERR DatabaseBusyError ") and "busy timeout" in answer, answer
        wait_until(lambda: "locked" in worker.stderr, what="the worker to hit the lock")
        assert running(app) == 10
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wait_until(lambda: app.store.count_by_state()["succeeded"] == 10, what="the worker to resume")
    assert worker.alive()
    assert client.enqueue({}).startswith("OK ")
    report = ledger.check(fleet.db, fleet.ledger_dir, settled=False)
    assert all(report.rows[i].state == "succeeded" and report.rows[i].attempts == 1 for i in ids)


def test_busy_timeout_error_in_process(tmp_path: Path) -> None:
    app = build_app(tmp_path / "jobs.sqlite3", busy_timeout_s=0.05)
    app.open()
    holder = sqlite3.connect(tmp_path / "jobs.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DatabaseBusyError, match="past the busy timeout"):
            app.registry[TASK].enqueue({})
        assert isinstance(DatabaseBusyError("x"), TimeoutError)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert app.registry[TASK].enqueue({}).id == 1
    app.close()


# -- a reader pinning the WAL ------------------------------------------------------------------------------


@pytest.mark.slow
def test_wal_is_bounded_again_once_a_long_reader_lets_go(fleet: Fleet, app: App) -> None:
    task = app.registry[TASK]
    app.enqueue_many([task.prepare({}) for _ in range(10)])
    worker = fleet.worker("--queue", "default:16")

    def load() -> None:
        # ~20 MB of commits, then the worker's claims and completions of those 500 jobs.
        for _ in range(20):
            refs = app.enqueue_many([task.prepare({"pad": "x" * 40_000}) for _ in range(25)])
            fleet.ledger.ack(r.id for r in refs)
        wait_until(lambda: app.store.count_by_state()["pending"] == 0 and running(app) == 0, what="queue drained")

    reader = sqlite3.connect(fleet.db)
    cursor = reader.execute("SELECT id FROM minijobs_jobs")
    cursor.fetchone()  # an open cursor: its snapshot pins every WAL frame written after it
    try:
        load()
        pinned = wal_size(fleet.db)
        assert pinned > 2 * WAL_SIZE_LIMIT_BYTES, f"the reader should have pinned the WAL ({pinned} bytes)"
    finally:
        cursor.close()
        reader.close()
    load()

    def bounded_after_a_write() -> bool:
        # The WAL is cut back when a writer finds every frame checkpointed and no reader in it; the
        # worker's own reads can overlap the last checkpoints of a busy load (more so on a loaded
        # machine), so the bound is reached at one of the next small writes, not necessarily at once.
        fleet.ledger.ack([app.registry[TASK].enqueue({}).id])
        return wal_size(fleet.db) <= WAL_SIZE_LIMIT_BYTES + 512 * 1024

    wait_until(bounded_after_a_write, interval_s=0.1, what=f"the WAL ({wal_size(fleet.db)} bytes) to be bounded again")
    assert worker.alive()
    ledger.check(fleet.db, fleet.ledger_dir)


# -- permissions -------------------------------------------------------------------------------------------------

_MODES = """
import json, os, sys
os.umask(int(sys.argv[2], 8))
from minijobs import App
kwargs = {} if sys.argv[3] == "default" else {"file_mode": None if sys.argv[3] == "none" else int(sys.argv[3], 8)}
app = App(sys.argv[1], plugins=[], **kwargs)
fn = app.job(name="noop")(lambda: None)
fn.enqueue()
print(json.dumps({s: oct(os.stat(sys.argv[1] + s).st_mode & 0o777) for s in ("", "-wal", "-shm")}))
app.close()
"""


def _modes(path: Path, umask: str, mode: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", _MODES, str(path), umask, mode], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("umask", ["000", "022"])
def test_database_wal_and_shm_are_owner_only_whatever_the_umask(tmp_path: Path, umask: str) -> None:
    assert _modes(tmp_path / "jobs.sqlite3", umask, "default") == {"": "0o600", "-wal": "0o600", "-shm": "0o600"}


def test_file_mode_asked_for_is_applied_exactly(tmp_path: Path) -> None:
    assert _modes(tmp_path / "a.sqlite3", "077", "640") == {"": "0o640", "-wal": "0o640", "-shm": "0o640"}


def test_file_mode_none_leaves_permissions_to_sqlite_and_the_umask(tmp_path: Path) -> None:
    assert _modes(tmp_path / "b.sqlite3", "022", "none") == {"": "0o644", "-wal": "0o644", "-shm": "0o644"}


def test_existing_file_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    path.touch()
    path.chmod(0o640)
    assert _modes(path, "022", "default")[""] == "0o640"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640

