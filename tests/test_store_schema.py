"""Job ids are never reused, and the schema v4 rebuild (no AUTOINCREMENT) keeps every row and index.

Without AUTOINCREMENT SQLite gives a new row ``max(id) + 1``: deleting the
newest job would hand its id to the next one, and a stale :class:`JobRef`
would then find a different job.  These tests delete everything that can be
deleted and check that ids keep growing, on new files and on files migrated
from schema v2.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import minijobs
from minijobs import JobNotFoundError, JobState, StoreError
from minijobs.plugins import Pruner, prune
from minijobs.store import MIGRATIONS
from minijobs.store.sqlite import _split_sql
from minijobs.testing import FakeClock

FAR_FUTURE = 4e9  # year 2096: after any test job, still a valid datetime


def _v2_database(path: Path, rows: list[dict[str, Any]], *, delete_ids: tuple[int, ...] = ()) -> None:
    """A file as minijobs with schema v2 left it: the AUTOINCREMENT table, ``rows`` inserted, ``delete_ids`` gone."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE minijobs_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        for script in MIGRATIONS[:2]:
            for statement in _split_sql(script):
                conn.execute(statement)
        conn.execute("INSERT INTO minijobs_schema (component, version) VALUES ('minijobs', 2)")
        for row in rows:
            columns = {"queue": "default", "payload": '{"args":[],"kwargs":{}}', "scheduled_at": 100.0,
                       "created_at": 100.0, **row}
            conn.execute(
                f"INSERT INTO minijobs_jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                tuple(columns.values()),
            )
        for job_id in delete_ids:
            conn.execute("DELETE FROM minijobs_jobs WHERE id=?", (job_id,))
    finally:
        conn.close()


#: One row per state, with the columns each state fills in.
V2_ROWS: list[dict[str, Any]] = [
    {"name": "t.done", "state": "succeeded", "attempts": 1, "started_at": 101.0, "completed_at": 102.0,
     "result": "[1,2]", "meta": '{"tag":"x"}'},
    {"name": "t.bad", "state": "failed", "attempts": 2, "max_attempts": 2, "completed_at": 103.0,
     "errors": '[{"attempt":1,"type":"E","message":"m","traceback":"","at":1.0}]'},
    {"name": "t.run", "state": "running", "attempts": 1, "started_at": 104.0, "lease_owner": "w1",
     "lease_expires_at": 200.0, "timeout_s": 5.0, "progress": '{"done":1,"total":3,"message":null}'},
    {"name": "t.wait", "state": "pending", "priority": 5, "unique_key": "live-key",
     "payload": '{"args":[7],"kwargs":{"k":"v"}}'},
    {"name": "t.again", "state": "retrying", "attempts": 1, "max_attempts": 3, "rescues": 1},
    {"name": "t.stop", "state": "cancelled", "completed_at": 105.0, "cancel_requested": 1},
]


