"""The ledger of what really happened, and the checker of delivery invariants.

Why a ledger: the jobs database only keeps the last state of a job, so it
cannot tell whether a job body ran twice, or whether two attempts overlapped.
Every process of a scenario therefore appends events to its *own* SQLite file
in one shared directory (one file per process: no cross-process lock
contention, so 20k jobs stay fast; ``synchronous=FULL`` so an event written
before a SIGKILL survives it).  Times are ``time.monotonic()``, which on Linux
is one system-wide clock, so events of different processes can be ordered.

Events (``event`` column):

* ``ack``    – an enqueue returned: the job is acknowledged and must never be lost.
* ``start``  – a job body began (``attempt`` as the job saw it, ``token`` unique per execution).
* ``end``    – the body finished; ``info`` is ``ok``, ``error`` or ``cancelled``.
* ``fault``  – the harness (or the job itself) hurt process ``pid``: ``info`` is the
  signal name (``SIGKILL``, ``SIGSTOP``, ``SIGCONT``, ``SIGTERM``, ``SIGINT``) or ``crash``
  for a job that killed its own process.
* ``exit``   – the harness reaped process ``pid`` (``info`` is the return code).
* ``proc``   – first event of every file: ``info`` is the parent pid, so a fault of a
  worker also explains what its process-pool children did.

:func:`check` reads every file and asserts the invariants listed in its docstring.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_VAR = "MJ_LEDGER_DIR"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    job_id INTEGER,
    attempt INTEGER,
    pid INTEGER NOT NULL,
    event TEXT NOT NULL,
    t REAL NOT NULL,
    token TEXT,
    info TEXT
)
"""

#: Signals after which a process runs no more job code (its attempts end there).
_DEATHS = {"SIGKILL", "crash"}


