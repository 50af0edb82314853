"""The SQLite implementation of :class:`~minijobs.store.Store`.

One :class:`SQLiteStore` per :class:`~minijobs.App` holds one connection,
shared by the app's threads under a lock.  Writes that read before they write
run in ``BEGIN IMMEDIATE`` (the write lock is taken up front, never upgraded
from a read), and a claim is a single ``UPDATE … RETURNING``, so several
processes may share one file without two of them claiming the same job.
Completion writes are fenced by ``(lease_owner, attempts)``: a worker whose
lease was taken away cannot overwrite a newer attempt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import payload
from ..errors import (
    CorruptDatabaseError,
    DatabaseBusyError,
    DatabaseFileError,
    InvalidStateError,
    JobNotFoundError,
    SchemaVersionError,
    StorageFullError,
    StoreError,
)
from ..job import (
    STATE_BY_VALUE,
    AttemptError,
    Job,
    JobState,
    Progress,
    decode_attempt_errors,
    encode_attempt_error,
    job_from_fields,
)
from . import sql
from .base import (
    CheckpointMode,
    Durability,
    IntegrityCheck,
    LeaseRecord,
    NewJob,
    Outcome,
    PayloadRun,
    SlotKind,
    Store,
)
from .watch import DataVersionWatcher

logger = logging.getLogger(__name__)

#: Findings quoted in the error; SQLite reports up to 100.
_CHECK_LINES_SHOWN = 5

_SQLITE_MAGIC = b"SQLite format 3\x00"

#: The WAL file is cut back to this size whenever it restarts: a long-lived reader makes it grow
#: without bound while it pins old pages, and without a limit the file would keep that size for ever.
WAL_SIZE_LIMIT_BYTES = 8 * 1024 * 1024

#: The schema of each built-in component, by component name (see :meth:`SQLiteStore.migrate_component`).
BUILTIN_SCHEMAS: dict[str, tuple[str, ...]] = {
    "minijobs": sql.MIGRATIONS,
    "minijobs.leadership": sql.LEADERSHIP_MIGRATIONS,
    "minijobs.cron": sql.CRON_MIGRATIONS,
}


#: What decoding a damaged value raises: bad JSON or shapes, and times or numbers out of range.
_UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, IndexError, ArithmeticError)


def _job_from_row(row: Sequence[Any], times: dict[float, datetime] | None = None) -> Job:
    """A :class:`Job` from a ``sql.JOB_COLUMNS`` row; a row that cannot be read raises CorruptDatabaseError.

    A tampered or damaged row (state, result, errors, progress or meta that is
    not what minijobs wrote) must give a typed error naming the job, not a bare
    ``JSONDecodeError`` that takes a worker down.
    """
    try:
        return _decode_row(row, times)
    except _UNREADABLE as exc:
        raise CorruptDatabaseError(
            f"job {row[0]}: its stored row is damaged ({type(exc).__name__}: {exc})"
        ) from exc


def _decode_args(text: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    try:
        return payload.decode_call(text)
    except Exception:
        # An undecodable payload must not hide the row: the worker fails such a job clearly.
        return (), {"__undecodable_payload__": text if isinstance(text, str) else repr(text)}


def _decode_row(row: Sequence[Any], times: dict[float, datetime] | None = None) -> Job:
    """A :class:`Job` from a ``sql.JOB_COLUMNS`` row.

    ``times`` memoises timestamp conversions across the rows of one read: jobs
    enqueued together share ``created_at``/``scheduled_at``, and a claim gives a
    batch one ``started_at``.
    """
    args, kwargs = _decode_args(row[3])
    if times is None:
        times = {}
    errors_text = row[14]
    meta_text = row[16]
    state = STATE_BY_VALUE.get(row[4]) or JobState(row[4])
    cached = times.get
    scheduled_at = cached(row[9]) or _when(row[9], times)
    created_at = cached(row[10]) or _when(row[10], times)
    started_at = None if row[11] is None else cached(row[11]) or _when(row[11], times)
    completed_at = None if row[12] is None else cached(row[12]) or _when(row[12], times)
    return job_from_fields((
        row[0],  # id
        row[1],  # name
        row[2],  # queue
        args,
        kwargs,
        state,
        row[5],  # priority
        row[6],  # attempts
        row[7],  # max_attempts
        scheduled_at,
        created_at,
        started_at,
        completed_at,
        None if row[13] is None else json.loads(row[13]),  # result
        () if errors_text == "[]" else decode_attempt_errors(errors_text),
        None if row[15] is None else _parse_progress(row[15]),
        {} if meta_text == "{}" else json.loads(meta_text),
        row[17],  # unique_key
        row[8],  # timeout_s
        row[18],  # rescues
        bool(row[19]),  # cancel_requested
        row[20],  # lease_owner
    ))


def _known_state(value: Any, count: int) -> JobState | None:
    """The state a count is for; a damaged state value is logged and its rows left out of counts."""
    state = STATE_BY_VALUE.get(value) if isinstance(value, str) else None
    if state is None:
        logger.error("%d job row(s) have the unknown state %r (damaged rows); not counted", count, value)
    return state


def _when(ts: float | None, times: dict[float, datetime]) -> datetime | None:
    if ts is None:
        return None
    dt = times.get(ts)
    if dt is None:
        dt = times[ts] = datetime.fromtimestamp(ts, UTC)
    return dt


def _parse_progress(text: str) -> Progress:
    data = json.loads(text)
    return Progress(done=data.get("done", 0), total=data.get("total"), message=data.get("message"))


try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

#: Extended I/O error codes of a refused write (EFBIG, EDQUOT, EIO...: SQLite maps only ENOSPC to SQLITE_FULL).
_WRITE_IOERRS = frozenset({
    sqlite3.SQLITE_IOERR_WRITE, sqlite3.SQLITE_IOERR_TRUNCATE, sqlite3.SQLITE_IOERR_FSYNC,
    sqlite3.SQLITE_IOERR_DIR_FSYNC, sqlite3.SQLITE_IOERR_SHMSIZE,
})


def _file_problem(path: str, exc: OSError) -> str:
    """A one-line explanation of a file-system error on the database at ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    if isinstance(exc, FileNotFoundError) and not os.path.isdir(folder):
        return f"cannot create the database {path}: its folder {folder} does not exist"
    if isinstance(exc, PermissionError):
        return f"cannot create the database {path}: permission denied in {folder} ({exc.strerror})"
    return f"cannot create the database {path}: {exc.strerror or exc}"


