"""The facade users touch: :class:`App` (enqueue, get/wait/cancel, inspect, drain, run workers).

What ``@app.job`` returns and the per-job options live in :mod:`minijobs.registry`;
they are re-exported here so ``from minijobs.app import JobRef`` keeps working.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import payload
from .backoff import Backoff
from .clock import Clock, ObservableClock, SystemClock
from .errors import ConfigurationError, JobNotFoundError, UnknownQueueError, WaitTimeoutError
from .events import EventHub
from .job import Job, JobState
from .limits import INT32_MAX, INT64_MAX, INT64_MIN, MAX_TIMESTAMP, check_duration, check_int
from .names import check_job_name, check_queue_name
from .plugin import Plugin
from .queue import Queue
from .registry import BoundJob, EnqueueRequest, JobFunction, JobRef, JobSpec, _check_spec, _same_definition
from .store import Durability, IntegrityCheck, NewJob, PayloadRun, SQLiteStore

if TYPE_CHECKING:
    from .store.thread import StoreThread
    from .worker import Worker

__all__ = ("App", "BoundJob", "EnqueueRequest", "JobFunction", "JobRef", "JobSpec")

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: enqueue_many encodes runs of at least _RUN_MIN plain-argument requests _RUN_CHUNK at a time (see App._add_rows).
_RUN_MIN = 8
_RUN_CHUNK = 2048


class App:
    """A minijobs application: a SQLite file, the queues this process serves, plugins and a job registry.

    Opening the file is lazy (first use or :meth:`open`), so an app can be
    defined at import time in a module that process-pool children re-import.

    ``plugins=None`` (the default) runs the built-ins every deployment needs:
    :class:`~minijobs.plugins.Leadership` (for each leader-scoped plugin, one
    leader among the processes on the file that run it), :class:`~minijobs.plugins.Recovery` (jobs of dead workers go
    back to their queue) and :class:`~minijobs.plugins.Pruner` (finished jobs
    are deleted after 7 days).  Pass a list to choose (e.g. add
    :class:`~minijobs.plugins.Cron`), or ``plugins=[]`` to run none.

    Opening checks the file's header and schema.  ``integrity_check="quick"``
    (or ``"full"``) also reads every page at open, so damage deep in the file
    raises :class:`~minijobs.CorruptDatabaseError` there rather than when a
    job first touches it; it is off by default because it costs a read of
    the whole file at every open (see :meth:`check_integrity`).

    Jobs can be enqueued only to the queues this App declares, so a typo in a
    queue name is an :class:`~minijobs.UnknownQueueError` at enqueue rather
    than a job that waits for ever.  A process that enqueues to queues other
    processes serve names them in ``remote_queues``: accepted by enqueue,
    never served here.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "minijobs.sqlite3",
        *,
        queues: Sequence[Queue] | None = None,
        remote_queues: Iterable[str] = (),
        plugins: Sequence[Plugin] | None = None,
        clock: Clock | None = None,
        durability: Durability = "normal",
        busy_timeout_s: float = 5.0,
        lease_s: float = 30.0,
        grace_s: float = 30.0,
        poll_interval_s: float = 0.005,
        max_payload_bytes: int = payload.DEFAULT_MAX_BYTES,
        file_mode: int | None = 0o600,
        integrity_check: IntegrityCheck | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.queues: tuple[Queue, ...] = _checked_queues((Queue("default"),) if queues is None else queues)
        if isinstance(remote_queues, str):
            raise ConfigurationError("remote_queues must be a list of queue names, not one str")
        #: Queues served by other processes that this App may enqueue to (see the class docstring).
        self.remote_queues: tuple[str, ...] = tuple(check_queue_name(name) for name in remote_queues)
        self._enqueue_queues = _queue_names(self.queues, self.remote_queues)
        if plugins is None:
            from .plugins import default_plugins

            plugins = default_plugins()
        self.plugins: tuple[Plugin, ...] = _checked_plugins(plugins)
        self.clock: Clock = clock if clock is not None else SystemClock()
        if durability not in ("normal", "full"):
            raise ConfigurationError(f"durability must be 'normal' or 'full', got {durability!r}")
        for label, value in (("busy_timeout_s", busy_timeout_s), ("lease_s", lease_s), ("poll_interval_s", poll_interval_s)):
            check_duration(value, label)
        check_duration(grace_s, "grace_s", allow_zero=True)
        if integrity_check not in (None, "quick", "full"):
            raise ConfigurationError(f"integrity_check must be 'quick', 'full' or None, got {integrity_check!r}")
        if isinstance(max_payload_bytes, bool) or not isinstance(max_payload_bytes, int) or max_payload_bytes < 64:
            raise ConfigurationError(f"max_payload_bytes must be an int >= 64, got {max_payload_bytes!r}")
        self.durability: Durability = durability
        self.busy_timeout_s = busy_timeout_s
        self.lease_s = lease_s
        self.grace_s = grace_s
        self.poll_interval_s = poll_interval_s
        self.max_payload_bytes = max_payload_bytes
        self.file_mode = file_mode
        self.integrity_check: IntegrityCheck | None = integrity_check
        self.registry: dict[str, JobFunction[..., Any]] = {}
        self.events = EventHub()
        self._store: SQLiteStore | None = None
        self._store_thread: StoreThread | None = None
        self._open_lock = threading.Lock()
        self._workers: set[Worker] = set()
        self._workers_lock = threading.Lock()
        self._finished = threading.Condition()
        self._finished_generation = 0
        #: Set by ``minijobs.testing.eager``: called with the ids of jobs just written, to run them at once.
        self._eager_hook: Callable[[list[int]], None] | None = None

    def reconfigure(self, *, queues: Iterable[Queue] | None = None, plugins: Iterable[Plugin] | None = None) -> None:
        """Replace the app's queues and/or plugins before its workers start (e.g. from a config file).

        Checked as the constructor checks them; on error nothing changes.  If
        the database is open already, new plugins bring their tables up to date.
        """
        with self._workers_lock:
            if self._workers:
                raise ConfigurationError("cannot reconfigure an app while one of its workers runs")
        new_queues = self.queues if queues is None else _checked_queues(queues)
        new_plugins = self.plugins if plugins is None else _checked_plugins(plugins)
        added = [p for p in new_plugins if all(p is not old for old in self.plugins)]
        self.queues, self.plugins = new_queues, new_plugins
        self._enqueue_queues = _queue_names(new_queues, self.remote_queues)
        if self._store is not None:
            for plugin in added:
                plugin.migrate(self)

    # -- storage -------------------------------------------------------------

    @property
    def store(self) -> SQLiteStore:
        """The app's store, opened on first use (which may wait for the file's lock: async code
        opens it through :meth:`call_store` first)."""
        store = self._store
        if store is None:
            store = self.open()
        return store

    async def _opened(self) -> SQLiteStore:
        """The store for async code: opening (which may wait for another process's lock) runs on the store thread."""
        store = self._store
        return store if store is not None else await self.call_store(self.open)

    def open(self) -> SQLiteStore:
        """Open (creating and migrating if needed) the database now; errors surface here."""
        with self._open_lock:
            return self._open_locked(self.integrity_check)

    def _open_locked(self, integrity_check: IntegrityCheck | None) -> SQLiteStore:
        if self._store is None:
            store = SQLiteStore(
                self.path, durability=self.durability, busy_timeout_s=self.busy_timeout_s, file_mode=self.file_mode,
                integrity_check=integrity_check,
            )
            # Published before plugin migrations: Plugin.migrate reaches the store through
            # ``app.store``, which would otherwise re-enter open() and deadlock on the lock.
            self._store = store
            try:
                for plugin in self.plugins:
                    plugin.migrate(self)
            except BaseException:
                self._store = None
                store.close()
                raise
        return self._store

    def check_integrity(self, mode: IntegrityCheck = "quick") -> None:
        """Read the whole database file now; :class:`~minijobs.CorruptDatabaseError` says what is damaged.

        ``"quick"`` is ``PRAGMA quick_check`` (every page's structure),
        ``"full"`` is ``PRAGMA integrity_check`` (also every index against its
        table).  If the app is not open yet, the check runs while opening,
        before any migration writes to the file; the ``integrity_check``
        option does the same at every open.  On an open app it holds the
        app's connection while it reads (other calls in this process wait).
        """
        if mode not in ("quick", "full"):
            raise ConfigurationError(f"integrity check must be 'quick' or 'full', got {mode!r}")
        with self._open_lock:
            store = self._store
            if store is None:
                self._open_locked(mode)
                return
        store.check_integrity(mode)

    def close(self) -> None:
        with self._open_lock:
            thread = self._store_thread
            if thread is not None:
                thread.close()  # lets calls already queued finish first
            if self._store is not None:
                self._store.close()
                self._store = None

    async def call_store(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` run on this app's store thread, never on the caller's event loop.

        Every store call of async code goes through here (the worker's claims,
        completions and heartbeats, plugins, the ``_async`` APIs): a database
        locked by another process then delays only the awaiting task, not the
        loop.  Calls run one at a time, in the order made.
        """
        thread = self._store_thread
        if thread is None:
            with self._open_lock:
                if self._store_thread is None:
                    # Loaded on first use: `import minijobs` loads no event loop machinery.
                    from .store.thread import StoreThread

                    self._store_thread = StoreThread(name=f"minijobs-store-{os.path.basename(self.path)}")
                thread = self._store_thread
        return await thread.call(fn, *args, **kwargs)

    def __enter__(self) -> App:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registry ------------------------------------------------------------

    @overload
    def job(self, func: Callable[P, R], /) -> JobFunction[P, R]: ...

    @overload
    def job(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = 1,
        timeout_s: float | None = None,
        retry: Backoff | None = None,
    ) -> Callable[[Callable[P, R]], JobFunction[P, R]]: ...

    def job(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = 1,
        timeout_s: float | None = None,
        retry: Backoff | None = None,
    ) -> Any:
        """Register a job function (``async def`` or plain ``def``) under ``name``.

        The default name is ``module.qualname``.  Jobs are looked up by this
        name when they run; nothing is ever imported from a name in the database.
        """
        spec = JobSpec(queue=queue, priority=priority, max_attempts=max_attempts, timeout_s=timeout_s)
        _check_spec(spec, max_payload_bytes=self.max_payload_bytes)
        if retry is not None and not isinstance(retry, Backoff):
            raise ConfigurationError(f"retry must be a minijobs.Backoff, got {type(retry).__name__}")

        def register(fn: Callable[..., Any]) -> JobFunction[..., Any]:
            if not callable(fn):
                raise TypeError(f"@app.job needs a function, got {fn!r}")
            job_name = check_job_name(name if name is not None else f"{fn.__module__}.{fn.__qualname__}")
            existing = self.registry.get(job_name)
            if existing is not None and not _same_definition(existing.func, fn):
                raise ConfigurationError(
                    f"a different function is already registered as {job_name!r}; give one of them another "
                    "name (@app.job(name=...)): jobs are run by name, so a second function would silently "
                    "replace the first"
                )
            wrapped = JobFunction(self, fn, name=job_name, spec=spec, retry=retry)
            self.registry[job_name] = wrapped
            return wrapped

        return register(func) if func is not None else register

    # -- enqueue ---------------------------------------------------------------

    def _new_row(self, function: JobFunction[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], spec: JobSpec, now: float) -> NewJob:
        if function.app is not self:
            raise ConfigurationError(f"job {function.name!r} is registered on another App")
        if spec.queue not in self._enqueue_queues:
            raise self._unknown_queue(spec.queue)
        if self._eager_hook is not None and spec.queue in self.remote_queues:
            # Refused before the write: eager mode runs each job at once, here, and cannot run this one.
            raise ConfigurationError(
                f"eager mode: queue {spec.queue!r} is served by another process (remote_queues), so its jobs "
                "cannot run in this one; declare it with App(queues=[...]) for the test"
            )
        text = payload.encode_call(args, kwargs, max_bytes=self.max_payload_bytes)
        if spec.run_at is not None:
            scheduled = spec.run_at.timestamp()
        elif spec.delay_s:
            scheduled = now + spec.delay_s
            if scheduled > MAX_TIMESTAMP:
                raise ConfigurationError(f"delay_s={spec.delay_s!r} from now is past the year 9999")
        else:
            scheduled = now
        meta = "{}" if not spec.meta else payload.encode(dict(spec.meta), what="meta", max_bytes=self.max_payload_bytes)
        # Positional: NewJob's field order (name, queue, payload, priority, max_attempts, timeout_s,
        # scheduled_at, created_at, unique_key, meta, waiting); keywords cost more per enqueue.
        return NewJob(
            function.name, spec.queue, text, spec.priority, spec.max_attempts, spec.timeout_s,
            scheduled, now, spec.unique_key, meta, scheduled > now,
        )

    @property
    def enqueue_queues(self) -> frozenset[str]:
        """Names of the queues jobs may be enqueued to: the declared ones and ``remote_queues``."""
        return self._enqueue_queues

    def _unknown_queue(self, name: str) -> UnknownQueueError:
        declared = ", ".join(sorted(self._enqueue_queues))
        return UnknownQueueError(
            f"queue {name!r} is not declared on this App (it can enqueue to: {declared}); declare it with "
            f"App(queues=[..., Queue({name!r})]), or, if another process serves it, App(remote_queues=[{name!r}])"
        )

    def _enqueue_one(self, function: JobFunction[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], spec: JobSpec) -> JobRef:
        function._signature.check(function.name, args, kwargs)
        job_id, created = self.store.enqueue_one(self._new_row(function, args, kwargs, spec, self.clock.now()))
        return self._enqueued_one(job_id, created)

    async def _enqueue_one_async(
        self, function: JobFunction[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], spec: JobSpec
    ) -> JobRef:
        """:meth:`_enqueue_one` with the write on the store thread; checks run here, before it is queued."""
        function._signature.check(function.name, args, kwargs)
        row = self._new_row(function, args, kwargs, spec, self.clock.now())
        job_id, created = await self.call_store((await self._opened()).enqueue_one, row)
        return self._enqueued_one(job_id, created)

    def _enqueued_one(self, job_id: int, created: bool) -> JobRef:
        if created:
            self._after_enqueue([job_id])
            if self._eager_hook is not None:
                self._eager_hook([job_id])
        return JobRef(self, job_id, created=created)

    def enqueue_many(self, requests: Iterable[EnqueueRequest]) -> list[JobRef]:
        """Enqueue many jobs in one transaction: all are written or none."""
        rows = self._rows(requests)
        results = self.store.enqueue(rows)
        return self._enqueued(results)

    def enqueue_for_cron_slot(self, schedule: str, slot: int, request: EnqueueRequest, *, now: float) -> list[JobRef]:
        """Enqueue ``request`` for a cron slot: the slot is recorded with the job, once across processes.

        Returns ``[]`` when the slot was already recorded (another process or a
        drain fired it first).  For :class:`~minijobs.plugins.Cron`.
        """
        rows = self._rows([request])
        return self._enqueued(self.store.enqueue_cron_slot(schedule, slot, rows, now=now))

    def _rows(self, requests: Iterable[EnqueueRequest]) -> list[NewJob | PayloadRun]:
        """Checked rows for ``requests``: a bad request raises before anything is written."""
        now = self.clock.now()
        rows: list[NewJob | PayloadRun] = []
        group: list[EnqueueRequest] = []
        for request in requests:
            if not isinstance(request, EnqueueRequest):
                raise TypeError(f"enqueue_many takes fn.prepare(...) requests, got {type(request).__name__}")
            if group and (request.function is not group[0].function or request.spec is not group[0].spec):
                self._add_rows(group, now, rows)
                group = []
            group.append(request)
        if group:
            self._add_rows(group, now, rows)
        return rows

    def _enqueued(self, results: list[tuple[int, bool]]) -> list[JobRef]:
        """What follows a write of new jobs: wake workers, emit ``job.enqueued``, run them in eager mode."""
        self._after_enqueue([job_id for job_id, created in results if created])
        if self._eager_hook is not None and any(created for _, created in results):
            self._eager_hook([job_id for job_id, created in results if created])
        return [JobRef(self, job_id, created=created) for job_id, created in results]

    def _add_rows(self, group: list[EnqueueRequest], now: float, rows: list[NewJob | PayloadRun]) -> None:
        """Rows for requests of one function with one spec: only their payloads differ.

        The first request is checked in full; the others reuse its row.  Plain
        arguments are encoded in chunks by one C call each and inserted as a
        :class:`PayloadRun`; anything else takes the per-call path (precise errors).
        """
        first = group[0]
        first.function._signature.check_many(first.function.name, group)
        row = self._new_row(first.function, first.args, first.kwargs, first.spec, now)
        rows.append(row)
        max_bytes = self.max_payload_bytes
        encode_call = payload.encode_call
        start = 1
        if row.unique_key is None:
            while len(group) - start >= _RUN_MIN:
                chunk = group[start:start + _RUN_CHUNK]
                calls = [(r.args, r.kwargs) for r in chunk]
                text = payload.encode_calls(calls, max_bytes=max_bytes)
                if text is None:
                    break
                ends = [encode_call(*calls[0], max_bytes=max_bytes), encode_call(*calls[-1], max_bytes=max_bytes)]
                rows.append(PayloadRun(row, text, len(chunk), ends[0], ends[1]))
                start += len(chunk)
        for request in group[start:]:
            text = encode_call(request.args, request.kwargs, max_bytes=max_bytes)
            rows.append(NewJob(row[0], row[1], text, *row[3:]))

    async def enqueue_many_async(self, requests: Iterable[EnqueueRequest]) -> list[JobRef]:
        """:meth:`enqueue_many` with the write on the store thread (the caller's loop never waits on it)."""
        rows = self._rows(requests)
        results = await self.call_store((await self._opened()).enqueue, rows)
        return self._enqueued(results)

    def _after_enqueue(self, ids: list[int]) -> None:
        if not ids:
            return
        for worker in self._workers:
            worker.wake()
        if self.events.wants("job.enqueued"):
            self.events.emit("job.enqueued", job_ids=ids)

    # -- inspect and control ---------------------------------------------------

    def get(self, job_id: int) -> Job:
        """The job with ``job_id``; raises :class:`~minijobs.JobNotFoundError`."""
        return self.store.get(_check_id(job_id))

    def jobs(
        self,
        *,
        state: JobState | str | Sequence[JobState | str] | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs filtered by state(s), queue and name, newest first."""
        states: list[str] | None = None
        if state is not None:
            raw = [state] if isinstance(state, str) else list(state)
            try:
                states = [JobState(s).value for s in raw]
            except ValueError:
                raise ValueError(f"unknown job state in {raw!r}; states are {[s.value for s in JobState]}") from None
        if queue is not None:
            check_queue_name(queue)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an int >= 0, got {limit!r}")
        return self.store.list_jobs(states=states, queue=queue, name=name, limit=limit, offset=offset)

    def cancel(self, job_id: int) -> Job:
        """Cancel a job.  Pending jobs never run; a running job is stopped by its worker
        (hard for async and process jobs, cooperative for threads).  Finished jobs are left as they are."""
        job = self.store.cancel(_check_id(job_id), now=self.clock.now())
        if job.state is JobState.RUNNING:
            for worker in self._workers:
                worker.request_cancel(job.id)
            self.events.emit("job.cancel_requested", job_id=job.id)
        elif job.state is JobState.CANCELLED:
            self.notify_finished([job.id])
        return job

    def retry(self, job_id: int) -> Job:
        """Put a finished job back in its queue now (granting one more attempt if needed)."""
        job = self.store.retry(_check_id(job_id), now=self.clock.now())
        self._after_enqueue([job.id])
        self.events.emit("job.retried", job_id=job.id)
        return job

    def pause_queue(self, name: str) -> None:
        """Stop claiming from ``name`` in every process; running jobs finish."""
        self.store.set_paused(check_queue_name(name), True)
        self.events.emit("queue.paused", queue=name)

    def resume_queue(self, name: str) -> None:
        self.store.set_paused(check_queue_name(name), False)
        for worker in self._workers:
            worker.wake()
        self.events.emit("queue.resumed", queue=name)

    # -- counts and statistics ---------------------------------------------------
    # What dashboards and the CLI (``queues list``, ``stats``, ``migrate``) show; all read-only.

    def counts(self, *, queue: str | None = None) -> dict[JobState, int]:
        """How many jobs are in each state (every state a key, zero included), of ``queue`` if given."""
        if queue is not None:
            check_queue_name(queue)
        return self.store.count_by_state(queue=queue)

    def queue_counts(self) -> dict[str, dict[JobState, int]]:
        """Job counts by state (every state a key) for each queue with jobs in the database, declared here or not."""
        return self.store.count_by_queue()

    def paused_queues(self) -> frozenset[str]:
        """Names of the queues paused in the database (by any process, see :meth:`pause_queue`)."""
        return frozenset(self.store.paused_queues())

    def finished_counts(
        self, *, since: datetime, interval_s: float = 60.0, intervals: int = 1
    ) -> list[dict[JobState, int]]:
        """Jobs that finished, by state, in each of ``intervals`` intervals from ``since``, oldest first.

        Item ``i`` counts the jobs that finished (succeeded, failed or
        cancelled: each a key, zero included) in ``[since + i * interval_s,
        since + (i + 1) * interval_s)`` on the app's clock; the throughput of
        the last five minutes is ``finished_counts(since=now - 5 min,
        intervals=5)``.  Pruned jobs are not counted.
        """
        if not isinstance(since, datetime) or since.utcoffset() is None:
            raise ConfigurationError(f"since must be a timezone-aware datetime, got {since!r}")
        check_duration(interval_s, "interval_s")
        check_int(intervals, "intervals", low=1, high=INT32_MAX)
        counts = [{state: 0 for state in JobState if state.is_terminal} for _ in range(intervals)]
        for bucket, state, n in self.store.finished_per_bucket(since=since.timestamp(), bucket_s=interval_s):
            if 0 <= bucket < intervals:
                counts[bucket][state] += n
        return counts

    def oldest_due_at(self) -> datetime | None:
        """When the longest-waiting job that is due now became due; None if no due job waits.

        Running jobs and jobs scheduled later do not count.  The time since
        then is the queue lag: how far the workers are behind.
        """
        oldest = self.store.oldest_due(now=self.clock.now())
        return None if oldest is None else datetime.fromtimestamp(oldest, UTC)

    def schema_versions(self) -> dict[str, int]:
        """Schema version of the core tables (``"minijobs"``) and of each configured plugin that has tables.

        Opening the app brings them up to date, so on an open app these are
        the versions this code knows.
        """
        store = self.store
        versions = {"minijobs": store.schema_version("minijobs")}
        for plugin in self.plugins:
            version = store.schema_version(plugin.get_identifier())
            if version:  # plugins with tables (the built-in ones have the store's own schema)
                versions[plugin.get_identifier()] = version
        return versions

    # -- waiting ---------------------------------------------------------------

    def notify_finished(self, job_ids: Sequence[int]) -> None:
        """Called by workers after outcomes are written, to wake ``JobRef.wait`` callers."""
        if not job_ids:
            return
        with self._finished:
            self._finished_generation += 1
            self._finished.notify_all()

    def _wait(self, job_id: int, timeout_s: float | None) -> Job:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._finished:
                generation = self._finished_generation
            job = self.get(job_id)
            if job.state.is_terminal:
                return job
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeoutError(f"job {job_id} is still {job.state} after {timeout_s} s")
            # Same-process completions notify at once; other processes' are polled.
            pause = 0.02 if remaining is None else min(0.02, remaining)
            with self._finished:
                if self._finished_generation == generation:
                    self._finished.wait(pause)

    async def _wait_async(self, job_id: int, timeout_s: float | None) -> Job:
        import asyncio  # lazily: `import minijobs` loads no event loop machinery
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        pause = 0.001
        job_id = _check_id(job_id)
        while True:
            job = await self.call_store((await self._opened()).get, job_id)
            if job.state.is_terminal:
                return job
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise WaitTimeoutError(f"job {job_id} is still {job.state} after {timeout_s} s")
            await asyncio.sleep(pause if remaining is None else min(pause, remaining))
            pause = min(0.02, pause * 2)

    # -- workers -------------------------------------------------------------------

    def attach_worker(self, worker: Worker) -> None:
        with self._workers_lock:
            self._workers = {*self._workers, worker}

    def detach_worker(self, worker: Worker) -> None:
        with self._workers_lock:
            self._workers = self._workers - {worker}

    def listen_clock(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Subscribe to jumps of an observable (test) clock; returns an unsubscribe function."""
        clock = self.clock
        if not isinstance(clock, ObservableClock):
            return None
        clock.add_listener(callback)
        return lambda: clock.remove_listener(callback)

    def drain(self, *, queues: Sequence[str] | None = None, raise_on_failure: bool = False) -> int:
        """Run every due job to completion in this process and return how many attempts ran.

        Only jobs due now (by the app's clock) run; a retry scheduled for later
        is left for a later drain.  With ``raise_on_failure``, the first job that
        ends failed raises :class:`~minijobs.JobFailedError` (after outcomes are written).
        """
        import asyncio  # lazily: `import minijobs` loads no event loop machinery

        from . import worker as _  # noqa: F401 - loaded before the loop runs: in drain_async it stalls a loop step
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.drain_async(queues=queues, raise_on_failure=raise_on_failure))
        raise RuntimeError("drain() called inside a running event loop; use await app.drain_async()")

    async def drain_async(self, *, queues: Sequence[str] | None = None, raise_on_failure: bool = False) -> int:
        from .worker import Worker  # lazily: `import minijobs` loads no event loop machinery
        worker = Worker(self, queues=queues, burst=True, raise_on_failure=raise_on_failure, grace_s=0)
        await self._opened()
        await worker.run()
        return worker.jobs_finished

    @contextlib.contextmanager
    def running(self, **options: Any) -> Iterator[Worker]:
        """Run a worker in a background thread for the duration of the block (for sync apps).

        No signal handlers are installed; leaving the block stops the worker
        gracefully (running jobs get ``grace_s`` to finish, then are released).
        """
        import asyncio  # lazily: `import minijobs` loads no event loop machinery

        from .worker import Worker  # lazily: `import minijobs` loads no event loop machinery
        worker = Worker(self, **options)
        failure: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(worker.run())
            except BaseException as exc:
                failure.append(exc)
                logger.exception("worker thread %s crashed", worker.id)
            finally:
                worker.started.set()

        thread = threading.Thread(target=target, name=f"minijobs-worker-{worker.id}", daemon=True)
        self.open()
        thread.start()
        worker.started.wait()
        if failure:
            thread.join()
            raise failure[0]
        try:
            yield worker
        finally:
            worker.stop()
            thread.join()
        if failure:
            raise failure[0]

    @contextlib.asynccontextmanager
    async def worker(self, **options: Any) -> AsyncIterator[Worker]:
        """Run a worker as a task in the caller's event loop for the duration of the block."""
        import asyncio  # lazily: `import minijobs` loads no event loop machinery

        from .worker import Worker  # lazily: `import minijobs` loads no event loop machinery
        worker = Worker(self, **options)
        await self._opened()
        task = asyncio.create_task(worker.run(), name=f"minijobs-worker-{worker.id}")
        started = asyncio.ensure_future(asyncio.to_thread(worker.started.wait))
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            started.cancel()
            await task  # raises the start-up error
        try:
            yield worker
        finally:
            worker.stop()
            await task

    def run_worker(self, **options: Any) -> None:
        """Run a worker in the foreground until SIGTERM or SIGINT (a second signal stops at once)."""
        import asyncio  # lazily: `import minijobs` loads no event loop machinery
        import signal  # lazily: `import minijobs` loads no event loop machinery

        from .worker import Worker  # lazily: `import minijobs` loads no event loop machinery
        worker = Worker(self, **options)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            signals = 0

            def on_signal(signum: int) -> None:
                nonlocal signals
                signals += 1
                logger.info("received %s; %s", signal.Signals(signum).name,
                            "stopping gracefully" if signals == 1 else "stopping now")
                worker.stop(now=signals > 1)

            installed = []
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, on_signal, sig)
                    installed.append(sig)
            try:
                await worker.run()
            finally:
                for sig in installed:
                    loop.remove_signal_handler(sig)

        self.open()
        asyncio.run(main())

    def __repr__(self) -> str:
        return f"<minijobs.App {self.path!r} queues={[q.name for q in self.queues]}>"


def _check_id(job_id: object) -> int:
    """A job id to look up: an int; one outside SQLite's 64-bit range names no job."""
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise TypeError(f"job id must be an int, got {type(job_id).__name__}")
    if not INT64_MIN <= job_id <= INT64_MAX:
        raise JobNotFoundError(f"no job with id {job_id}")
    return job_id


def _queue_names(queues: Iterable[Queue], remote: Iterable[str]) -> frozenset[str]:
    return frozenset(q.name for q in queues) | frozenset(remote)


def _checked_queues(queues: Iterable[Queue]) -> tuple[Queue, ...]:
    checked = tuple(queues)
    if not all(isinstance(q, Queue) for q in checked):
        raise ConfigurationError("queues must be minijobs.Queue instances")
    names = [q.name for q in checked]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"queue names must be unique, got {names}")
    return checked


def _checked_plugins(plugins: Iterable[Plugin]) -> tuple[Plugin, ...]:
    """Check a plugin list: Plugin instances, each identifier once, dependencies configured.

    A leader-scoped plugin without the Leadership plugin is refused rather than
    Leadership being added for it: ``plugins=[...]`` is the complete list (an
    unlisted plugin with its own table and lease writes would be a surprise, and
    ``plugins=[]`` must mean none), and the built-in leader plugins already name
    Leadership as a dependency, so a custom one is held to the same rule.
    Accepted, such a plugin would silently never run.
    """
    from .plugin import PluginScope
    from .plugins.leadership import IDENTIFIER as LEADERSHIP  # lazily, as App() loads the built-ins

    checked = tuple(plugins)
    for plugin in checked:
        if not isinstance(plugin, Plugin):
            raise ConfigurationError(f"plugins must be minijobs.Plugin instances, got {plugin!r}")
    ids = [p.get_identifier() for p in checked]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigurationError(f"plugins configured twice: {duplicates}")
    for plugin in checked:
        missing = [d for d in plugin.get_dependencies() if d not in ids]
        if missing:
            raise ConfigurationError(f"plugin {plugin.get_identifier()} needs {missing}, which are not configured")
        if plugin.get_scope() is PluginScope.LEADER and LEADERSHIP not in ids:
            raise ConfigurationError(
                f"plugin {plugin.get_identifier()} runs on the leader only (scope LEADER), but no leader can be "
                "elected: add minijobs.plugins.Leadership() to the app's plugins"
            )
    return checked
