"""Raw ceilings: what SQLite, asyncio and a thread pool do on this machine today, with no minijobs code.

These shared machines drift by ~2x from one day to the next, so an absolute
jobs/s figure says little on its own.  Each throughput figure of the suite is
therefore also given as a fraction of one of these ceilings, measured in the
same run (see ``benchmarks/README.md``), and its target is that fraction.

The SQL ceilings run on a copy of the jobs table as minijobs' schema v5
leaves it (columns and partial indexes), kept here on purpose rather than
created by minijobs: the yardstick stays the same while minijobs' own schema
and statements change, so an A/B comparison of two revisions divides by the
same thing.  Connections get the pragmas the store uses (WAL,
``synchronous=NORMAL`` unless said otherwise, autocommit, busy timeout,
in-memory temp store, WAL size limit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import time
from pathlib import Path

#: The jobs table and its indexes as of minijobs schema v5 (minijobs/store.py MIGRATIONS).
JOBS_SCHEMA = """
CREATE TABLE minijobs_jobs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 1,
    timeout_s REAL,
    scheduled_at REAL NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    result TEXT,
    errors TEXT NOT NULL DEFAULT '[]',
    progress TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    unique_key TEXT,
    lease_owner TEXT,
    lease_expires_at REAL,
    rescues INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    waiting INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX minijobs_jobs_runnable ON minijobs_jobs (queue, priority DESC, id, scheduled_at)
    WHERE state IN ('pending', 'retrying') AND waiting = 0;
CREATE INDEX minijobs_jobs_waiting ON minijobs_jobs (queue, scheduled_at) WHERE waiting = 1;
CREATE INDEX minijobs_jobs_leases ON minijobs_jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX minijobs_jobs_owner ON minijobs_jobs (lease_owner) WHERE state = 'running';
CREATE INDEX minijobs_jobs_finished ON minijobs_jobs (completed_at) WHERE completed_at IS NOT NULL;
CREATE UNIQUE INDEX minijobs_jobs_unique_live ON minijobs_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('pending', 'running', 'retrying');
CREATE INDEX minijobs_jobs_suspects ON minijobs_jobs (queue, priority DESC, id)
    WHERE rescues > 0 AND state IN ('pending', 'retrying');
"""

#: The columns an enqueue writes (the order of minijobs' ``_INSERT``).
INSERT = (
    "INSERT INTO minijobs_jobs (name, queue, payload, state, priority, max_attempts, timeout_s, scheduled_at, "
    "created_at, unique_key, meta, waiting) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)"
)

#: A claim in the spirit of minijobs' ``_CLAIM``: the first due runnable rows by priority and id,
#: leased, with the columns a worker needs read back (no suspect or paused-queue checks).
CLAIM = """
UPDATE minijobs_jobs
SET state='running', attempts=attempts+1, started_at=:now, lease_owner=:owner, lease_expires_at=:expires
WHERE id IN (
    SELECT id FROM minijobs_jobs
    WHERE queue=:queue AND state IN ('pending', 'retrying') AND waiting=0 AND scheduled_at <= :now
    ORDER BY priority DESC, id
    LIMIT :limit
)
RETURNING id, name, payload, priority, attempts, max_attempts, timeout_s, scheduled_at, created_at,
          result, errors, progress, meta, unique_key, rescues, cancel_requested