class Ledger:
    """Appends events of this process to ``<directory>/ledger-<pid>-<random>.sqlite3``.

    Thread-safe.  A forked or spawned child gets its own file (the pid is
    checked on every write), so process-pool children can record too.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._conn is None or self._pid != pid:
            # A connection inherited through fork belongs to the parent: leave it alone.
            path = self.directory / f"ledger-{pid}-{uuid.uuid4().hex[:8]}.sqlite3"
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(_SCHEMA)
            # Who started this process: a fault of a worker also covers its process-pool children.
            conn.execute("INSERT INTO events (pid, event, t, info) VALUES (?, 'proc', ?, ?)",
                         (pid, time.monotonic(), str(os.getppid())))
            self._conn, self._pid = conn, pid
        return self._conn

    def record(
        self,
        event: str,
        *,
        job_id: int | None = None,
        attempt: int | None = None,
        pid: int | None = None,
        token: str | None = None,
        info: str | None = None,
    ) -> None:
        with self._lock:
            self._connection().execute(
                "INSERT INTO events (job_id, attempt, pid, event, t, token, info) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, attempt, os.getpid() if pid is None else pid, event, time.monotonic(), token, info),
            )

    def ack(self, job_ids: Iterable[int], *, info: str | None = None) -> None:
        """Record that these enqueues were acknowledged (one transaction, durable on return)."""
        rows = [(job_id, 0, os.getpid(), "ack", time.monotonic(), None, info) for job_id in job_ids]
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO events (job_id, attempt, pid, event, t, token, info) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def fault(self, pid: int, what: str) -> None:
        self.record("fault", pid=pid, info=what)

    def start(self, job_id: int, attempt: int) -> str:
        token = uuid.uuid4().hex
        self.record("start", job_id=job_id, attempt=attempt, token=token)
        return token

    def end(self, job_id: int, attempt: int, token: str, outcome: str) -> None:
        self.record("end", job_id=job_id, attempt=attempt, token=token, info=outcome)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


_process_ledger: Ledger | None = None
_process_lock = threading.Lock()


def process_ledger() -> Ledger:
    """The ledger of this process, from ``$MJ_LEDGER_DIR`` (used by job bodies in any process)."""
    global _process_ledger
    with _process_lock:
        if _process_ledger is None:
            directory = os.environ.get(ENV_VAR)
            if not directory:
                raise RuntimeError(f"${ENV_VAR} is not set: job bodies of the reliability suite need a ledger")
            _process_ledger = Ledger(directory)
        return _process_ledger


# -- reading -------------------------------------------------------------------


@dataclass(slots=True)
class Execution:
    """One run of a job body, from its ``start`` event to its ``end`` (if any)."""

    job_id: int
    attempt: int
    pid: int
    token: str
    start: float
    end: float | None = None
    outcome: str | None = None


@dataclass(slots=True)
class History:
    executions: dict[int, list[Execution]] = field(default_factory=lambda: defaultdict(list))
    acks: dict[int, float] = field(default_factory=dict)
    #: pid -> [(time, what)] for fault and exit events
    faults: dict[int, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    exits: dict[int, float] = field(default_factory=dict)
    #: pid -> parent pid, for every process that wrote a ledger
    parents: dict[int, int] = field(default_factory=dict)

    def starts(self, job_id: int) -> list[Execution]:
        return sorted(self.executions.get(job_id, []), key=lambda e: e.start)

    def faulted(self, pid: int) -> bool:
        """True if ``pid`` or its parent (a worker, for a process-pool child) was hurt."""
        return bool(self.faults.get(pid)) or bool(self.faults.get(self.parents.get(pid, -1)))

    def death(self, pid: int) -> float | None:
        """When ``pid`` stopped running job code for good (killed, crashed or reaped), if known."""
        times = [t for t, what in self.faults.get(pid, []) if what in _DEATHS]
        if pid in self.exits:
            times.append(self.exits[pid])
        if not times and pid in self.parents:
            return self.death(self.parents[pid])  # a pool child ends with its worker at the latest
        return min(times) if times else None

    def stopped_between(self, pid: int, lo: float, hi: float) -> bool:
        return any(what == "SIGSTOP" and lo <= t <= hi for t, what in self.faults.get(pid, []))


def read(directory: str | os.PathLike[str]) -> History:
    history = History()
    tokens: dict[str, Execution] = {}
    ends: list[tuple[str, float, str]] = []
    for path in sorted(Path(directory).glob("ledger-*.sqlite3")):
        conn = sqlite3.connect(path, timeout=30)
        try:
            check = conn.execute("PRAGMA integrity_check").fetchall()
            if check != [("ok",)]:
                raise AssertionError(f"ledger {path.name} is damaged: {check}")
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name='events'").fetchone():
                continue  # a process between creating its file and its table
            rows = conn.execute("SELECT job_id, attempt, pid, event, t, token, info FROM events ORDER BY seq").fetchall()
        finally:
            conn.close()
        for job_id, attempt, pid, event, t, token, info in rows:
            if event == "ack":
                history.acks.setdefault(job_id, t)
            elif event == "start":
                execution = Execution(job_id, attempt, pid, token, t)
                tokens[token] = execution
                history.executions[job_id].append(execution)
            elif event == "end":
                ends.append((token, t, info))
            elif event == "fault":
                history.faults[pid].append((t, info))
            elif event == "exit":
                history.exits[pid] = t
            elif event == "proc":
                history.parents[pid] = int(info)
            else:
                raise AssertionError(f"unknown ledger event {event!r} in {path.name}")
    for token, t, info in ends:
        execution = tokens.get(token)
        if execution is None:
            raise AssertionError(f"ledger has an end without a start (token {token})")
        execution.end, execution.outcome = t, info
    return history


# -- the checker -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    name: str
    state: str
    attempts: int
    max_attempts: int
    rescues: int
    result: Any
    unique_key: str | None
    lease_owner: str | None
    lease_expires_at: float | None
    meta: dict[str, Any]


@dataclass(slots=True)
class Report:
    rows: dict[int, Row]
    history: History

    def executions(self, job_id: int) -> list[Execution]:
        return self.history.starts(job_id)


def read_rows(db_path: str | os.PathLike[str]) -> dict[int, Row]:
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        rows = conn.execute(
            "SELECT id, name, state, attempts, max_attempts, rescues, result, unique_key, lease_owner, "
            "lease_expires_at, meta FROM minijobs_jobs"
        ).fetchall()
    finally:
        conn.close()
    return {
        r[0]: Row(r[0], r[1], r[2], r[3], r[4], r[5], None if r[6] is None else json.loads(r[6]), r[7], r[8], r[9],
                  json.loads(r[10]))
        for r in rows
    }


def integrity(db_path: str | os.PathLike[str]) -> list[str]:
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def check(
    db_path: str | os.PathLike[str],
    ledger_dir: str | os.PathLike[str],
    *,
    settled: bool = True,
    expect: Mapping[int, str] | None = None,
    default_state: str = "succeeded",
    slot_of: Any = None,
) -> Report:
    """Assert the delivery invariants; return what was read for scenario-specific asserts.

    1. ``PRAGMA integrity_check`` is ok (jobs database and every ledger file).
    2. Nothing acknowledged is lost: every acked job exists; when ``settled``, it is
       terminal and in its expected state (``expect[id]`` or ``default_state``).
    3. Ownership is consistent: a running row has a lease owner and expiry, any other
       row has neither; when ``settled`` nothing is running.
    4. Duplicates only where a fault explains them: an execution followed by another
       of the same job either ended in error/cancellation (a retry or release) or
       ran in a process the harness or the job itself faulted.  Two executions with
       the same attempt number need the same explanation (a lease rescue keeps the
       number only through a release).
    5. No two executions of one job overlap in time, unless the earlier one's
       process was SIGSTOPped before the later one started (then rule 6 matters).
    6. No stale completion accepted: a succeeded job's stored result names the pid
       and attempt of its *last* execution, and that attempt is the row's attempt count.
    7. A unique key never has two live jobs; if ``slot_of(row)`` is given (cron), no
       two jobs share a non-None slot.
    """
    problems: list[str] = []
    verdict = integrity(db_path)
    if verdict != ["ok"]:
        problems.append(f"integrity_check of the jobs database: {verdict[:5]}")
    history = read(ledger_dir)
    rows = read_rows(db_path)
    expect = dict(expect or {})

    for job_id in history.acks:
        row = rows.get(job_id)
        if row is None:
            problems.append(f"job {job_id} was acknowledged but is not in the database")
            continue
        if settled:
            wanted = expect.get(job_id, default_state)
            if row.state != wanted:
                problems.append(f"job {job_id} is {row.state}, expected {wanted} (attempts={row.attempts})")

    for row in rows.values():
        if row.state == "running":
            if row.lease_owner is None or row.lease_expires_at is None:
                problems.append(f"job {row.id} is running without an owner or lease")
            if settled:
                problems.append(f"job {row.id} is still running (owner {row.lease_owner})")
        elif row.lease_owner is not None or row.lease_expires_at is not None:
            problems.append(f"job {row.id} is {row.state} but still has lease owner {row.lease_owner}")

    for job_id, executions in history.executions.items():
        runs = sorted(executions, key=lambda e: e.start)
        row = rows.get(job_id)
        if row is None:
            problems.append(f"job {job_id} ran but is not in the database")
            continue
        top = max(e.attempt for e in runs)
        if top > row.attempts:
            problems.append(f"job {job_id}: an execution saw attempt {top} but the row counts {row.attempts}")
        seen: dict[int, Execution] = {}
        for earlier, later in itertools.pairwise(runs):
            explained = earlier.outcome in ("error", "cancelled") or history.faulted(earlier.pid)
            if not explained:
                problems.append(
                    f"job {job_id}: ran again (attempt {later.attempt}, pid {later.pid}) after attempt "
                    f"{earlier.attempt} in pid {earlier.pid} ended {earlier.outcome or 'never'} with no fault"
                )
            end = earlier.end
            death = history.death(earlier.pid)
            if death is not None and (end is None or death < end):
                end = death
            if (end is None or end > later.start) and not history.stopped_between(
                earlier.pid, earlier.start, later.start
            ):
                problems.append(
                    f"job {job_id}: attempt {earlier.attempt} (pid {earlier.pid}) and attempt {later.attempt} "
                    f"(pid {later.pid}) overlapped"
                )
        for run in runs:
            prior = seen.get(run.attempt)
            if prior is not None and not (prior.outcome == "cancelled" or history.faulted(prior.pid)):
                problems.append(f"job {job_id}: attempt {run.attempt} started twice without a fault or release")
            seen[run.attempt] = run
        if row.state == "succeeded" and isinstance(row.result, dict) and "pid" in row.result:
            last = runs[-1]
            if (row.result["pid"], row.result["attempt"]) != (last.pid, last.attempt):
                problems.append(
                    f"job {job_id}: stored result comes from pid {row.result['pid']} attempt "
                    f"{row.result['attempt']}, but the last execution was pid {last.pid} attempt {last.attempt}"
                )
            if row.result["attempt"] != row.attempts:
                problems.append(
                    f"job {job_id}: accepted result of attempt {row.result['attempt']} but the row is at "
                    f"attempt {row.attempts} (stale completion)"
                )

    live: dict[str, list[int]] = defaultdict(list)
    for row in rows.values():
        if row.unique_key is not None and row.state in ("pending", "running", "retrying"):
            live[row.unique_key].append(row.id)
    for key, ids in live.items():
        if len(ids) > 1:
            problems.append(f"unique key {key!r} has {len(ids)} live jobs: {ids}")
    if slot_of is not None:
        slots: dict[Any, list[int]] = defaultdict(list)
        for row in rows.values():
            slot = slot_of(row)
            if slot is not None:
                slots[slot].append(row.id)
        for slot, ids in slots.items():
            if len(ids) > 1:
                problems.append(f"slot {slot!r} has {len(ids)} jobs: {ids}")

    if problems:
        shown = "\n  ".join(problems[:40])
        more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
        raise AssertionError(f"{len(problems)} invariant violations:\n  {shown}{more}")
    return Report(rows, history)