def _file_size_limit() -> int | None:
    """This process's RLIMIT_FSIZE soft limit in bytes; None when unlimited or unknown."""
    if resource is None:  # pragma: no cover - not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _translate(exc: sqlite3.Error, what: str) -> StoreError:
    """Map a sqlite3 error to a typed minijobs error with a message that says what to do."""
    message = str(exc)
    lowered = message.lower()
    code = getattr(exc, "sqlite_errorcode", None)
    if "locked" in lowered or "busy" in lowered or code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return DatabaseBusyError(
            f"{what}: the database stayed locked by another connection past the busy timeout ({message})"
        )
    if "full" in lowered or code == sqlite3.SQLITE_FULL:
        return StorageFullError(f"{what}: the disk or file-size limit is full; nothing was written ({message})")
    if code in _WRITE_IOERRS:
        # A write past RLIMIT_FSIZE fails with EFBIG (Python ignores SIGXFSZ), which SQLite reports
        # as a generic I/O error; the transaction was rolled back either way.
        name = getattr(exc, "sqlite_errorname", "SQLITE_IOERR")
        limit = _file_size_limit()
        if limit is not None:
            return StorageFullError(
                f"{what}: a write went past this process's file-size limit (RLIMIT_FSIZE = {limit} bytes); "
                f"nothing was written ({name})"
            )
        return StoreError(
            f"{what}: the operating system refused a write ({name}: {message}); the disk may be over quota or "
            "failing; nothing was written"
        )
    primary = (code or 0) & 0xFF
    if primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
        return DatabaseFileError(
            f"{what}: SQLite cannot open or write the database file ({message}); check that its folder exists and "
            "that this user may write both the file and its folder (SQLite creates -wal and -shm files beside it)"
        )
    if "not a database" in lowered or "malformed" in lowered or code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return CorruptDatabaseError(f"{what}: the database file is damaged or not a SQLite database ({message})")
    return StoreError(f"{what}: {message}")