"""

#: minijobs' ``_FINISH_PLAIN``: a success fenced by owner, attempt and state.
FINISH = """
UPDATE minijobs_jobs
SET state=?, result=?, completed_at=?, lease_owner=NULL, lease_expires_at=NULL
WHERE id=? AND lease_owner=? AND attempts=? AND state='running'
"""

JOB_NAME = "bench.noop"


def connect(path: Path, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A connection set up as minijobs' store sets up its own."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0, cached_statements=256)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise RuntimeError(f"{path}: could not switch to WAL (got {mode!r})")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA journal_size_limit=8388608")
    return conn


def create(path: Path, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    conn = connect(path, synchronous=synchronous)
    conn.executescript(JOBS_SCHEMA)
    return conn


def _row(i: int, now: float) -> tuple[object, ...]:
    return (JOB_NAME, "default", f'{{"args":[{i}],"kwargs":{{}}}}', 0, 1, None, now, now, None, "{}", 0)


def single_row_commits(path: Path, *, rows: int, synchronous: str = "NORMAL") -> float:
    """Rows/s of one INSERT per autocommit statement (each its own commit): an enqueue's floor."""
    conn = create(path, synchronous=synchronous)
    try:
        cur = conn.cursor()
        for i in range(100):  # warm the statement cache and the file, as the enqueue benchmark does
            cur.execute(INSERT, _row(i, time.time()))
        t0 = time.perf_counter()
        for i in range(rows):
            now = time.time()
            cur.execute(INSERT, (JOB_NAME, "default", f'{{"args":[{i}],"kwargs":{{}}}}', 0, 1, None, now, now,
                                 None, "{}", 0))
        return rows / (time.perf_counter() - t0)
    finally:
        conn.close()


def batched_insert(path: Path, *, rows: int, batch: int) -> float:
    """Rows/s of ``executemany`` INSERTs, ``batch`` rows per transaction, rows built in the timed loop."""
    conn = create(path)
    try:
        t0 = time.perf_counter()
        done = 0
        while done < rows:
            size = min(batch, rows - done)
            now = time.time()
            params = [_row(i, now) for i in range(done, done + size)]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT, params)
            conn.execute("COMMIT")
            done += size
        return rows / (time.perf_counter() - t0)
    finally:
        conn.close()


def claim_complete(path: Path, *, rows: int, batch: int) -> float:
    """Rows/s of claim + finish, ``batch`` rows per transaction, over ``rows`` pre-inserted pending rows.

    One transaction per batch: BEGIN IMMEDIATE, the claim (UPDATE ... RETURNING), one fenced
    finish per row (executemany), COMMIT.  minijobs spends two commits per batch (an autocommit
    claim, then a finish transaction), so this is an upper bound for a drain of no-op jobs.
    """
    conn = create(path)
    try:
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, [_row(i, now) for i in range(rows)])
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        owner = "ceiling-worker"
        done = 0
        t0 = time.perf_counter()
        while True:
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            claimed = conn.execute(CLAIM, {"queue": "default", "now": now, "owner": owner, "expires": now + 60,
                                           "limit": batch}).fetchall()
            if not claimed:
                conn.execute("COMMIT")
                break
            done_at = time.time()
            conn.executemany(FINISH, [("succeeded", None, done_at, row[0], owner, row[4]) for row in claimed])
            conn.execute("COMMIT")
            done += len(claimed)
        elapsed = time.perf_counter() - t0
        if done != rows:
            raise RuntimeError(f"claim+complete ceiling finished {done} rows, expected {rows}")
        return rows / elapsed
    finally:
        conn.close()


async def _noop() -> None:
    pass


def asyncio_tasks(*, tasks: int, batch: int) -> float:
    """Tasks/s of creating ``batch`` no-op tasks at a time and awaiting each (one event loop)."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        done = 0
        while done < tasks:
            pending = [loop.create_task(_noop()) for _ in range(min(batch, tasks - done))]
            for task in pending:
                await task
            done += len(pending)
        return tasks / (time.perf_counter() - t0)

    return asyncio.run(main())


def _nothing() -> None:
    pass


def thread_pool(*, calls: int, threads: int, in_flight: int) -> float:
    """Calls/s of ``submit`` + ``result`` of a no-op on a pool of ``threads``, ``in_flight`` at a time."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(_nothing) for _ in range(threads * 4)]:  # start the threads
            future.result()
        t0 = time.perf_counter()
        done = 0
        while done < calls:
            futures = [pool.submit(_nothing) for _ in range(min(in_flight, calls - done))]
            for future in futures:
                future.result()
            done += len(futures)
        return calls / (time.perf_counter() - t0)
