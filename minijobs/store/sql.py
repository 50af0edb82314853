"""Every statement the SQLite store runs on jobs, queues, leadership and cron slots, named.

One module holds the SQL text so that a reader finds a query by its name, a
change to the schema is checked against every statement in one file, and a
second backend (PostgreSQL) knows exactly which queries it must provide: one
per name here, behind the verbs of :class:`minijobs.store.Store`.  Only
:mod:`minijobs.store.sqlite` imports this module.  Connection set-up pragmas
live with the connection (``SQLiteStore._configure``).

Parameters are plain ``?`` bound in order, or ``:name`` bound from a mapping.
Numbered ones (``?7``) bound from a sequence make Python 3.12+ warn, so a
value used twice is passed twice.
"""

from __future__ import annotations

#: Schema of the core tables; each entry migrates from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE minijobs_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
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
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX minijobs_jobs_runnable ON minijobs_jobs (queue, priority DESC, id, scheduled_at)
        WHERE state IN ('pending', 'retrying');
    CREATE INDEX minijobs_jobs_leases ON minijobs_jobs (lease_expires_at) WHERE state = 'running';
    CREATE INDEX minijobs_jobs_owner ON minijobs_jobs (lease_owner) WHERE state = 'running';
    CREATE INDEX minijobs_jobs_finished ON minijobs_jobs (completed_at)
        WHERE state IN ('succeeded', 'failed', 'cancelled');
    CREATE UNIQUE INDEX minijobs_jobs_unique_live ON minijobs_jobs (unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('pending', 'running', 'retrying');
    CREATE TABLE minijobs_queues (
        name TEXT PRIMARY KEY,
        paused INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    """,
    # v2: SQLite evaluates a partial index's WHERE on every UPDATE that changes a column it
    # names, and an IN list of three or more constants is built as a temporary b-tree each
    # time: ``state IN ('succeeded', 'failed', 'cancelled')`` cost ~5 us per claim and per
    # finish.  Finished rows are exactly those with ``completed_at`` set (retrying, released
    # and re-run jobs get it cleared), and any ``completed_at`` comparison in a query lets
    # the planner use an ``IS NOT NULL`` partial index.
    """
    DROP INDEX minijobs_jobs_finished;
    CREATE INDEX minijobs_jobs_finished ON minijobs_jobs (completed_at) WHERE completed_at IS NOT NULL;
    """,
    # v3: runnable suspects (jobs rescued from a dead worker, see ``CLAIM``) in claim order, so
    # each claim finds the first one with one probe of a (nearly always empty) index.  Normal rows
    # stop at ``rescues > 0`` when a claim or a finish evaluates the WHERE: no index write for them.
    """
    CREATE INDEX minijobs_jobs_suspects ON minijobs_jobs (queue, priority DESC, id)
        WHERE rescues > 0 AND state IN ('pending', 'retrying');
    """,
    # v4: without AUTOINCREMENT.  AUTOINCREMENT writes the sqlite_sequence page on every insert,
    # a third page in each enqueue's commit (~8 us of a ~40 us enqueue).  A plain rowid table
    # gives a new row max(id) + 1, so ids would be reused once the newest job is deleted:
    # SQLiteStore.prune never deletes the row with the highest id, and this rebuild keeps the
    # old high-water mark by writing a placeholder row (a cancelled job named
    # ``minijobs.id_placeholder``) at ``sqlite_sequence.seq`` when the newest jobs were already
    # pruned.  The placeholder is an ordinary finished job: it is pruned once newer jobs exist.
    # SQLite cannot drop AUTOINCREMENT in place; the table is rebuilt in this one transaction.
    """
    CREATE TABLE minijobs_jobs_v4 (
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
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO minijobs_jobs_v4 (
        id, name, queue, payload, state, priority, attempts, max_attempts, timeout_s, scheduled_at, created_at,
        started_at, completed_at, result, errors, progress, meta, unique_key, lease_owner, lease_expires_at,
        rescues, cancel_requested
    ) SELECT
        id, name, queue, payload, state, priority, attempts, max_attempts, timeout_s, scheduled_at, created_at,
        started_at, completed_at, result, errors, progress, meta, unique_key, lease_owner, lease_expires_at,
        rescues, cancel_requested
    FROM minijobs_jobs ORDER BY id;
    INSERT INTO minijobs_jobs_v4 (id, name, queue, payload, state, scheduled_at, created_at, completed_at,
                                  cancel_requested, meta)
        SELECT seq, 'minijobs.id_placeholder', 'default', '{"args":[],"kwargs":{}}', 'cancelled',
               t.now, t.now, t.now, 1, '{"minijobs":"keeps job ids from being reused (schema v4)"}'
        FROM sqlite_sequence, (SELECT (julianday('now') - 2440587.5) * 86400.0 AS now) AS t
        WHERE name = 'minijobs_jobs' AND seq > (SELECT coalesce(max(id), 0) FROM minijobs_jobs);
    DROP TABLE minijobs_jobs;
    ALTER TABLE minijobs_jobs_v4 RENAME TO minijobs_jobs;
    CREATE INDEX minijobs_jobs_runnable ON minijobs_jobs (queue, priority DESC, id, scheduled_at)
        WHERE state IN ('pending', 'retrying');
    CREATE INDEX minijobs_jobs_leases ON minijobs_jobs (lease_expires_at) WHERE state = 'running';
    CREATE INDEX minijobs_jobs_owner ON minijobs_jobs (lease_owner) WHERE state = 'running';
    CREATE INDEX minijobs_jobs_finished ON minijobs_jobs (completed_at) WHERE completed_at IS NOT NULL;
    CREATE UNIQUE INDEX minijobs_jobs_unique_live ON minijobs_jobs (unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('pending', 'running', 'retrying');
    CREATE INDEX minijobs_jobs_suspects ON minijobs_jobs (queue, priority DESC, id)
        WHERE rescues > 0 AND state IN ('pending', 'retrying');
    """,
    # v5: jobs scheduled ahead (delays, retry backoff) are kept out of the runnable index, or
    # every claim and every idle wake-up walks all of them: ``waiting = 1`` marks a runnable
    # row written with ``scheduled_at`` in the future, and the claim first promotes the due
    # ones of its queue (``waiting = 0``) through their own index on ``(queue, scheduled_at)``.
    # A wrong flag is only slower, never wrong: the claim still checks ``scheduled_at``.
    # Runnable rows already scheduled ahead (by the wall clock) start out waiting; the old
    # runnable index finds them, so they are flagged before it is dropped.
    """
    ALTER TABLE minijobs_jobs ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
    UPDATE minijobs_jobs SET waiting = 1
        WHERE state IN ('pending', 'retrying') AND scheduled_at > (julianday('now') - 2440587.5) * 86400.0;
    DROP INDEX minijobs_jobs_runnable;
    CREATE INDEX minijobs_jobs_runnable ON minijobs_jobs (queue, priority DESC, id, scheduled_at)
        WHERE state IN ('pending', 'retrying') AND waiting = 0;
    CREATE INDEX minijobs_jobs_waiting ON minijobs_jobs (queue, scheduled_at) WHERE waiting = 1;
    """,
)

JOB_COLUMNS = (
    "id, name, queue, payload, state, priority, attempts, max_attempts, timeout_s, scheduled_at, created_at, "
    "started_at, completed_at, result, errors, progress, meta, unique_key, rescues, cancel_requested, lease_owner"
)


RUNNABLE = "state IN ('pending', 'retrying')"
#: Due waiting rows promoted per claim at most, so that one claim never does unbounded work
#: (a million jobs falling due at once are promoted over many claims, earliest first).
PROMOTE_LIMIT = 1000


#: Parameters in :class:`~minijobs.store.NewJob` field order.
INSERT = (
    "INSERT INTO minijobs_jobs (name, queue, payload, state, priority, max_attempts, timeout_s, scheduled_at, "
    "created_at, unique_key, meta, waiting) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_RETURNING = INSERT + " RETURNING id"
INSERT_FROM_JSON = (
    "INSERT INTO minijobs_jobs (name, queue, payload, state, priority, max_attempts, timeout_s, scheduled_at, "
    "created_at, unique_key, meta, waiting) "
    "SELECT ?, ?, value, 'pending', ?, ?, ?, ?, ?, NULL, ?, ? FROM json_each(?)"
)
INSERT_IF_FREE = INSERT + " ON CONFLICT DO NOTHING"
INSERT_UNIQUE = INSERT_IF_FREE + " RETURNING id"

#: Whether a job of the queue is due but still waiting: one seek in the waiting index.
DUE_WAITING = "SELECT 1 FROM minijobs_jobs WHERE queue=:queue AND waiting=1 AND scheduled_at <= :now LIMIT 1"
PAUSED = "SELECT 1 FROM minijobs_queues WHERE name=:queue AND paused=1"
#: A claim takes nothing from a paused queue, and nothing while a due job still waits, so that it
#: is promoted and competes on priority.  Both are checked in LIMIT, where SQLite evaluates them
#: once before the scan; in WHERE they would run on every row (a paused queue with a backlog
#: cost a walk over all of it on every claim).
CLAIM_LIMIT = f"CASE WHEN EXISTS ({PAUSED}) OR EXISTS ({DUE_WAITING}) THEN 0 ELSE :limit END"
CLAIM_LIMIT_PROMOTED = f"CASE WHEN EXISTS ({PAUSED}) THEN 0 ELSE :limit END"
PROMOTE = f"""
UPDATE minijobs_jobs SET waiting=0
WHERE id IN (
    SELECT id FROM minijobs_jobs WHERE queue=:queue AND waiting=1 AND scheduled_at <= :now LIMIT {PROMOTE_LIMIT}
)
"""

#: The first due suspect of ``:queue`` in claim order, as ``(priority, -id)``: a row value that
#: compares like the claim order, reversed.  Forced onto the suspects index: the runnable index
#: also fits the query, and would scan the whole backlog of a queue without suspects.
FIRST_SUSPECT = f"""
SELECT priority, -id FROM minijobs_jobs INDEXED BY minijobs_jobs_suspects
WHERE queue=:queue AND rescues > 0 AND {RUNNABLE} AND scheduled_at <= :now
ORDER BY priority DESC, id LIMIT 1
"""

#: The first due job of ``:queue`` in claim order, suspect or not.
FIRST_DUE = f"""
SELECT id FROM minijobs_jobs
WHERE queue=:queue AND {RUNNABLE} AND waiting=0 AND scheduled_at <= :now
ORDER BY priority DESC, id LIMIT 1
"""

# A suspect (rescues > 0: it was running when a worker died, and may be what killed it) runs
# alone.  The claim takes the due jobs before the first suspect, in claim order; the suspect
# itself only when it comes first and the caller's executor is ``:idle``, and then alone (every
# other candidate comes after it).  Both subqueries are uncorrelated, so SQLite runs each at
# most once per claim; without suspects the first finds an empty index and ``coalesce`` lets
# every row through without evaluating the second.
CLAIM = f"""
UPDATE minijobs_jobs
SET state='running', attempts=attempts+1, started_at=:now, lease_owner=:owner, lease_expires_at=:expires
WHERE id IN (
    SELECT id FROM minijobs_jobs
    WHERE queue=:queue AND {RUNNABLE} AND waiting=0 AND scheduled_at <= :now
      AND (coalesce((priority, -id) > ({FIRST_SUSPECT}), 1)
           OR (:idle AND rescues > 0 AND id = ({FIRST_DUE})))
    ORDER BY priority DESC, id
    LIMIT {CLAIM_LIMIT}
)
RETURNING {JOB_COLUMNS}
"""
#: The claim right after a promotion: more due jobs may still wait (a promotion is bounded),
#: and they must not hold back the ones just promoted.
CLAIM_PROMOTED = CLAIM.replace(CLAIM_LIMIT, CLAIM_LIMIT_PROMOTED)

FINISH_PLAIN = """
UPDATE minijobs_jobs
SET state=?, result=?, completed_at=?, lease_owner=NULL, lease_expires_at=NULL
WHERE id=? AND lease_owner=? AND attempts=? AND state='running'
"""

# A job sent back to its queue for later (retry backoff) is written waiting.  The attempt's start
# stands in for now: only a zero delay can schedule it no later, and a due row flagged waiting
# costs just its promotion.
# Bound with the values used twice passed twice (see ``INSERT``): state, result, error, error,
# scheduled_at, completed_at, progress, state, scheduled_at, id, owner, attempt.
FINISH = """
UPDATE minijobs_jobs
SET state=?, result=?,
    errors=CASE WHEN ? IS NULL THEN errors ELSE json_insert(errors, '$[#]', json(?)) END,
    scheduled_at=COALESCE(?, scheduled_at), completed_at=?, progress=COALESCE(?, progress),
    lease_owner=NULL, lease_expires_at=NULL,
    waiting=(? IN ('pending', 'retrying') AND COALESCE(?, scheduled_at) > started_at)
WHERE id=? AND lease_owner=? AND attempts=? AND state='running'
"""


# -- schema versions -----------------------------------------------------------

SCHEMA_TABLE_EXISTS = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='minijobs_schema'"
CREATE_SCHEMA_TABLE = "CREATE TABLE IF NOT EXISTS minijobs_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
SCHEMA_VERSION = "SELECT version FROM minijobs_schema WHERE component=?"
SET_SCHEMA_VERSION = (
    "INSERT INTO minijobs_schema (component, version) VALUES (?, ?) "
    "ON CONFLICT (component) DO UPDATE SET version=excluded.version"
)

# -- transactions --------------------------------------------------------------

BEGIN_WRITE = "BEGIN IMMEDIATE"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"
SAVEPOINT_FINISH = "SAVEPOINT minijobs_finish"
RELEASE_FINISH = "RELEASE minijobs_finish"
ROLLBACK_TO_FINISH = "ROLLBACK TO minijobs_finish"

# -- enqueue -------------------------------------------------------------------

#: The highest job id (NULL for an empty table): one seek to the end of the rowid b-tree.
MAX_ID = "SELECT max(id) FROM minijobs_jobs"
#: The payloads of the first and last row of a bulk insert, to check that ids follow the input order.
PAYLOADS_AT = "SELECT payload FROM minijobs_jobs WHERE id IN (?, ?) ORDER BY id"
#: The live job holding a unique key.
UNIQUE_HOLDER = "SELECT id FROM minijobs_jobs WHERE unique_key=? AND state IN ('pending','running','retrying')"

# -- attempts ------------------------------------------------------------------

#: ``errors`` is replaced, not appended to: it may be the damaged column.
FAIL_DAMAGED = (
    "UPDATE minijobs_jobs SET state='failed', completed_at=?, errors=json_array(json(?)), "
    "lease_owner=NULL, lease_expires_at=NULL WHERE id=? AND lease_owner=? AND state='running'"
)
RELEASE = (
    "UPDATE minijobs_jobs SET state=CASE WHEN attempts > 1 THEN 'retrying' ELSE 'pending' END, "
    "attempts=attempts-1, scheduled_at=?, lease_owner=NULL, lease_expires_at=NULL, progress=NULL "
    "WHERE id=? AND lease_owner=? AND state='running'"
)
RENEW_LEASES = "UPDATE minijobs_jobs SET lease_expires_at=? WHERE lease_owner=? AND state='running'"
HELD_LEASES = "SELECT id, cancel_requested FROM minijobs_jobs WHERE lease_owner=? AND state='running'"
CANCEL_REQUESTED = "SELECT id FROM minijobs_jobs WHERE lease_owner=? AND state='running' AND cancel_requested=1"
#: Bound as (payload, meta, id, owner, attempt).
SET_ARGUMENTS = (
    "UPDATE minijobs_jobs SET payload=?, meta=? WHERE id=? AND lease_owner=? AND attempts=? AND state='running'"
)
SET_PROGRESS = "UPDATE minijobs_jobs SET progress=? WHERE id=? AND lease_owner=? AND attempts=? AND state='running'"
FIRST_DUE_WITH_RESCUES = f"SELECT id, rescues FROM minijobs_jobs WHERE id = ({FIRST_DUE})"


def next_due(queue_count: int, *, after: bool) -> str:
    """Earliest ``scheduled_at`` of a runnable job in queues ``:q0``..``:qN`` (later than ``:after``).

    Waiting jobs take one seek per queue in their index (the paused check
    comes first, or a paused queue's waiting rows would all be read).
    """
    marks = ",".join(f":q{n}" for n in range(queue_count))
    later = " AND scheduled_at > :after" if after else ""
    waiting = "".join(
        f" UNION ALL SELECT (SELECT min(scheduled_at) FROM minijobs_jobs WHERE waiting=1 AND queue=:q{n}{later}) "
        f"WHERE NOT EXISTS (SELECT 1 FROM minijobs_queues WHERE name=:q{n} AND paused=1)"
        for n in range(queue_count)
    )
    return (
        f"SELECT min(t) FROM (SELECT min(scheduled_at) AS t FROM minijobs_jobs "
        f"WHERE {RUNNABLE} AND waiting=0 AND queue IN ({marks}){later} "
        f"AND queue NOT IN (SELECT name FROM minijobs_queues WHERE paused=1){waiting})"
    )


# -- one job -------------------------------------------------------------------

GET_JOB = f"SELECT {JOB_COLUMNS} FROM minijobs_jobs WHERE id=?"
JOB_STATE = "SELECT state FROM minijobs_jobs WHERE id=?"
CANCEL_RUNNABLE = (
    "UPDATE minijobs_jobs SET state='cancelled', completed_at=?, cancel_requested=1, waiting=0 WHERE id=?"
)
FLAG_CANCEL = "UPDATE minijobs_jobs SET cancel_requested=1 WHERE id=?"
RETRY = (
    "UPDATE minijobs_jobs SET state='pending', scheduled_at=?, completed_at=NULL, cancel_requested=0, "
    "max_attempts=max(max_attempts, attempts + 1), waiting=0 WHERE id=?"
)

# -- reads ---------------------------------------------------------------------


def list_jobs(*, state_count: int, by_queue: bool, by_name: bool) -> str:
    """Jobs in ``state_count`` states (``?`` each), of a queue and a name if asked, newest first; then LIMIT, OFFSET."""
    where: list[str] = []
    if state_count:
        where.append(f"state IN ({','.join('?' * state_count)})")
    if by_queue:
        where.append("queue = ?")
    if by_name:
        where.append("name = ?")
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    return f"SELECT {JOB_COLUMNS} FROM minijobs_jobs {clause}ORDER BY id DESC LIMIT ? OFFSET ?"


COUNT_BY_STATE = "SELECT state, count(*) FROM minijobs_jobs GROUP BY state"
COUNT_BY_STATE_IN_QUEUE = "SELECT state, count(*) FROM minijobs_jobs WHERE queue=? GROUP BY state"
COUNT_BY_QUEUE = "SELECT queue, state, count(*) FROM minijobs_jobs GROUP BY queue, state"
#: Served by the ``completed_at`` index of finished jobs.
FINISHED_PER_BUCKET = (
    "SELECT CAST((completed_at - ?) / ? AS INTEGER) AS bucket, state, count(*) FROM minijobs_jobs "
    "WHERE state IN ('succeeded', 'failed', 'cancelled') AND completed_at >= ? "
    "GROUP BY bucket, state ORDER BY bucket"
)
OLDEST_DUE = (
    f"SELECT min(t) FROM (SELECT min(scheduled_at) AS t FROM minijobs_jobs "
    f"WHERE {RUNNABLE} AND waiting=0 AND scheduled_at <= :now "
    "UNION ALL SELECT min(scheduled_at) FROM minijobs_jobs WHERE waiting=1 AND scheduled_at <= :now)"
)

# -- queues --------------------------------------------------------------------

SET_PAUSED = (
    "INSERT INTO minijobs_queues (name, paused) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET paused=excluded.paused"
)
PAUSED_QUEUES = "SELECT name FROM minijobs_queues WHERE paused=1"

# -- maintenance ---------------------------------------------------------------

EXPIRED_LEASES = (
    "SELECT id, rescues, attempts, lease_owner FROM minijobs_jobs WHERE state='running' AND lease_expires_at < ? "
    "ORDER BY lease_expires_at LIMIT ?"
)
POISON = (
    "UPDATE minijobs_jobs SET state='failed', completed_at=?, rescues=rescues+1, "
    "errors=json_insert(errors, '$[#]', json(?)), lease_owner=NULL, lease_expires_at=NULL WHERE id=?"
)
RESCUE = (
    "UPDATE minijobs_jobs SET state='retrying', scheduled_at=?, rescues=rescues+1, "
    "max_attempts=max(max_attempts, attempts + 1), lease_owner=NULL, lease_expires_at=NULL WHERE id=?"
)


def prune(*, state_count: int, by_queue: bool, excluded_count: int) -> str:
    """Delete finished jobs completed before ``?`` in ``state_count`` states, never the highest id; ``?`` LIMIT last.

    The job with the highest id stays: the table has no AUTOINCREMENT (schema
    v4), so deleting the newest row would hand its id to the next job.
    """
    marks = ",".join("?" * state_count)
    sql = (
        "DELETE FROM minijobs_jobs WHERE id IN (SELECT id FROM minijobs_jobs WHERE "
        f"state IN ('succeeded', 'failed', 'cancelled') AND completed_at < ? AND state IN ({marks}) "
        "AND id < (SELECT max(id) FROM minijobs_jobs)"
    )
    if by_queue:
        sql += " AND queue = ?"
    if excluded_count:
        sql += f" AND queue NOT IN ({','.join('?' * excluded_count)})"
    return sql + " LIMIT ?)"


CHECKPOINT = {mode: f"PRAGMA wal_checkpoint({mode})" for mode in ("PASSIVE", "FULL", "RESTART", "TRUNCATE")}
CHECK_PRAGMAS = {"quick": "PRAGMA quick_check", "full": "PRAGMA integrity_check"}
#: Answered from the connection's own memory (no disk read, no lock): cheap to poll.
DATA_VERSION = "PRAGMA data_version"

# -- leadership (minijobs.leadership) --------------------------------------------

LEADERSHIP_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE minijobs_leadership (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        term INTEGER NOT NULL,
        acquired_at REAL NOT NULL,
        renewed_at REAL NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID
    """,
    # Rows are now named after the leader-scoped plugin they elect for.  The shared row goes, and
    # the version bump makes a process of an older minijobs refuse this file rather than keep
    # electing one leader for everything beside workers that elect per plugin.
    "DELETE FROM minijobs_leadership WHERE name = 'leader'",
)

#: Acquire or renew in one statement, so two processes never both win a term.  Right-hand sides
#: of SET see the row as it was, so the CASEs compare against the old owner.
ACQUIRE_LEADERSHIP = """
INSERT INTO minijobs_leadership (name, owner, term, acquired_at, renewed_at, expires_at)
VALUES (:name, :owner, 1, :now, :now, :expires)
ON CONFLICT (name) DO UPDATE SET
    owner = excluded.owner,
    term = CASE WHEN owner = excluded.owner THEN term ELSE term + 1 END,
    acquired_at = CASE WHEN owner = excluded.owner THEN acquired_at ELSE excluded.acquired_at END,
    renewed_at = excluded.renewed_at,
    expires_at = excluded.expires_at
WHERE owner = excluded.owner OR expires_at <= excluded.renewed_at
RETURNING term
"""
LEADERSHIP_LEASES = "SELECT name, owner, term, acquired_at, renewed_at, expires_at FROM minijobs_leadership"
RESIGN_LEADERSHIP = (
    "UPDATE minijobs_leadership SET expires_at = :now "
    "WHERE name = :name AND owner = :owner AND term = :term AND expires_at > :now"
)

# -- cron slots (minijobs.cron) ----------------------------------------------------

CRON_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE minijobs_cron_slots (
        schedule TEXT NOT NULL,
        slot INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('baseline', 'enqueued', 'skipped')),
        recorded_at REAL NOT NULL,
        PRIMARY KEY (schedule, slot)
    ) WITHOUT ROWID
    """,
)
CRON_LAST_SLOTS = "SELECT schedule, max(slot) FROM minijobs_cron_slots GROUP BY schedule"
#: The primary key makes a slot recordable once: whoever records it first fires it.
CRON_RECORD_SLOT = (
    "INSERT INTO minijobs_cron_slots (schedule, slot, kind, recorded_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (schedule, slot) DO NOTHING"
)
#: Old slots go, but each schedule keeps its latest row: it is where the schedule resumes.
CRON_PRUNE_SLOTS = (
    "DELETE FROM minijobs_cron_slots WHERE slot < ? AND slot < "
    "(SELECT max(t.slot) FROM minijobs_cron_slots AS t WHERE t.schedule = minijobs_cron_slots.schedule)"
)