def _table(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _indexes(path: Path) -> dict[str, str]:
    rows = _table(path, "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='minijobs_jobs'")
    return {name: " ".join(sql.split()) for name, sql in rows if sql is not None}


def _jobs_sql(path: Path) -> str:
    ((sql,),) = _table(path, "SELECT sql FROM sqlite_master WHERE type='table' AND name='minijobs_jobs'")
    return str(sql)


def _app(path: Path, **options: Any) -> tuple[minijobs.App, minijobs.JobFunction[..., Any]]:
    app = minijobs.App(path, plugins=[], **options)

    @app.job(name="t.wait")
    def wait(*args: Any, **kwargs: Any) -> None:
        return None

    return app, wait


def test_v2_database_migrates_without_autoincrement_keeping_rows_indexes_and_the_id_high_water_mark(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.sqlite3"
    # Jobs 7-9 existed and were pruned by an older minijobs: sqlite_sequence says 9, max(id) is 6.
    extra = [{"name": "t.done", "state": "succeeded", "completed_at": 106.0}] * 3
    _v2_database(db, V2_ROWS + extra, delete_ids=(7, 8, 9))
    rows_before = _table(db, "SELECT * FROM minijobs_jobs ORDER BY id")
    indexes_before = _indexes(db)
    assert "AUTOINCREMENT" in _jobs_sql(db) and len(indexes_before) == 5

    app, wait = _app(db)
    app.open()
    assert app.store.schema_version("minijobs") == len(MIGRATIONS) == 5
    assert "AUTOINCREMENT" not in _jobs_sql(db)
    indexes_after = _indexes(db)
    assert "rescues > 0" in indexes_after.pop("minijobs_jobs_suspects")  # added by v3, kept by the v4 rebuild
    assert "waiting = 1" in indexes_after.pop("minijobs_jobs_waiting")  # v5
    assert "waiting = 0" in indexes_after.pop("minijobs_jobs_runnable")  # v5
    del indexes_before["minijobs_jobs_runnable"]
    assert indexes_after == indexes_before
    # Every column as it was; v5 appended ``waiting`` (0 here: nothing is scheduled ahead of the wall clock).
    assert _table(db, "SELECT * FROM minijobs_jobs WHERE id <= 6 ORDER BY id") == [(*r, 0) for r in rows_before]
    assert app.store.integrity_check() == ["ok"]
    # The old high-water mark survives as a finished placeholder at id 9.
    placeholder = app.get(9)
    assert (placeholder.name, placeholder.state) == ("minijobs.id_placeholder", JobState.CANCELLED)
    assert [job.id for job in app.jobs(limit=100)] == [9, 6, 5, 4, 3, 2, 1]
    # Old rows read back as they were written; the live unique key still holds.
    assert app.get(1).result == [1, 2] and app.get(1).meta == {"tag": "x"}
    assert app.get(2).errors[0].message == "m"
    assert app.get(3).lease_owner == "w1" and app.get(3).progress is not None
    again = wait.options(unique_key="live-key").enqueue()
    assert (again.id, again.created) == (4, False)
    new = wait.enqueue()
    assert new.id == 10
    def claim() -> list[int]:
        return [job.id for job in app.store.claim("default", 10, owner="w2", now=FAR_FUTURE, lease_s=10)]

    # Priority 5 first, then by id; job 5 was rescued once (a suspect), so it is claimed alone.
    assert (claim(), claim(), claim()) == ([4], [5], [10])
    # The placeholder is an ordinary finished job: pruned once newer jobs exist.
    assert app.store.prune(before=FAR_FUTURE) == 4  # 1, 2, 6 and the placeholder 9
    with pytest.raises(JobNotFoundError):
        app.get(9)
    app.close()


def test_v2_database_whose_newest_job_still_exists_gets_no_placeholder(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    _v2_database(db, V2_ROWS, delete_ids=(2,))
    app, wait = _app(db)
    assert [job.id for job in app.jobs(limit=100)] == [6, 5, 4, 3, 1]
    assert wait.enqueue().id == 7
    app.close()


def test_failed_v4_rebuild_leaves_the_jobs_table_as_it_was(tmp_path: Path) -> None:
    """The rebuild is one transaction: a table of the user's that references jobs makes DROP TABLE fail."""
    db = tmp_path / "jobs.sqlite3"
    _v2_database(db, V2_ROWS)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE audit (job_id INTEGER REFERENCES minijobs_jobs (id))")
    conn.execute("INSERT INTO audit VALUES (1)")
    conn.close()
    rows_before = _table(db, "SELECT * FROM minijobs_jobs ORDER BY id")
    sql_before = _jobs_sql(db)

    with pytest.raises(StoreError, match="migrating minijobs: FOREIGN KEY constraint failed"):
        minijobs.App(db, plugins=[]).open()
    # Each migration is its own transaction: v3 (an index) applied, the v4 rebuild left no trace.
    assert _table(db, "SELECT version FROM minijobs_schema WHERE component='minijobs'") == [(3,)]
    assert _jobs_sql(db) == sql_before
    assert _table(db, "SELECT * FROM minijobs_jobs ORDER BY id") == rows_before
    assert _table(db, "SELECT name FROM sqlite_master WHERE name='minijobs_jobs_v4'") == []


def test_ids_keep_growing_after_pruning_everything_prunable(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    app, wait = _app(db)
    issued: list[int] = []
    for _ in range(3):
        refs = [wait.enqueue(i) for i in range(3)] + app.enqueue_many([wait.prepare(i) for i in range(20)])
        issued += [ref.id for ref in refs]
        assert app.drain() == len(refs)
        while app.store.prune(before=FAR_FUTURE, limit=7):
            pass
        # Everything finished is gone except the newest job, which holds the high-water mark.
        assert [job.id for job in app.jobs(limit=100)] == [issued[-1]]
    assert issued == sorted(issued) and len(set(issued)) == len(issued)
    with pytest.raises(JobNotFoundError):
        app.get(issued[-2])
    app.close()

    # A new connection (another process, a restart) continues from the same mark.
    app, wait = _app(db)
    assert wait.enqueue().id == issued[-1] + 1
    app.close()


def test_pruner_plugin_keeps_the_newest_job_so_ids_are_not_reused(tmp_path: Path) -> None:
    clock = FakeClock()
    app, wait = _app(tmp_path / "jobs.sqlite3", clock=clock)
    refs = app.enqueue_many([wait.prepare(i) for i in range(10)])
    newest = wait.enqueue()
    cancelled = app.cancel(newest.id)  # the newest job is finished too
    assert cancelled.state is JobState.CANCELLED
    app.drain()
    clock.advance(10)
    assert prune(app, Pruner(keep_s=1, batch_size=3)).jobs == len(refs)
    assert [job.id for job in app.jobs()] == [newest.id]
    assert wait.enqueue().id == newest.id + 1
    app.close()
