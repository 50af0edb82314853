"""The :class:`Store` interface: everything minijobs asks of its database, in domain verbs.

The worker, the executors, the plugins and the command line speak these
verbs (or the public :class:`~minijobs.App` API built on them) and nothing
else: no SQL, no connection.  :class:`~minijobs.store.SQLiteStore` implements
them; a second backend (PostgreSQL) implements the same class and nothing
outside the store package changes.

Verbs are synchronous and may block (a lock held by another process, the
disk).  Async code never calls them on its event loop: it awaits them
through :class:`~minijobs.store.StoreThread` (``app.call_store``).

Timestamps are float epoch seconds here (the store's unit); the public API
turns them into aware UTC datetimes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, NamedTuple, Protocol

from ..job import Job, JobState

Durability = Literal["normal", "full"]
#: ``"quick"`` checks every page's structure, ``"full"`` also that every index matches its table.
IntegrityCheck = Literal["quick", "full"]
CheckpointMode = Literal["PASSIVE", "FULL", "RESTART", "TRUNCATE"]
#: What a recorded cron slot was: the start of a new schedule, a fired job, or a missed slot skipped.
SlotKind = Literal["baseline", "enqueued", "skipped"]


class NewJob(NamedTuple):
    """A validated job to insert; built by the app, written by :meth:`Store.enqueue`.

    A named tuple: the SQLite store binds it as it is, so its field order is
    the order of ``sql.INSERT``'s columns.
    """

    name: str
    queue: str
    payload: str
    priority: int
    max_attempts: int
    timeout_s: float | None
    scheduled_at: float
    created_at: float
    unique_key: str | None
    meta: str
    #: Whether the job starts out scheduled ahead (``scheduled_at > created_at``), see schema v5.
    waiting: bool


class PayloadRun(NamedTuple):
    """Jobs that share every column but the payload, with their payloads as one JSON array.

    Built by ``enqueue_many`` (see :func:`minijobs.payload.encode_calls`);
    ``size`` jobs; ``template``'s own payload is ignored, ``first``/``last``
    are the first and last payloads (to check that ids follow the array order).
    """

    template: NewJob
    payloads: str
    size: int
    first: str
    last: str


class Outcome(NamedTuple):
    """The end of one attempt, as written by :meth:`Store.finish`.

    ``state`` is succeeded, failed, cancelled or retrying (then ``scheduled_at``
    is when to run again).  ``error`` is an :class:`~minijobs.job.AttemptError`
    encoded by :func:`~minijobs.job.encode_attempt_error`, appended to the job's errors.
    """

    job_id: int
    owner: str
    attempt: int
    state: JobState
    completed_at: float | None
    result: str | None = None
    error: str | None = None
    scheduled_at: float | None = None
    progress: str | None = None


class LeaseRecord(NamedTuple):
    """A leadership lease as stored: who leads the election of ``plugin``, since when, until when."""

    plugin: str
    owner: str
    term: int
    acquired_at: float
    renewed_at: float
    expires_at: float


class ChangeWatcher(Protocol):
    """Wakes a worker when another connection or process commits (see :meth:`Store.open_watcher`).

    SQLite's polls ``PRAGMA data_version``, helped by inotify; a PostgreSQL
    store would ``LISTEN`` on a channel its writes ``NOTIFY``.
    """

    async def watch(self, on_change: Callable[[], None], *, poll_interval_s: float) -> None:
        """Call ``on_change`` in the running loop after each foreign commit; runs until cancelled.

        It must never wait on the database's locks (it runs on the host's loop);
        ``poll_interval_s`` bounds the delay where it has to poll.
        """
        ...

    def close(self) -> None: ...


class Store(ABC):
    """The database behind an :class:`~minijobs.App`.  Implementations are thread-safe.

    A PostgreSQL store provides every abstract method below; the worker,
    executors, plugins and CLI need nothing else.  Writes that decide from
    what they read (claims, cancels, recovery, elections) are atomic against
    other processes; completion writes are fenced by ``(owner, attempt)`` so a
    worker whose lease was taken away cannot overwrite a newer attempt.
    """

    #: Where the data lives (a path, or a DSN for a server database), for messages and change watching.
    path: str
    #: True when no other process can reach the data (SQLite ``:memory:``): nothing to watch, no WAL.
    is_memory: bool

    # -- life cycle and schema ------------------------------------------------

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def open_watcher(self) -> ChangeWatcher | None:
        """Something that tells when another process committed; None when no other process can write."""

    @abstractmethod
    def schema_version(self, component: str) -> int: ...

    @abstractmethod
    def migrate_component(
        self, component: str, migrations: Sequence[str] | None = None, *, to_version: int | None = None
    ) -> int:
        """Bring ``component``'s tables to ``to_version`` (default: latest); return the version.

        ``migrations=None`` means the store's own schema of a built-in
        component (``"minijobs"``, ``"minijobs.leadership"``, ``"minijobs.cron"``);
        plugins with tables of their own pass their migration scripts.
        """

    @abstractmethod
    def check_integrity(self, mode: IntegrityCheck = "quick") -> None:
        """Read everything; raise :class:`~minijobs.CorruptDatabaseError` saying what is damaged."""

    @abstractmethod
    def checkpoint(self, mode: CheckpointMode = "PASSIVE") -> tuple[int, int, int]:
        """Fold the write-ahead log back into the file: ``(busy, log_pages, folded_pages)``."""

    # -- enqueue --------------------------------------------------------------

    @abstractmethod
    def enqueue(self, rows: Sequence[NewJob | PayloadRun]) -> list[tuple[int, bool]]:
        """Insert jobs in one transaction; ``(id, created)`` per job in order (a live unique key: its holder, False)."""

    @abstractmethod
    def enqueue_one(self, row: NewJob) -> tuple[int, bool]:
        """:meth:`enqueue` of one job, the cheapest durable way."""

    # -- attempts -------------------------------------------------------------

    @abstractmethod
    def claim(self, queue: str, limit: int, *, owner: str, now: float, lease_s: float, idle: bool = True) -> list[Job]:
        """Atomically lease up to ``limit`` due jobs of ``queue`` to ``owner``, in claim order.

        A suspect (``rescues > 0``) is claimed only alone and only when ``idle``.
        """

    @abstractmethod
    def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Write the ends of attempts in one transaction; False where the fence refused a stale write."""

    @abstractmethod
    def release(self, owner: str, job_ids: Iterable[int], *, now: float) -> int:
        """Give unfinished jobs back without using up an attempt; their progress is cleared."""

    @abstractmethod
    def renew_leases(
        self, owner: str, job_ids: Sequence[int], *, now: float, lease_s: float
    ) -> tuple[set[int], set[int]]:
        """Extend ``owner``'s leases; return ``(lost, cancel_requested)`` among ``job_ids``."""

    @abstractmethod
    def cancel_requested(self, owner: str) -> set[int]:
        """Jobs leased to ``owner`` that someone asked to cancel."""

    @abstractmethod
    def set_arguments(self, owner: str, changes: Sequence[tuple[int, int, str, str]]) -> None:
        """Store the arguments and meta a running attempt runs with: ``(job id, attempt, payload, meta)``.

        Fenced like :meth:`finish`: only a job still running attempt ``attempt``
        under ``owner`` is changed (``on_job_starting`` hooks may replace them).
        """

    @abstractmethod
    def set_progress(self, job_id: int, owner: str, attempt: int, progress_json: str) -> bool: ...

    @abstractmethod
    def next_due_at(self, queues: Sequence[str], *, after: float | None = None) -> float | None:
        """Earliest due time of a runnable job in ``queues`` (later than ``after``), skipping paused queues."""

    @abstractmethod
    def first_suspect(self, queue: str, *, now: float) -> int | None:
        """The first due job of ``queue`` in claim order, if it is a suspect."""

    # -- one job --------------------------------------------------------------

    @abstractmethod
    def get(self, job_id: int) -> Job: ...

    @abstractmethod
    def state_of(self, job_id: int) -> JobState: ...

    @abstractmethod
    def cancel(self, job_id: int, *, now: float) -> Job:
        """Cancel a runnable job at once; flag a running one for its worker; leave a finished one."""

    @abstractmethod
    def retry(self, job_id: int, *, now: float) -> Job:
        """Make a finished job runnable now, granting one more attempt if it used them all."""

    # -- reads ----------------------------------------------------------------

    @abstractmethod
    def list_jobs(
        self,
        *,
        states: Sequence[str] | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs matching the filters, newest first; damaged rows are logged and left out."""

    @abstractmethod
    def count_by_state(self, *, queue: str | None = None) -> dict[JobState, int]: ...

    @abstractmethod
    def count_by_queue(self) -> dict[str, dict[JobState, int]]: ...

    @abstractmethod
    def finished_per_bucket(self, *, since: float, bucket_s: float) -> list[tuple[int, JobState, int]]:
        """``(bucket, state, count)`` of jobs finished since ``since``, in buckets of ``bucket_s``."""

    @abstractmethod
    def oldest_due(self, *, now: float) -> float | None:
        """Earliest due time among runnable jobs already due: the queue lag."""

    # -- queues ---------------------------------------------------------------

    @abstractmethod
    def set_paused(self, queue: str, paused: bool) -> None: ...

    @abstractmethod
    def paused_queues(self) -> set[str]: ...

    # -- maintenance ----------------------------------------------------------

    @abstractmethod
    def recover_expired(
        self, *, now: float, max_rescues: int, limit: int = 500, spare_owner: str | None = None
    ) -> tuple[list[int], list[int]]:
        """Requeue jobs whose lease expired, failing those rescued more than ``max_rescues`` times.

        Returns ``(requeued, poisoned)``.  Jobs leased to ``spare_owner`` (the
        caller's own worker, alive since it asks) are left alone.
        """

    @abstractmethod
    def prune(
        self,
        *,
        before: float,
        states: Sequence[str] = ("succeeded", "failed", "cancelled"),
        queue: str | None = None,
        exclude_queues: Sequence[str] = (),
        limit: int = 1000,
    ) -> int:
        """Delete up to ``limit`` finished jobs completed before ``before``; never the newest job (ids are not reused)."""

    # -- leadership -----------------------------------------------------------

    @abstractmethod
    def acquire_leadership(self, plugin: str, *, owner: str, now: float, lease_s: float) -> int | None:
        """Take or renew the lease of ``plugin``'s election; the term led, or None if another owner holds it."""

    @abstractmethod
    def resign_leadership(self, plugin: str, *, owner: str, term: int, now: float) -> bool:
        """End ``owner``'s lease of ``term`` now, so another process takes over at once."""

    @abstractmethod
    def leadership_leases(self) -> list[LeaseRecord]:
        """Every stored lease, expired ones included."""

    # -- cron slots -----------------------------------------------------------

    @abstractmethod
    def cron_last_slots(self) -> dict[str, int]:
        """The latest recorded slot (epoch seconds) of every schedule."""

    @abstractmethod
    def record_cron_slot(self, schedule: str, slot: int, *, kind: SlotKind, now: float) -> bool:
        """Record a slot; False if it was already recorded (by any process)."""

    @abstractmethod
    def enqueue_cron_slot(
        self, schedule: str, slot: int, rows: Sequence[NewJob | PayloadRun], *, now: float
    ) -> list[tuple[int, bool]]:
        """Record the slot and enqueue its jobs in one transaction; ``[]`` if the slot was already recorded."""

    @abstractmethod
    def prune_cron_slots(self, *, before: int) -> int:
        """Delete slots older than ``before``; every schedule keeps its latest."""
