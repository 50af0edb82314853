"""Correctness of the store's fast paths (schema v2 index, batched finish, bulk enqueue, claim decoding).

The speed itself is measured by ``python3 -m benchmarks``, never here; these
tests pin down that the faster code paths keep the same observable behaviour.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import minijobs
from minijobs.store import MIGRATIONS


def _index_sql(path: Path, name: str) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT sql FROM sqlite_master WHERE name=?", (name,)).fetchone()[0]
    finally:
        conn.close()


def test_v1_database_migrates_finished_index_and_keeps_rows(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    app = minijobs.App(db)

    @app.job
    async def work(n: int) -> int:
        return n

    refs = [work.enqueue(i) for i in range(3)]
    assert app.drain() == 3
    app.close()
    # Put the file back to schema v1 as an older minijobs left it.
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP INDEX minijobs_jobs_finished")
    conn.execute(
        "CREATE INDEX minijobs_jobs_finished ON minijobs_jobs (completed_at) "
        "WHERE state IN ('succeeded', 'failed', 'cancelled')"
    )
    conn.execute("UPDATE minijobs_schema SET version=1 WHERE component='minijobs'")
    conn.close()

    app = minijobs.App(db)
    assert app.store.schema_version("minijobs") == len(MIGRATIONS) >= 2
    assert "completed_at IS NOT NULL" in _index_sql(db, "minijobs_jobs_finished")
    assert [app.get(r.id).result for r in refs] == [0, 1, 2]
    plan = app.store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM minijobs_jobs "
        "WHERE state IN ('succeeded', 'failed', 'cancelled') AND completed_at < ?",
        (1e12,),
    ).fetchall()
    assert any("minijobs_jobs_finished" in row[-1] for row in plan)
    assert app.store.prune(before=1e12) == 3
    app.close()


def test_finished_index_holds_exactly_the_terminal_rows(tmp_path: Path) -> None:
    app = minijobs.App(tmp_path / "jobs.sqlite3")

    @app.job(max_attempts=2)
    async def flaky() -> None:
        raise ValueError("boom")

    @app.job
    async def fine() -> None:
        return None

    ok = fine.enqueue()
    retried = flaky.enqueue()
    cancelled = fine.options(delay_s=3600).enqueue()
    app.cancel(cancelled.id)
    app.drain()  # flaky fails once and waits for its backoff: retrying, completed_at cleared
    rows = dict(app.store._conn.execute("SELECT id, completed_at IS NOT NULL FROM minijobs_jobs").fetchall())
    states = {ref.id: app.get(ref.id).state for ref in (ok, retried, cancelled)}
    assert states[retried.id] is minijobs.JobState.RETRYING
    for job_id, state in states.items():
        assert bool(rows[job_id]) == state.is_terminal, (job_id, state)
    app.retry(ok.id)
    assert app.store._conn.execute("SELECT completed_at FROM minijobs_jobs WHERE id=?", (ok.id,)).fetchone() == (None,)
    app.close()