class SQLiteStore(Store):
    """The SQLite file behind an app.  Thread-safe; one per process and path is plenty."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "normal",
        busy_timeout_s: float = 5.0,
        file_mode: int | None = 0o600,
        integrity_check: IntegrityCheck | None = None,
    ) -> None:
        """Open (creating if needed) and migrate the file at ``path``.

        ``integrity_check`` (off by default: it reads every page) checks the
        whole file after the cheap header and schema checks and before the
        migrations, so a damaged page deep in the file is reported here
        instead of by the first job that touches it.
        """
        if durability not in ("normal", "full"):
            raise ValueError(f"durability must be 'normal' or 'full', got {durability!r}")
        if integrity_check is not None and integrity_check not in sql.CHECK_PRAGMAS:
            raise ValueError(f"integrity_check must be 'quick', 'full' or None, got {integrity_check!r}")
        self.path = str(path)
        self.is_memory = self.path == ":memory:" or self.path.startswith("file::memory:")
        self.durability: Durability = durability
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        if not self.is_memory:
            self._prepare_file(file_mode)
        # Processes opening a fresh file together can see SQLITE_BUSY that SQLite returns
        # without calling the busy handler (WAL recovery, the journal-mode switch): retry the
        # whole open within the busy timeout instead of failing the caller.
        deadline = time.monotonic() + busy_timeout_s
        while True:
            try:
                self._conn = self._connect()
                self._configure(self._conn)
                if integrity_check is not None:
                    self._check(self._conn, integrity_check)
                self.migrate_component("minijobs")
                # One cursor for every single enqueue: Connection.execute makes a new one per call.
                self._enqueue_cursor = self._conn.cursor()
                self._finalizer = _closing_finalizer(self, self._conn, self._lock)
                return
            except (sqlite3.Error, StoreError) as exc:
                with contextlib.suppress(Exception):
                    self._conn.close()
                error = exc if isinstance(exc, StoreError) else _translate(exc, f"opening {self.path}")
                if isinstance(error, DatabaseBusyError) and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                if error is exc:
                    raise
                raise error from exc

    # -- connection set-up -------------------------------------------------

    def _prepare_file(self, file_mode: int | None) -> None:
        """Create the file with owner-only permissions and refuse files that are not SQLite.

        File-system failures (a missing folder, no permission) become a
        :class:`DatabaseFileError` naming the path and the cause.
        """
        try:
            self._create_file(file_mode)
        except OSError as exc:
            if isinstance(exc, StoreError):
                raise
            raise DatabaseFileError(_file_problem(self.path, exc)) from exc

    def _create_file(self, file_mode: int | None) -> None:
        p = Path(self.path)
        if p.exists():
            if p.is_dir():
                raise StoreError(f"{self.path} is a directory, not a database file")
            size = p.stat().st_size
            if size:
                with p.open("rb") as fh:
                    header = fh.read(16)
                if header != _SQLITE_MAGIC:
                    raise CorruptDatabaseError(f"{self.path} is not a SQLite database (bad header)")
            return
        if file_mode is not None:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_EXCL, file_mode)
            except FileExistsError:
                # Another process created it since the check (processes starting together on a
                # fresh path): an empty file is a new database to SQLite, and its locks do the rest.
                return
            try:
                os.fchmod(fd, file_mode)  # exactly the mode asked for, whatever the umask
            finally:
                os.close(fd)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
            uri=self.path.startswith("file:"),
        )
        return conn

    def _configure(self, conn: sqlite3.Connection) -> None:
        """Apply pragmas and read every one back: SQLite ignores settings it cannot apply."""
        if not self.is_memory:
            mode = self._switch_to_wal(conn)
            if mode.lower() != "wal":
                raise StoreError(f"could not switch {self.path} to WAL journal mode (got {mode!r})")
        want_sync = {"normal": 1, "full": 2}[self.durability]
        conn.execute(f"PRAGMA synchronous={want_sync}")
        got_sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        if got_sync != want_sync:
            raise StoreError(f"PRAGMA synchronous={want_sync} did not take (read back {got_sync})")
        busy_ms = int(self.busy_timeout_s * 1000)
        conn.execute(f"PRAGMA busy_timeout={busy_ms}")
        if conn.execute("PRAGMA busy_timeout").fetchone()[0] != busy_ms:
            raise StoreError("PRAGMA busy_timeout did not take")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA temp_store=MEMORY")
        if conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}").fetchone()[0] != WAL_SIZE_LIMIT_BYTES:
            raise StoreError("PRAGMA journal_size_limit did not take")
        # Verify the file is readable now, so a damaged file fails at open and not mid-job.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()

    def _switch_to_wal(self, conn: sqlite3.Connection) -> str:
        """``PRAGMA journal_mode=WAL``, retried within the busy timeout.

        While another process switches a brand-new file to WAL, SQLite answers
        this pragma with SQLITE_BUSY at once, without calling the busy handler,
        so processes starting together on a fresh path would fail to open.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.001
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                busy = (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(0.05, delay * 2)

    def close(self) -> None:
        with self._lock:
            self._finalizer.detach()
            self._conn.close()

    def open_watcher(self) -> DataVersionWatcher | None:
        """A second connection that tells cheaply whether another connection committed.

        None for in-memory databases: only this process can write them, and it
        wakes its workers directly.
        """
        if self.is_memory:
            return None
        return DataVersionWatcher(self.path, self.busy_timeout_s)

    # -- transactions ------------------------------------------------------

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """Run the body in ``BEGIN IMMEDIATE``; commit, or roll back and raise a typed error."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute(sql.BEGIN_WRITE)
            except sqlite3.Error as exc:
                raise _translate(exc, what) from exc
            try:
                yield conn
                conn.execute(sql.COMMIT)
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute(sql.ROLLBACK)
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc, what) from exc
                raise

    @contextlib.contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise _translate(exc, what) from exc

    # -- schema ------------------------------------------------------------

    def schema_version(self, component: str) -> int:
        with self._read("reading schema version") as conn:
            if not conn.execute(sql.SCHEMA_TABLE_EXISTS).fetchone():
                return 0
            row = conn.execute(sql.SCHEMA_VERSION, (component,)).fetchone()
            return 0 if row is None else int(row[0])

    def migrate_component(
        self, component: str, migrations: Sequence[str] | None = None, *, to_version: int | None = None
    ) -> int:
        """Bring ``component``'s tables to ``to_version`` (default: latest); return the version.

        ``migrations=None``: the built-in schema of ``component`` (see
        ``BUILTIN_SCHEMAS``).  Each step runs in its own ``BEGIN IMMEDIATE``
        transaction, so processes starting together migrate once.  A database
        newer than this code is refused.
        """
        if migrations is None:
            try:
                migrations = BUILTIN_SCHEMAS[component]
            except KeyError:
                raise ValueError(f"{component}: no built-in schema; pass the component's migrations") from None
        target = len(migrations) if to_version is None else to_version
        if not 0 <= target <= len(migrations):
            raise ValueError(f"{component}: no schema version {target} (latest is {len(migrations)})")
        while True:
            with self._write(f"migrating {component}") as conn:
                conn.execute(sql.CREATE_SCHEMA_TABLE)
                row = conn.execute(sql.SCHEMA_VERSION, (component,)).fetchone()
                current = 0 if row is None else int(row[0])
                if current > len(migrations):
                    raise SchemaVersionError(
                        f"{self.path}: {component} schema is version {current}, newer than this "
                        f"minijobs knows ({len(migrations)}); upgrade minijobs"
                    )
                if current >= target:
                    return current
                for statement in _split_sql(migrations[current]):
                    conn.execute(statement)
                conn.execute(sql.SET_SCHEMA_VERSION, (component, current + 1))
                logger.info("migrated %s schema of %s to version %d", component, self.path, current + 1)

    # -- plugins' own tables (SQLite only; not part of the Store interface) --

    def execute_write(self, what: str, statement: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one statement of a plugin's own tables in a write transaction; return rows changed."""
        with self._write(what) as conn:
            return conn.execute(statement, params).rowcount

    def query(self, what: str, statement: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query (for plugins' own tables)."""
        with self._read(what) as conn:
            return conn.execute(statement, params).fetchall()

    @contextlib.contextmanager
    def transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction for plugins that own tables and need several statements."""
        with self._write(what) as conn:
            yield conn

    # -- enqueue -----------------------------------------------------------

    def enqueue(self, rows: Sequence[NewJob | PayloadRun]) -> list[tuple[int, bool]]:
        """Insert jobs in one transaction; return ``(id, created)`` per job, in order.

        A :class:`PayloadRun` stands for ``size`` jobs.

        A row whose ``unique_key`` already has a live job returns that job's id
        with ``created=False``; the partial unique index makes this hold across
        processes racing on the same key.
        """
        if not rows:
            return []
        if len(rows) == 1 and not isinstance(rows[0], PayloadRun):
            return [self.enqueue_one(rows[0])]
        with self._write("enqueue") as conn:
            return self._insert_rows(conn, rows)

    def enqueue_one(self, row: NewJob) -> tuple[int, bool]:
        """Insert one job; return ``(id, created)`` as :meth:`enqueue` does.

        The path of every ``fn.enqueue``: one statement in autocommit (SQLite's
        implicit transaction, the cheapest durable write: no BEGIN/COMMIT
        round trips), the id read from ``lastrowid`` rather than a ``RETURNING``
        clause (which makes SQLite buffer the row).  A unique key that a live
        job holds makes the insert a no-op (``ON CONFLICT DO NOTHING``); only
        then does a write transaction try again and find the holder, which may
        have finished in between.
        """
        with self._lock:
            try:
                cur = self._enqueue_cursor.execute(sql.INSERT if row.unique_key is None else sql.INSERT_IF_FREE, row)
            except sqlite3.Error as exc:
                raise _translate(exc, "enqueue") from exc
            if cur.rowcount == 1:
                return cur.lastrowid, True  # type: ignore[return-value]
        with self._write("enqueue") as conn:
            return self._insert_rows(conn, (row,))[0]

    def _insert_rows(self, conn: sqlite3.Connection, rows: Sequence[NewJob | PayloadRun]) -> list[tuple[int, bool]]:
        if all(isinstance(row, PayloadRun) or row.unique_key is None for row in rows):
            total = sum(row.size if isinstance(row, PayloadRun) else 1 for row in rows)
            # Under the write lock SQLite gives each new row max(id) + 1, so the ids are contiguous.
            before = _max_id(conn)
            _bulk_insert(conn, rows)
            after = _max_id(conn)
            if after - before != total:  # pragma: no cover - only past id 2**63 - 1 does SQLite pick others
                raise StoreError("bulk enqueue allocated non-contiguous ids")
            return [(job_id, True) for job_id in range(before + 1, after + 1)]
        out: list[tuple[int, bool]] = []
        for row in rows:
            if isinstance(row, PayloadRun):
                last_id = _insert_json_run(conn, row.template, row.payloads, row.size, row.first, row.last)
                out.extend((job_id, True) for job_id in range(last_id - row.size + 1, last_id + 1))
                continue
            if row.unique_key is None:
                (job_id,) = conn.execute(sql.INSERT_RETURNING, row).fetchone()
                out.append((job_id, True))
                continue
            found = conn.execute(sql.INSERT_UNIQUE, row).fetchone()
            if found is not None:
                out.append((found[0], True))
                continue
            existing = conn.execute(sql.UNIQUE_HOLDER, (row.unique_key,)).fetchone()
            if existing is None:  # pragma: no cover - the index conflict guarantees a live row
                raise StoreError(f"unique key {row.unique_key!r} conflicted but no live job holds it")
            out.append((existing[0], False))
        return out

    # -- claim and finish --------------------------------------------------

    def claim(
        self, queue: str, limit: int, *, owner: str, now: float, lease_s: float, idle: bool = True
    ) -> list[Job]:
        """Atomically move up to ``limit`` due jobs of ``queue`` to running, leased to ``owner``.

        Highest priority first, then oldest id.  Paused queues yield nothing.
        A suspect (a job with ``rescues > 0``) runs alone: the claim stops
        before the first one; it returns the suspect by itself when the
        suspect comes first and the caller runs nothing else of ``queue``
        (``idle``), and nothing when it comes first and the caller is busy.

        Due jobs of ``queue`` that still wait are promoted first (up to
        ``sql.PROMOTE_LIMIT`` per claim), so they compete on priority.

        The usual claim is one autocommit statement, as cheap as before the
        waiting index (a transaction around a promotion and the claim would
        cost a BEGIN and a COMMIT on every claim): it takes nothing while a due job still waits,
        and when it took nothing a probe decides whether to promote and claim
        again, in one transaction.
        """
        if limit <= 0:
            return []
        params = {"queue": queue, "limit": limit, "owner": owner, "now": now, "expires": now + lease_s, "idle": idle}
        with self._read("claim") as conn:
            rows = conn.execute(sql.CLAIM, params).fetchall()
            promote = not rows and conn.execute(sql.DUE_WAITING, params).fetchone() is not None
        if promote:
            with self._write("promote and claim") as conn:
                conn.execute(sql.PROMOTE, params)
                rows = conn.execute(sql.CLAIM_PROMOTED, params).fetchall()
        # The whole batch shares one start time: converted once.
        times: dict[float, datetime] = {now: datetime.fromtimestamp(now, UTC)}
        jobs: list[Job] = []
        damaged: list[tuple[int, int, str]] = []
        for row in rows:
            try:
                jobs.append(_job_from_row(row, times))
            except CorruptDatabaseError as exc:
                damaged.append((row[0], row[6], str(exc)))
        if damaged:
            self._fail_damaged(damaged, owner=owner, now=now)
        jobs.sort(key=_claim_order)
        return jobs

    def _fail_damaged(self, damaged: Sequence[tuple[int, int, str]], *, owner: str, now: float) -> None:
        """Fail claimed jobs whose row cannot be read, so that no worker chokes on them again."""
        with self._write("fail damaged jobs") as conn:
            for job_id, attempt, message in damaged:
                logger.error("%s; failing it", message, extra={"job_id": job_id})
                error = encode_attempt_error(AttemptError(
                    attempt=attempt, type="minijobs.CorruptDatabaseError", message=message, traceback="",
                    at=datetime.fromtimestamp(now, UTC),
                ))
                conn.execute(sql.FAIL_DAMAGED, (now, error, job_id, owner))

    def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Write the ends of attempts in one transaction; False where the fence refused a stale write."""
        if not outcomes:
            return []
        params = [
            (o.state.value, o.result, o.error, o.error, o.scheduled_at, o.completed_at, o.progress,
             o.state.value, o.scheduled_at, o.job_id, o.owner, o.attempt)
            for o in outcomes
        ]
        # Plain ends (no error, no retry time, no progress: most successes) take a statement
        # that leaves errors, scheduled_at and progress alone.
        simple = [(p[0], p[1], p[5], p[9], p[10], p[11]) for p in params if p[2] is None and p[4] is None and p[6] is None]
        general = params if not simple else [p for p in params if not (p[2] is None and p[4] is None and p[6] is None)]
        with self._write("finish jobs") as conn:
            if len(params) == 1:
                if simple:
                    return [conn.execute(sql.FINISH_PLAIN, simple[0]).rowcount == 1]
                return [conn.execute(sql.FINISH, params[0]).rowcount == 1]
            # One executemany per statement for the batch; if the fence refused any row, undo
            # and write row by row to learn which (rare: a lease lost to another worker).
            conn.execute(sql.SAVEPOINT_FINISH)
            changed = conn.executemany(sql.FINISH_PLAIN, simple).rowcount if simple else 0
            if general:
                changed += conn.executemany(sql.FINISH, general).rowcount
            if changed == len(params):
                conn.execute(sql.RELEASE_FINISH)
                return [True] * len(params)
            conn.execute(sql.ROLLBACK_TO_FINISH)
            conn.execute(sql.RELEASE_FINISH)
            return [conn.execute(sql.FINISH, p).rowcount == 1 for p in params]

    def release(self, owner: str, job_ids: Iterable[int], *, now: float) -> int:
        """Give unfinished jobs back to the queue without using up an attempt (graceful shutdown).

        Their progress is cleared: it described an attempt that no longer counts, and
        the next attempt starts from the beginning.
        """
        ids = list(job_ids)
        if not ids:
            return 0
        with self._write("release jobs") as conn:
            changed = 0
            for job_id in ids:
                changed += conn.execute(sql.RELEASE, (now, job_id, owner)).rowcount
            return changed

    def renew_leases(self, owner: str, job_ids: Sequence[int], *, now: float, lease_s: float) -> tuple[set[int], set[int]]:
        """Extend the leases ``owner`` still holds; return ``(lost, cancel_requested)`` job ids.

        ``lost`` are jobs this worker thinks it runs but no longer owns (recovered
        by another process); their eventual completions will be refused anyway.
        """
        if not job_ids:
            return set(), set()
        with self._write("renew leases") as conn:
            conn.execute(sql.RENEW_LEASES, (now + lease_s, owner))
            held: set[int] = set()
            cancel: set[int] = set()
            for job_id, flag in conn.execute(sql.HELD_LEASES, (owner,)):
                held.add(job_id)
                if flag:
                    cancel.add(job_id)
        return set(job_ids) - held, cancel

    def cancel_requested(self, owner: str) -> set[int]:
        """Jobs leased to ``owner`` that someone asked to cancel (read-only, indexed)."""
        with self._read("check cancellations") as conn:
            return {row[0] for row in conn.execute(sql.CANCEL_REQUESTED, (owner,))}

    def set_arguments(self, owner: str, changes: Sequence[tuple[int, int, str, str]]) -> None:
        with self._write("store changed arguments") as conn:
            conn.executemany(sql.SET_ARGUMENTS, [(args, meta, job_id, owner, attempt)
                                                 for job_id, attempt, args, meta in changes])

    def set_progress(self, job_id: int, owner: str, attempt: int, progress_json: str) -> bool:
        with self._read("set progress") as conn:
            return conn.execute(sql.SET_PROGRESS, (progress_json, job_id, owner, attempt)).rowcount == 1

    def next_due_at(self, queues: Sequence[str], *, after: float | None = None) -> float | None:
        """Earliest ``scheduled_at`` of a runnable job in ``queues`` (None if there is none).

        With ``after``, only jobs scheduled later than that count; paused
        queues are left out.  Ready jobs are few when a worker is idle.
        """
        if not queues:
            return None
        # Named parameters (q0, q1, ...; ``after``): each queue name is used twice.
        params: dict[str, Any] = {f"q{n}": name for n, name in enumerate(queues)}
        if after is not None:
            params["after"] = after
        with self._read("next due time") as conn:
            row = conn.execute(sql.next_due(len(queues), after=after is not None), params).fetchone()
        return None if row is None else row[0]

    def first_suspect(self, queue: str, *, now: float) -> int | None:
        """The id of the first due job of ``queue`` in claim order if it is a suspect (``rescues > 0``).

        Such a job is claimed only by an idle executor (see :meth:`claim`); a
        busy worker uses this to tell that wait from work it simply missed.
        """
        with self._read("first due job") as conn:
            row = conn.execute(sql.FIRST_DUE_WITH_RESCUES, {"queue": queue, "now": now}).fetchone()
        return row[0] if row is not None and row[1] > 0 else None

    # -- user operations on one job ----------------------------------------

    def cancel(self, job_id: int, *, now: float) -> Job:
        """Cancel a job: pending ones at once, running ones by flagging them for their worker."""
        with self._write("cancel job") as conn:
            row = conn.execute(sql.GET_JOB, (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"no job with id {job_id}")
            state = row[4]
            if state in ("pending", "retrying"):
                conn.execute(sql.CANCEL_RUNNABLE, (now, job_id))
            elif state == "running":
                conn.execute(sql.FLAG_CANCEL, (job_id,))
            row = conn.execute(sql.GET_JOB, (job_id,)).fetchone()
        return _job_from_row(row)

    def retry(self, job_id: int, *, now: float) -> Job:
        """Run a finished job again now, granting one more attempt if it had used them all."""
        with self._write("retry job") as conn:
            row = conn.execute(sql.JOB_STATE, (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"no job with id {job_id}")
            if row[0] not in ("succeeded", "failed", "cancelled"):
                raise InvalidStateError(f"job {job_id} is {row[0]}; only finished jobs can be retried")
            try:
                conn.execute(sql.RETRY, (now, job_id))
            except sqlite3.IntegrityError:
                raise InvalidStateError(
                    f"job {job_id} cannot be retried: another live job holds its unique key"
                ) from None
            row = conn.execute(sql.GET_JOB, (job_id,)).fetchone()
        return _job_from_row(row)

    # -- reads -------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        with self._read("get job") as conn:
            row = conn.execute(sql.GET_JOB, (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return _job_from_row(row)

    def state_of(self, job_id: int) -> JobState:
        with self._read("get job state") as conn:
            row = conn.execute(sql.JOB_STATE, (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        return JobState(row[0])

    def list_jobs(
        self,
        *,
        states: Sequence[str] | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs matching the filters, newest first."""
        params: list[Any] = list(states or ())
        if queue is not None:
            params.append(queue)
        if name is not None:
            params.append(name)
        statement = sql.list_jobs(state_count=len(states or ()), by_queue=queue is not None, by_name=name is not None)
        with self._read("list jobs") as conn:
            rows = conn.execute(statement, (*params, limit, offset)).fetchall()
        times: dict[float, datetime] = {}
        jobs: list[Job] = []
        for row in rows:
            try:
                jobs.append(_job_from_row(row, times))
            except CorruptDatabaseError as exc:
                # One damaged row must not hide every other job from listings and the CLI.
                logger.error("%s; left out of the listing", exc, extra={"job_id": row[0]})
        return jobs

    def count_by_state(self, *, queue: str | None = None) -> dict[JobState, int]:
        with self._read("count jobs") as conn:
            if queue is None:
                rows = conn.execute(sql.COUNT_BY_STATE).fetchall()
            else:
                rows = conn.execute(sql.COUNT_BY_STATE_IN_QUEUE, (queue,)).fetchall()
        counts = {state: 0 for state in JobState}
        for state, n in rows:
            known = _known_state(state, n)
            if known is not None:
                counts[known] = n
        return counts

    def count_by_queue(self) -> dict[str, dict[JobState, int]]:
        """Job counts per queue and state, for every queue that has jobs (CLI ``queues list``)."""
        with self._read("count jobs by queue") as conn:
            rows = conn.execute(sql.COUNT_BY_QUEUE).fetchall()
        out: dict[str, dict[JobState, int]] = {}
        for queue, state, n in rows:
            known = _known_state(state, n)
            if known is not None:
                out.setdefault(queue, {s: 0 for s in JobState})[known] = n
        return out

    def finished_per_bucket(self, *, since: float, bucket_s: float) -> list[tuple[int, JobState, int]]:
        """Jobs that reached a terminal state since ``since``, as ``(bucket, state, count)``.

        Bucket ``i`` covers ``[since + i * bucket_s, since + (i + 1) * bucket_s)``.
        """
        with self._read("count finished jobs") as conn:
            rows = conn.execute(sql.FINISHED_PER_BUCKET, (since, bucket_s, since)).fetchall()
        return [
            (int(bucket), known, int(n)) for bucket, state, n in rows if (known := _known_state(state, n)) is not None
        ]

    def oldest_due(self, *, now: float) -> float | None:
        """Earliest ``scheduled_at`` among runnable jobs already due (None if none waits): the queue lag."""
        with self._read("oldest due job") as conn:
            row = conn.execute(sql.OLDEST_DUE, {"now": now}).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- queues ------------------------------------------------------------

    def set_paused(self, queue: str, paused: bool) -> None:
        with self._write("pause queue" if paused else "resume queue") as conn:
            conn.execute(sql.SET_PAUSED, (queue, int(paused)))

    def paused_queues(self) -> set[str]:
        with self._read("list paused queues") as conn:
            return {row[0] for row in conn.execute(sql.PAUSED_QUEUES)}

    # -- maintenance (used by plugins) -------------------------------------

    def recover_expired(
        self, *, now: float, max_rescues: int, limit: int = 500, spare_owner: str | None = None
    ) -> tuple[list[int], list[int]]:
        """Return jobs whose lease expired to their queue; fail those rescued too often.

        Returns ``(requeued_ids, poisoned_ids)``.  The attempt that was cut off
        stays counted; a job that keeps killing its worker fails once it has
        been rescued more than ``max_rescues`` times instead of looping forever.
        Jobs leased to ``spare_owner`` are left alone: that worker is alive
        (it is asking), and its heartbeat renews them once it can write again.
        """
        with self._write("recover expired leases") as conn:
            rows = conn.execute(sql.EXPIRED_LEASES, (now, limit)).fetchall()
            requeued: list[int] = []
            poisoned: list[int] = []
            for job_id, rescues, attempts, owner in rows:
                if spare_owner is not None and owner == spare_owner:
                    continue
                if rescues + 1 > max_rescues:
                    error = encode_attempt_error(AttemptError(
                        attempt=attempts,
                        type="minijobs.PoisonJobError",
                        message=f"worker lost {rescues + 1} times while running this job; giving up",
                        traceback="",
                        at=datetime.fromtimestamp(now, UTC),
                    ))
                    conn.execute(sql.POISON, (now, error, job_id))
                    poisoned.append(job_id)
                else:
                    conn.execute(sql.RESCUE, (now, job_id))
                    requeued.append(job_id)
        return requeued, poisoned

    def prune(
        self,
        *,
        before: float,
        states: Sequence[str] = ("succeeded", "failed", "cancelled"),
        queue: str | None = None,
        exclude_queues: Sequence[str] = (),
        limit: int = 1000,
    ) -> int:
        """Delete up to ``limit`` finished jobs completed before ``before``; return how many.

        ``exclude_queues`` spares queues that have their own retention (the Pruner's per-queue rules).
        The job with the highest id is never deleted: the jobs table has no AUTOINCREMENT (schema
        v4), so SQLite gives a new job ``max(id) + 1``, and deleting the newest row would hand its
        id to the next job, where a stale :class:`~minijobs.JobRef` would find a different job.
        """
        terminal = [s for s in states if s in ("succeeded", "failed", "cancelled")]
        if not terminal:
            return 0
        params: list[Any] = [before, *terminal]
        if queue is not None:
            params.append(queue)
        params.extend(exclude_queues)
        params.append(limit)
        statement = sql.prune(state_count=len(terminal), by_queue=queue is not None, excluded_count=len(exclude_queues))
        with self._write("prune jobs") as conn:
            return conn.execute(statement, params).rowcount

    # -- leadership --------------------------------------------------------

    def acquire_leadership(self, plugin: str, *, owner: str, now: float, lease_s: float) -> int | None:
        with self._write("acquire leadership") as conn:
            row = conn.execute(
                sql.ACQUIRE_LEADERSHIP, {"name": plugin, "owner": owner, "now": now, "expires": now + lease_s}
            ).fetchone()
        return None if row is None else int(row[0])

    def resign_leadership(self, plugin: str, *, owner: str, term: int, now: float) -> bool:
        with self._write("resign leadership") as conn:
            params = {"name": plugin, "owner": owner, "term": term, "now": now}
            return conn.execute(sql.RESIGN_LEADERSHIP, params).rowcount == 1

    def leadership_leases(self) -> list[LeaseRecord]:
        with self._read("read leadership") as conn:
            rows = conn.execute(sql.LEADERSHIP_LEASES).fetchall()
        return [LeaseRecord(name, owner, int(term), acquired, renewed, expires)
                for name, owner, term, acquired, renewed, expires in rows]

    # -- cron slots --------------------------------------------------------

    def cron_last_slots(self) -> dict[str, int]:
        with self._read("read cron slots") as conn:
            return {name: int(slot) for name, slot in conn.execute(sql.CRON_LAST_SLOTS)}

    def record_cron_slot(self, schedule: str, slot: int, *, kind: SlotKind, now: float) -> bool:
        with self._write("record cron slot") as conn:
            return conn.execute(sql.CRON_RECORD_SLOT, (schedule, slot, kind, now)).rowcount == 1

    def enqueue_cron_slot(
        self, schedule: str, slot: int, rows: Sequence[NewJob | PayloadRun], *, now: float
    ) -> list[tuple[int, bool]]:
        with self._write("enqueue cron slot") as conn:
            if conn.execute(sql.CRON_RECORD_SLOT, (schedule, slot, "enqueued", now)).rowcount != 1:
                return []
            return self._insert_rows(conn, rows)

    def prune_cron_slots(self, *, before: int) -> int:
        with self._write("clean cron slots") as conn:
            return conn.execute(sql.CRON_PRUNE_SLOTS, (before,)).rowcount

    # -- file checks -------------------------------------------------------

    def checkpoint(self, mode: CheckpointMode = "PASSIVE") -> tuple[int, int, int]:
        """Run a WAL checkpoint; returns SQLite's ``(busy, wal_pages, checkpointed_pages)``."""
        statement = sql.CHECKPOINT.get(mode)
        if statement is None:
            raise ValueError(f"unknown checkpoint mode {mode!r}")
        with self._read("checkpoint") as conn:
            row = conn.execute(statement).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def integrity_check(self) -> list[str]:
        with self._read("integrity check") as conn:
            return [row[0] for row in conn.execute(sql.CHECK_PRAGMAS["full"])]

    def check_integrity(self, mode: IntegrityCheck = "quick") -> None:
        """Read the whole file; raise :class:`CorruptDatabaseError` saying what SQLite found if it is damaged."""
        if mode not in sql.CHECK_PRAGMAS:
            raise ValueError(f"integrity check must be 'quick' or 'full', got {mode!r}")
        with self._lock:
            self._check(self._conn, mode)

    def _check(self, conn: sqlite3.Connection, mode: IntegrityCheck) -> None:
        pragma = sql.CHECK_PRAGMAS[mode].removeprefix("PRAGMA ")
        started = time.perf_counter()
        try:
            findings = [str(row[0]) for row in conn.execute(f"PRAGMA {pragma}")]
        except sqlite3.Error as exc:
            # A page too damaged to walk makes the check itself fail instead of reporting it.
            error = _translate(exc, f"{self.path}: PRAGMA {pragma}")
            if isinstance(error, CorruptDatabaseError):
                raise CorruptDatabaseError(
                    f"{self.path} is damaged: PRAGMA {pragma} could not finish: {exc}; restore it from a backup"
                ) from exc
            raise error from exc
        if findings != ["ok"]:
            shown = "; ".join(" ".join(line.split()) for line in findings[:_CHECK_LINES_SHOWN])
            more = f" (and {len(findings) - _CHECK_LINES_SHOWN} more)" if len(findings) > _CHECK_LINES_SHOWN else ""
            raise CorruptDatabaseError(
                f"{self.path} is damaged: PRAGMA {pragma} reported {shown}{more}; restore it from a backup"
            )
        logger.debug("%s: PRAGMA %s ok in %.1f ms", self.path, pragma, (time.perf_counter() - started) * 1000)


def _closing_finalizer(
    owner: object, conn: sqlite3.Connection, lock: threading.RLock | None
) -> weakref.finalize[Any, Any]:
    """Close ``conn`` when ``owner`` is garbage-collected or at interpreter exit, whichever comes first.

    An App that is never closed (a script, a test) must not leave its
    connection to the interpreter's teardown, where Python 3.13 reports it as
    ``ResourceWarning: unclosed database``.  At exit a daemon thread may still
    be inside a statement on it: the lock is taken only if it frees quickly,
    and otherwise the connection is left to the process's end.
    """
    return weakref.finalize(owner, _close_connection, conn, lock)


def _close_connection(conn: sqlite3.Connection, lock: threading.RLock | None) -> None:
    if lock is not None and not lock.acquire(timeout=1.0):
        logger.debug("connection still in use at exit; left to the end of the process")
        return
    try:
        conn.close()
    except sqlite3.Error as exc:
        logger.debug("closing a connection at exit failed: %s", exc)
    finally:
        if lock is not None:
            lock.release()


def _max_id(conn: sqlite3.Connection) -> int:
    """The highest job id (0 for an empty table): one seek to the end of the rowid b-tree."""
    row = conn.execute(sql.MAX_ID).fetchone()
    return 0 if row[0] is None else int(row[0])


def _claim_order(job: Job) -> tuple[int, int]:
    return (-job.priority, job.id)


def _bulk_insert(conn: sqlite3.Connection, rows: Sequence[NewJob | PayloadRun]) -> None:
    """Insert rows without unique keys, in order, as cheaply as SQLite allows.

    Runs of rows that differ only in their payload (what ``enqueue_many`` of one
    function produces) go in one ``INSERT ... SELECT FROM json_each(?)``: SQLite
    splits the joined payloads in C instead of binding ten parameters per row
    from Python (~4x faster).  Other rows use ``executemany``.
    """
    n = len(rows)
    i = 0
    while i < n:
        first = rows[i]
        if isinstance(first, PayloadRun):
            _insert_json_run(conn, first.template, first.payloads, first.size, first.first, first.last)
            i += 1
            continue
        run: list[NewJob] = [first]
        size = len(first.payload)
        j = i + 1
        while j < n and size < _BULK_MAX_CHARS:
            row = rows[j]
            if isinstance(row, PayloadRun) or not _same_but_payload(row, first):
                break
            run.append(row)
            size += len(row.payload) + 1
            j += 1
        if len(run) < _BULK_MIN_ROWS:
            conn.executemany(sql.INSERT, run)
        else:
            joined = "[" + ",".join([row.payload for row in run]) + "]"
            _insert_json_run(conn, first, joined, len(run), run[0].payload, run[-1].payload)
        i = j


def _insert_json_run(
    conn: sqlite3.Connection, template: NewJob, payloads: str, count: int, first: str, last: str
) -> int:
    """Insert ``count`` jobs like ``template`` with the payloads of a JSON array; return the last id."""
    cur = conn.execute(sql.INSERT_FROM_JSON, (
        template.name, template.queue, template.priority, template.max_attempts, template.timeout_s,
        template.scheduled_at, template.created_at, template.meta, template.waiting, payloads,
    ))
    if cur.rowcount != count:  # pragma: no cover - one row per array element
        raise StoreError(f"bulk enqueue wrote {cur.rowcount} rows for {count} jobs")
    # json_each yields elements in array order (so ids follow the input); check the ends.
    last_id: int = cur.lastrowid  # type: ignore[assignment]
    ends = conn.execute(sql.PAYLOADS_AT, (last_id - count + 1, last_id)).fetchall()
    if ends[0][0] != first or ends[-1][0] != last:  # pragma: no cover
        raise StoreError("bulk enqueue: SQLite did not keep the order of the jobs")
    return last_id


def _same_but_payload(a: NewJob, b: NewJob) -> bool:
    # Field 2 is the payload; everything after it (unique_key included) and name/queue must match.
    return a[3:] == b[3:] and a[0] == b[0] and a[1] == b[1]


def _split_sql(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]


#: Runs shorter than this use executemany; longer ones are split to stay far below SQLite's string limit.
_BULK_MIN_ROWS = 8
_BULK_MAX_CHARS = 32_000_000
