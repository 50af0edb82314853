"""The worker: claims due jobs into executors, writes their outcomes, keeps leases alive.

One asyncio loop drives everything.  Each iteration flushes finished attempts
in one transaction, then claims exactly the free slots of every queue.  It
sleeps until something can have changed: an in-process enqueue or completion
(direct wake-up), a commit by another process (``PRAGMA data_version``
polled every few milliseconds on a spare connection), the next scheduled job
falling due, or a jump of an observable test clock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import outcome as outcome_policy
from . import payload
from .context import encode_progress
from .errors import (
    JobFailedError,
    PayloadTypeError,
    PayloadValueError,
    PluginTrigger,
    StoreError,
)
from .executors.aio import AsyncExecutor
from .executors.base import Executor
from .hooks import JobHooks, proposed_job
from .job import Job, JobState, Progress, decode_attempt_errors, encode_attempt_error
from .limits import check_duration
from .outcome import Action
from .store import Outcome, Store
from .supervisor import PLUGIN_STOP_S, PluginSupervisor

if TYPE_CHECKING:
    from .app import App
    from .registry import JobFunction

logger = logging.getLogger(__name__)

#: Longest the loop sleeps without a reason, as a guard against missed wake-ups and wall-clock jumps.
MAX_IDLE_S = 2.0



class Worker:
    """Runs the jobs of an app's queues.  Create through ``app.running()``, ``app.worker()``,
    ``app.run_worker()`` or ``app.drain()`` rather than directly."""

    def __init__(
        self,
        app: App,
        *,
        queues: Sequence[str] | None = None,
        worker_id: str | None = None,
        lease_s: float | None = None,
        grace_s: float | None = None,
        poll_interval_s: float | None = None,
        burst: bool = False,
        raise_on_failure: bool = False,
        plugins: bool | None = None,
    ) -> None:
        self.app = app
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        known = {q.name for q in app.queues}
        if queues is not None:
            unknown = sorted(set(queues) - known)
            if unknown:
                raise ValueError(f"queues {unknown} are not declared on the app (declared: {sorted(known)})")
        self.queues = [q for q in app.queues if queues is None or q.name in queues]
        # Checked as App checks its own defaults: a lease past a century could not be stored.
        self.lease_s = app.lease_s if lease_s is None else check_duration(lease_s, "lease_s")
        self.grace_s = app.grace_s if grace_s is None else check_duration(grace_s, "grace_s", allow_zero=True)
        self.poll_interval_s = (
            app.poll_interval_s if poll_interval_s is None else check_duration(poll_interval_s, "poll_interval_s")
        )
        self.burst = burst
        self.raise_on_failure = raise_on_failure
        self.run_plugins = (not burst) if plugins is None else plugins
        self.executors: dict[str, Executor] = {}
        #: Attempts finished (succeeded, failed, retrying or cancelled) by this worker.
        self.jobs_finished = 0
        self._outcomes: list[tuple[Outcome, Job]] = []
        self._released: list[int] = []
        #: Jobs claimed again while this worker's own stale attempt of them still runs (see ``_wanted_claims``).
        self._deferred: dict[int, tuple[Executor, Job]] = {}
        #: Queues whose executor runs a suspect (a job rescued from a dead worker): nothing else is
        #: claimed for them until their executor is idle again (see ``_wanted_claims``).
        self._isolated: set[str] = set()
        self._progress: dict[int, tuple[Job, str]] = {}
        #: Arguments and meta that ``on_job_starting`` hooks changed: ``(job id, attempt, payload, meta)``.
        self._arguments: list[tuple[int, int, str, str]] = []
        #: Per queue, claimed jobs whose ``async def`` starting hooks are still awaited (each holds a slot).
        self._hooking: dict[str, int] = {}
        #: Tasks awaiting a job's ``async def`` hooks (see :meth:`_spawn`).
        self._hook_tasks: set[asyncio.Task[None]] = set()
        #: Running jobs someone asked to cancel: their ``Cancelled`` is a cancellation even while stopping.
        self._cancels: set[int] = set()
        self._failure: JobFailedError | None = None
        #: The one stop signal: set when the stop begins (plugins' ``sleep`` returns False from then on).
        #: Created here, not in :meth:`run`: a stop asked for before the loop runs must be kept.
        self.stopping = asyncio.Event()
        #: Set when the stop must not wait for running jobs (``stop(now=True)``).
        self.hurried = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id: int | None = None
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.hooks = JobHooks(app.plugins, max_payload_bytes=app.max_payload_bytes)
        self.plugins = PluginSupervisor(self, app.plugins if self.run_plugins else ())
        #: Identifiers of the leader-scoped plugins this worker runs: the elections it takes part in.
        self.leader_plugins: tuple[str, ...] = self.plugins.leader_plugins

    # -- thread-safe controls ---------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("worker is not running")
        return self._loop

    @property
    def is_stopping(self) -> bool:
        """True from the moment the stop begins (the state of :attr:`stopping`)."""
        return self.stopping.is_set()

    @property
    def max_payload_bytes(self) -> int:
        """Largest encoded result or argument set a job may have (the app's ``max_payload_bytes``)."""
        return self.app.max_payload_bytes

    def job_function(self, name: str) -> JobFunction[..., Any] | None:
        """The registered function of job ``name`` (None if this process registered none)."""
        return self.app.registry.get(name)

    def job_modules(self) -> set[str]:
        """Modules defining the registered job functions (what a process child imports)."""
        return {m for f in self.app.registry.values() if isinstance(m := getattr(f.func, "__module__", None), str)}

    @property
    def is_idle(self) -> bool:
        """True while no job of this worker runs (a good moment for maintenance such as a WAL truncation)."""
        return not any(executor.running for executor in self.executors.values())

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread_id

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback`` in the worker's loop thread (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if self.in_loop_thread():
            loop.call_soon(callback, *args)
        else:
            try:
                loop.call_soon_threadsafe(callback, *args)
            except RuntimeError:  # loop closed between the check and the call
                pass

    def wake(self) -> None:
        """Make the loop look for work now (new jobs, freed slots)."""
        if self.in_loop_thread():
            self._wake_event.set()
        else:
            self.call_soon(self._wake_event.set)

    def stop(self, *, now: bool = False) -> None:
        """Ask the worker to stop: finish running jobs within ``grace_s`` (or cancel them at once if ``now``)."""
        if self._loop is None:
            self.stopping.set()  # nothing waits on it yet: safe from any thread
            return
        self.call_soon(self._begin_stop, now)

    def request_cancel(self, job_id: int) -> None:
        self.call_soon(self._cancel_local, job_id, "cancel")

    def report_progress(self, job_id: int, progress: Progress, text: str | None = None) -> None:
        """Called by job contexts (any thread); written to the DB at most every heartbeat tick.

        ``text`` is the report as checked and encoded by :func:`~minijobs.context.encode_progress`
        where the job called ``set_progress``; a report without it (a process child's pipe) is
        checked here by that same function, and a bad one raises to the caller before it is noted.
        """
        if text is None:
            progress, text = encode_progress(progress.done, progress.total, progress.message)
        if self.in_loop_thread():
            # Noted now, not later: an executor that reports progress then completion from the
            # loop thread (process pipes, batched thread hops) must not see the progress dropped.
            self._note_progress(job_id, progress, text)
        else:
            self.call_soon(self._note_progress, job_id, progress, text)

    # -- loop-thread internals ----------------------------------------------

    def _begin_stop(self, now: bool) -> None:
        """Stop claiming; running jobs see ``current_job().cancelled`` at once (``now``: no grace either).

        Flagging at once is what lets a cooperative job end a graceful stop
        early; nothing is recorded, so a job that finishes within ``grace_s``
        has its outcome written, and one that raises ``Cancelled`` in reply is
        released (see :meth:`job_completed`).
        """
        first = not self.stopping.is_set()
        flagged: list[int] | None = None
        if first:
            self.stopping.set()
            flagged = [job_id for e in self.executors.values() for job_id in e.flag_stopping()]
            self.app.events.emit("worker.stopping", worker_id=self.id)
        hurry = now and not self.hurried.is_set()
        if hurry:
            self.hurried.set()
        if first or hurry:
            self._log_stop(now=now, flagged=flagged)
        self._wake_event.set()

    def _log_stop(self, *, now: bool, flagged: list[int] | None) -> None:
        """One INFO line saying what the stop waits for (a silent 30 s wait looks like a hang)."""
        running = sorted(job_id for e in self.executors.values() for job_id in e.running)
        if not running:
            if not self.burst:
                logger.info("worker %s stopping: no jobs running", self.id)
            return
        shown = ", ".join(str(job_id) for job_id in running[:20]) + (", ..." if len(running) > 20 else "")
        if now:
            logger.info("worker %s stopping now: releasing %d running job(s) (ids %s) without waiting",
                        self.id, len(running), shown)
            return
        seen = len(set(flagged or ()) & set(running))
        who = ("they see current_job().cancelled" if seen == len(running) else
               f"{seen} of them see current_job().cancelled (the others cannot be told)")
        logger.info("worker %s stopping: waiting up to %.1f s for %d running job(s) (ids %s); %s",
                    self.id, self.grace_s, len(running), shown, who)

    def _cancel_local(self, job_id: int, reason: str) -> None:
        for executor in self.executors.values():
            if job_id in executor.running:
                if reason == "cancel":
                    self._cancels.add(job_id)
                executor.cancel(job_id, reason=reason)  # type: ignore[arg-type]

    def _note_progress(self, job_id: int, progress: Progress, text: str) -> None:
        job = self._find_running(job_id)
        if job is None:
            return
        self._progress[job_id] = (job, text)
        self.app.events.emit("job.progress", job_id=job_id, progress=progress, job=job)

    def _find_running(self, job_id: int) -> Job | None:
        for executor in self.executors.values():
            job = executor.running.get(job_id)
            if job is not None:
                return job
        return None

    @property
    def is_leader(self) -> bool:
        """True while this worker leads the election of at least one of its leader-scoped plugins."""
        return self.plugins.is_leader

    def leads(self, plugin: str) -> bool:
        """True while this worker leads the election of the leader-scoped plugin ``plugin`` (an identifier)."""
        return self.plugins.leads(plugin)

    def set_leader(self, leader: bool, *, plugin: str | None = None) -> None:
        """Record whether this worker leads ``plugin``'s election (None: all of :attr:`leader_plugins`).

        Called by the Leadership plugin in the loop thread; the plugin concerned
        starts or stops accordingly (see :mod:`minijobs.supervisor`).
        """
        self.plugins.set_leader(leader, plugin=plugin)

    def job_starting(self, job: Job) -> Job:
        """Called by the executor as ``job`` starts (its ``on_job_starting`` hooks ran before the push)."""
        if self.app.events.wants("job.started"):
            self.app.events.emit("job.started", job=job, worker_id=self.id)
        return job

    def _start(self, executor: Executor, job: Job) -> None:
        """Push a claimed job into its executor once the plugins' ``on_job_starting`` hooks had it."""
        hooks = self.hooks
        if not hooks.see_starts:
            executor.push(job)
        elif not hooks.starting_is_async:
            self._push_started(executor, job, hooks.starting(job, self))
        else:
            # The job holds its slot while its hooks are awaited (see ``_free_slots``).
            name = executor.queue.name
            self._hooking[name] = self._hooking.get(name, 0) + 1
            self._spawn(self._start_after_hooks(executor, job), f"minijobs-start-{job.id}")

    async def _start_after_hooks(self, executor: Executor, job: Job) -> None:
        name = executor.queue.name
        try:
            changed = await self.hooks.starting_async(job, self)
        except BaseException:
            self._released.append(job.id)  # cancelled by the stop: the job goes back untouched
            raise
        finally:
            self._hooking[name] -= 1
            self._wake_event.set()
        if self.stopping.is_set():
            self._released.append(job.id)
            return
        self._push_started(executor, job, changed)

    def _push_started(self, executor: Executor, claimed: Job, job: Job) -> None:
        """Push ``job`` as the hooks left it; arguments or meta they changed are stored with the attempt."""
        if job is not claimed and (job.args != claimed.args or job.kwargs != claimed.kwargs
                                   or job.meta != claimed.meta):
            args, meta = self.hooks.encode_arguments(job)  # checked by the hooks already
            self._arguments.append((job.id, job.attempts, args, meta))
        executor.push(job)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run a job's awaited hooks as a task that the stop waits for (see :meth:`_settle_hooks`)."""
        task = self.loop.create_task(coro, name=name)
        self._hook_tasks.add(task)
        task.add_done_callback(self._hook_tasks.discard)

    def job_completed(self, job: Job, *, exc: BaseException | None, result: Any) -> None:
        """Decide the outcome of an attempt (success, retry, failure, cancel, release) and queue its write."""
        deferred = self._deferred.get(job.id)
        if deferred is not None and deferred[1] is not job:
            # The stale attempt has ended: the newer claim of the same job may start now.
            self.call_soon(self._push_deferred, job.id)
        user_cancel = bool(self._cancels) and job.id in self._cancels
        if user_cancel:
            self._cancels.discard(job.id)
        now = self.app.clock.now()
        result_json: str | None = None
        if exc is None and result is not None:
            try:
                result_json = payload.encode(result, what=f"result of job {job.id}", max_bytes=self.app.max_payload_bytes)
            except (PayloadTypeError, PayloadValueError) as error:
                exc, result = error, None
        hooks = self.hooks
        triggered = isinstance(exc, PluginTrigger) and hooks.see_triggers
        if hooks.ending_is_async and (triggered or hooks.see_outcomes):
            # Held as in flight until its hooks are done: the stop and drain() wait for it.
            self._spawn(self._end_after_hooks(job, exc, result, result_json, user_cancel, now), f"minijobs-end-{job.id}")
            return
        decided = hooks.trigger(job, exc, self) if triggered else None  # type: ignore[arg-type]
        base = self._base_outcome(job, exc, result, result_json, user_cancel, now)
        if base is None:
            return
        outcome, proposed = base
        if decided is not None:
            outcome, proposed = hooks.outcome_of(job, decided, outcome, now=now, decided_by="on_job_trigger")
        if hooks.see_outcomes:
            final = hooks.completed(job, proposed, exc=exc, result=result, worker=self)
            if final is not proposed:
                outcome, proposed = hooks.outcome_of(job, final, outcome, now=now, decided_by="on_job_completed")
        self._queue_outcome(outcome, proposed, exc)

    async def _end_after_hooks(
        self, job: Job, exc: BaseException | None, result: Any, result_json: str | None, user_cancel: bool, now: float
    ) -> None:
        """:meth:`job_completed` for apps with ``async def`` trigger or completion hooks."""
        hooks = self.hooks
        decided = None
        if isinstance(exc, PluginTrigger) and hooks.see_triggers:
            decided = await hooks.trigger_async(job, exc, self)
        base = self._base_outcome(job, exc, result, result_json, user_cancel, now)
        if base is None:
            return
        outcome, proposed = written = base
        try:
            if decided is not None:
                outcome, proposed = hooks.outcome_of(job, decided, outcome, now=now, decided_by="on_job_trigger")
            if hooks.see_outcomes:
                final = await hooks.completed_async(job, proposed, exc=exc, result=result, worker=self)
                if final is not proposed:
                    outcome, proposed = hooks.outcome_of(job, final, outcome, now=now, decided_by="on_job_completed")
        except Exception:
            # Hooks that ran on the loop and failed to be applied: the policy's own outcome stands.
            logger.exception("job %d: the plugins' outcome could not be applied; writing the attempt's own",
                             job.id, extra={"job_id": job.id})
            outcome, proposed = written
        self._queue_outcome(outcome, proposed, exc)

    def _base_outcome(
        self, job: Job, exc: BaseException | None, result: Any, result_json: str | None, user_cancel: bool, now: float
    ) -> tuple[Outcome, Job] | None:
        """The outcome the policy decides, and the job as it would read back; None once released or discarded."""
        registered = self.app.registry.get(job.name)
        decision = outcome_policy.decide(
            job, exc, now=now, stopping=self.stopping.is_set(), cancel_requested=user_cancel,
            backoff=registered.retry if registered is not None else None,
        )
        if decision.action is Action.RELEASE:
            self._progress.pop(job.id, None)  # unflushed progress must not land after the release
            self._released.append(job.id)
            self._wake_event.set()
            return None
        if decision.action is Action.DISCARD:
            logger.warning("job %d: lease lost while running; outcome discarded", job.id, extra={"job_id": job.id})
            self._wake_event.set()
            return None
        assert decision.state is not None
        progress_entry = self._progress.pop(job.id, None)
        outcome = Outcome(
            job_id=job.id,
            owner=self.id,
            attempt=job.attempts,
            state=decision.state,
            completed_at=decision.completed_at,
            result=result_json,
            error=None if decision.error is None else encode_attempt_error(decision.error),
            scheduled_at=decision.retry_at,
            progress=progress_entry[1] if progress_entry else None,
        )
        if self.hooks.see_outcomes or self.hooks.see_writes or self.app.events.wants("job.completed"):
            job = proposed_job(job, outcome, result)
        return outcome, job

    def _queue_outcome(self, outcome: Outcome, job: Job, exc: BaseException | None) -> None:
        if exc is not None:  # logged after the hooks, so the line shows the outcome actually written
            # A retry or a cancellation someone asked for is the system working; a failure is not.
            log = logger.info if outcome.state in (JobState.RETRYING, JobState.CANCELLED) else logger.warning
            log("job %d (%s) attempt %d: %s: %s -> %s", job.id, job.name, job.attempts,
                type(exc).__name__, exc, outcome.state, extra={"job_id": job.id})
        self._outcomes.append((outcome, job))
        self._wake_event.set()

    async def _flush(self) -> None:
        """Write queued outcomes, releases and progress on the store thread (see :meth:`_pass`)."""
        await self._pass(claim=False)

    async def _pass(self, *, claim: bool = True) -> tuple[int, list[str]]:
        """One trip to the store thread: write what ended, then claim the free slots of every queue.

        Returns (jobs claimed, names of queues left without due work).  What
        is written and what is claimed is decided here, on the loop; the
        store thread only runs the store verbs (:func:`_write_and_claim`), so
        the loop keeps running jobs while it waits, and a database locked by
        another process delays this task, never the loop.  Outcomes whose
        write failed are kept for the next pass; a failed claim raises
        :class:`StoreError` after the writes were handled.
        """
        if claim and self._outcomes and (self.hooks.see_writes or self.app.events.wants("job.completed")):
            # Observers of written outcomes run before the job can be claimed again (a retry due
            # at once would be), so what they read back is the outcome they were told of.
            await self._pass(claim=False)
        wants = self._wanted_claims() if claim else []
        if not (self._outcomes or self._released or self._progress or self._arguments or wants):
            return 0, []
        arguments, self._arguments = self._arguments, []
        batch, self._outcomes = self._outcomes, []
        released, self._released = self._released, []
        progress, self._progress = self._progress, {}
        writes = _Writes(
            owner=self.id,
            arguments=arguments,
            outcomes=[o for o, _ in batch],
            released=released,
            progress=[(job_id, job.attempts, text) for job_id, (job, text) in progress.items()],
        )
        done = await self.app.call_store(
            _write_and_claim, self.store, writes, wants, now=self.app.clock.now(), lease_s=self.lease_s
        )
        if done.finish_error is not None:
            # Nothing was written or claimed: keep it all for the next pass (the caller backs off).
            logger.warning("could not write %d job outcomes (will retry): %s", len(batch), done.finish_error)
            self._outcomes[:0] = batch
            self._arguments[:0] = arguments
            self._released[:0] = released
            self._progress = {**progress, **self._progress}
            raise _Logged(done.finish_error)
        if done.arguments_error is not None:
            logger.warning("could not store the arguments on_job_starting hooks gave %d jobs: %s",
                           len(arguments), done.arguments_error)
        if batch:
            await self._after_finish(batch, done.accepted)
        if released:
            if done.release_error is not None:
                logger.warning("could not release %d jobs (their leases will expire): %s",
                               len(released), done.release_error)
            self.app.notify_finished(released)
        for job_id, error in done.progress_errors:
            logger.debug("progress of job %d not written: %s", job_id, error)
        taken = self._take_claimed(wants, done.claimed)  # what was claimed before a failure is ours: run it
        if done.claim_error is not None:
            raise done.claim_error
        return taken

    async def _after_finish(self, batch: list[tuple[Outcome, Job]], accepted: list[bool]) -> None:
        events = self.app.events
        want_event = events.wants("job.completed")
        finished_ids: list[int] = []
        for (outcome, job), ok in zip(batch, accepted, strict=True):
            if not ok:
                logger.warning(
                    "job %d attempt %d: outcome %s refused (lease lost to another worker)",
                    outcome.job_id, outcome.attempt, outcome.state, extra={"job_id": outcome.job_id},
                )
                continue
            self.jobs_finished += 1
            finished_ids.append(outcome.job_id)
            if outcome.state is JobState.FAILED and self.raise_on_failure and self._failure is None:
                self._failure = JobFailedError(
                    f"job {outcome.job_id} ({job.name}) failed: {_last_error_message(outcome)}", job_id=outcome.job_id
                )
            if want_event or self.hooks.see_writes:
                snapshot = job if job.state is outcome.state else job.replace(state=outcome.state)
                if self.hooks.updated_is_async:
                    await self.hooks.updated_async(snapshot, self)
                else:
                    self.hooks.updated(snapshot, self)
                if want_event:
                    events.emit("job.completed", job=snapshot, state=outcome.state, worker_id=self.id)
        self.app.notify_finished(finished_ids)

    def _wanted_claims(self) -> list[_Claim]:
        """What to claim now: ``(queue, free slots, idle)`` for every queue with free slots.

        A suspect (``rescues > 0``: it was running when a worker died, and may
        be what killed it) runs alone, so that a job that kills its process
        takes no innocent job down with it a second time: the store claims it
        only for an idle executor and by itself, and until the executor is idle
        again this queue claims nothing more.  Idle means every slot free,
        abandoned calls (which still run) included.
        """
        if self.stopping.is_set():
            return []
        wants: list[_Claim] = []
        for executor in self.executors.values():
            free = self._free_slots(executor)
            if free <= 0:
                continue
            name = executor.queue.name
            idle = free == executor.concurrency
            if self._isolated and name in self._isolated:
                if not idle:
                    continue  # the suspect still runs; its end wakes the loop
                self._isolated.discard(name)
            wants.append((name, free, idle))
        return wants

    def _take_claimed(self, wants: list[_Claim], claimed_by_queue: dict[str, list[Job]]) -> tuple[int, list[str]]:
        """Start the jobs a pass claimed; return (jobs claimed, queues left without due work)."""
        claimed = 0
        exhausted: list[str] = []
        for name, free, _ in wants:
            jobs = claimed_by_queue.get(name, [])
            if self.stopping.is_set():
                # The stop began while the claim was on its way: these jobs go back untouched.
                self._released.extend(job.id for job in jobs)
                continue
            executor = self.executors[name]
            for job in jobs:
                if job.rescues:
                    self._isolated.add(name)
                if job.id in executor.running:
                    # This worker was frozen past its lease (suspend, SIGSTOP, starved loop): the job was
                    # recovered and claimed again by us while our stale attempt still runs.  Executors track
                    # one attempt per job id, so stop the stale one and start this one once it has ended.
                    # (A recovered job is a suspect, claimed only by an idle executor: a safety net.)
                    self._cancel_local(job.id, "lost")
                    if job.id in executor.running:
                        self._deferred[job.id] = (executor, job)
                        continue
                self._start(executor, job)
            claimed += len(jobs)
            if len(jobs) < free and name not in self._isolated:
                exhausted.append(name)
        return claimed, exhausted

    def _in_flight(self) -> int:
        return sum(len(e.running) for e in self.executors.values()) + len(self._deferred) + len(self._hook_tasks)

    def _push_deferred(self, job_id: int) -> None:
        entry = self._deferred.pop(job_id, None)
        if entry is None:
            return
        executor, job = entry
        if self.stopping.is_set():
            self._released.append(job.id)
        else:
            self._start(executor, job)
        self._wake_event.set()

    # -- main ----------------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop` (or, in burst mode, until no due job is left).

        Raises :class:`~minijobs.ConfigurationError` before anything runs if a
        plugin refuses the app as configured (see :meth:`Plugin.check`).
        """
        self._check_plugins()
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._wake_event = asyncio.Event()
        self.store = store = await self.app._opened()
        watcher = None if self.burst else store.open_watcher()
        clock_listener = None
        try:
            for queue in self.queues:
                executor_cls = queue.executor or AsyncExecutor
                executor = executor_cls(self, queue, **dict(queue.executor_options))
                await executor.start()
                self.executors[queue.name] = executor
            self.app.attach_worker(self)
            clock_listener = self.app.listen_clock(self.wake)
            if not self.burst:
                self._tasks.append(asyncio.create_task(self._heartbeat(), name=f"minijobs-heartbeat-{self.id}"))
                if watcher is not None:
                    self._tasks.append(asyncio.create_task(
                        watcher.watch(self._wake_event.set, poll_interval_s=self.poll_interval_s), name="minijobs-watch"
                    ))
            self.plugins.start()
            if self.burst:
                for plugin in self.app.plugins:
                    await plugin.on_drain(self, self.app)
            self.app.events.emit("worker.started", worker_id=self.id)
            self.started.set()
            await self._main_loop()
        finally:
            try:
                await self._shutdown()
            finally:
                if clock_listener is not None:
                    clock_listener()
                self.app.detach_worker(self)
                if watcher is not None:
                    watcher.close()
                self.started.set()
                self.stopped.set()
                self.app.events.emit("worker.stopped", worker_id=self.id)
        if self._failure is not None:
            raise self._failure

    def _check_plugins(self) -> None:
        """Let every plugin this worker runs (or drains) refuse the app now, once, before any job runs."""
        for plugin in self.app.plugins if self.run_plugins or self.burst else ():
            plugin.check(self.app)

    async def _main_loop(self) -> None:
        store_errors = 0
        while not self.stopping.is_set():
            self._wake_event.clear()
            try:
                claimed, exhausted = await self._pass()
                store_errors = 0
            except StoreError as exc:
                store_errors += 1
                delay = min(1.0, 0.01 * 2**store_errors)
                if not isinstance(exc, _Logged):
                    logger.warning("worker %s: store error (retrying in %.2f s): %s", self.id, delay, exc)
                await self._sleep(delay)
                continue
            if self._failure is not None:
                break
            if self.burst and claimed == 0 and not self._in_flight() and not self._outcomes:
                break
            if claimed:
                continue  # the next pass writes what finished meanwhile and refills
            timeout = MAX_IDLE_S
            if exhausted and not self.burst:
                timeout = await self._until_next_due(exhausted)
            await self._sleep(timeout)

    async def _until_next_due(self, queues: list[str]) -> float:
        store, call = self.store, self.app.call_store
        try:
            due = await call(store.next_due_at, queues)
            now = self.app.clock.now()
            if due is not None and due <= now:
                # Due work left unclaimed.  Behind a suspect that waits for its busy executor to be
                # idle (see ``_wanted_claims``) it waits for a completion, which wakes the loop:
                # looking again in a millisecond would spin.  Only jobs that fall due later can end
                # such a wait.
                barred = await self._held_back(queues, now)
                if barred:
                    open_queues = [q for q in queues if q not in barred]
                    later = (await call(store.next_due_at, open_queues), await call(store.next_due_at, barred, after=now))
                    due = min((t for t in later if t is not None), default=None)
        except StoreError:
            return 0.1
        if due is None:
            return MAX_IDLE_S
        return min(MAX_IDLE_S, max(0.001, due - now))

    async def _held_back(self, queues: list[str], now: float) -> list[str]:
        """Queues whose busy executor waits to be idle because a suspect is first in line."""
        barred: list[str] = []
        for name in queues:
            executor = self.executors[name]
            if self._is_idle(executor):
                continue
            suspect = await self.app.call_store(self.store.first_suspect, name, now=now)
            if suspect is None:
                continue
            barred.append(name)
            if suspect in executor.running:
                # Our own stale attempt of it: this worker was frozen past its lease (suspend,
                # SIGSTOP, starved loop) and the job was recovered.  Stop it now, as the next
                # lease renewal would, so that the executor goes idle and the job runs again.
                self._cancel_local(suspect, "lost")
        return barred

    def _free_slots(self, executor: Executor) -> int:
        """Slots of ``executor`` free for new claims: a deferred claim (see ``_wanted_claims``) holds one."""
        held = self._hooking.get(executor.queue.name, 0) if self._hooking else 0
        return executor.free_slots - held - sum(1 for e, _ in self._deferred.values() if e is executor)

    def _is_idle(self, executor: Executor) -> bool:
        """True when ``executor`` runs nothing (abandoned calls and deferred claims included)."""
        return self._free_slots(executor) == executor.concurrency

    async def _sleep(self, timeout: float) -> None:
        if self._wake_event.is_set():
            return
        try:
            async with asyncio.timeout(timeout):
                await self._wake_event.wait()
        except TimeoutError:
            pass

    async def _heartbeat(self) -> None:
        """Renew leases, pick up cancellations from other processes, write progress."""
        tick = min(0.25, self.lease_s / 4)
        renew_every = max(tick, self.lease_s / 3)
        loop = asyncio.get_running_loop()
        last_renew = loop.time()
        while True:
            await asyncio.sleep(tick)
            running = [job_id for e in self.executors.values() for job_id in e.running]
            try:
                if self._progress:
                    await self._flush()
                if not running:
                    last_renew = loop.time()
                    continue
                if loop.time() - last_renew >= renew_every:
                    lost, cancel = await self.app.call_store(
                        self.store.renew_leases, self.id, running, now=self.app.clock.now(), lease_s=self.lease_s
                    )
                    last_renew = loop.time()
                else:
                    lost, cancel = set(), await self.app.call_store(self.store.cancel_requested, self.id)
            except StoreError as exc:
                if not isinstance(exc, _Logged):
                    logger.warning("worker %s: heartbeat failed: %s", self.id, exc)
                continue
            for job_id in lost:
                self._cancel_local(job_id, "lost")
            for job_id in cancel:
                self._cancel_local(job_id, "cancel")

    async def _shutdown(self) -> None:
        self._begin_stop(False)
        await self._settle_hooks()
        stops = [asyncio.ensure_future(e.stop(grace_s=self.grace_s)) for e in self.executors.values()]
        while stops:
            done, pending = await asyncio.wait(stops, timeout=0.05)
            await self._flush_quietly()
            stops = list(pending)
            for task in done:
                if task.exception() is not None:
                    logger.error("executor failed to stop cleanly", exc_info=task.exception())
        # Claims still waiting for their stale attempt to end go back to the queue untouched.
        self._released.extend(self._deferred)
        self._deferred.clear()
        await self._flush_quietly()
        # Plugins saw the stop (``sleep`` returns False) and end, writing what they must on the
        # way out (Leadership hands its leases back); one that does not is cancelled.
        await self.plugins.stop()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._outcomes or self._released:
            logger.error(
                "worker %s stopped with %d outcomes unwritten; those jobs rerun after lease expiry",
                self.id, len(self._outcomes) + len(self._released),
            )

    async def _settle_hooks(self) -> None:
        """Let awaited job hooks end (a starting job is then released, an ended one's outcome queued)."""
        if not self._hook_tasks:
            return
        _, pending = await asyncio.wait(set(self._hook_tasks), timeout=PLUGIN_STOP_S)
        for task in pending:
            logger.error("worker %s: a plugin hook did not return within %.1f s of the stop (%s); cancelled, the "
                         "job runs again once its lease expires", self.id, PLUGIN_STOP_S, task.get_name())
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _flush_quietly(self) -> None:
        try:
            await self._flush()
        except Exception:
            logger.exception("worker %s: final flush failed", self.id)


class _Logged(StoreError):
    """A store error already logged where it happened (the loop only backs off)."""


#: A claim to make: (queue, free slots, whether its executor runs nothing).
_Claim = tuple[str, int, bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Writes:
    """What a pass writes: ended attempts, jobs given back, progress as ``(job id, attempt, json)``."""

    owner: str
    arguments: list[tuple[int, int, str, str]]
    outcomes: list[Outcome]
    released: list[int]
    progress: list[tuple[int, int, str]]


@dataclass(slots=True)
class _Done:
    """What a pass did on the store thread; each phase's failure is reported, not raised."""

    accepted: list[bool] = field(default_factory=list)
    arguments_error: StoreError | None = None
    finish_error: StoreError | None = None
    release_error: StoreError | None = None
    progress_errors: list[tuple[int, StoreError]] = field(default_factory=list)
    claimed: dict[str, list[Job]] = field(default_factory=dict)
    claim_error: StoreError | None = None


def _write_and_claim(store: Store, writes: _Writes, claims: list[_Claim], *, now: float, lease_s: float) -> _Done:
    """Run on the store thread: the writes, then the claims, in that order (a freed slot is refilled).

    Touches nothing of the worker's: its inputs are copies taken on the loop,
    and :meth:`Worker._pass` applies the result there.  Outcomes are written
    before anything is claimed, and a failed finish stops the pass (the
    outcomes are kept and retried), as a claim must not outrun the writes it
    follows.
    """
    done = _Done()
    if writes.arguments:
        try:
            store.set_arguments(writes.owner, writes.arguments)
        except StoreError as exc:
            done.arguments_error = exc
    if writes.outcomes:
        try:
            done.accepted = store.finish(writes.outcomes)
        except StoreError as exc:
            done.finish_error = exc
            return done
    if writes.released:
        try:
            store.release(writes.owner, writes.released, now=now)
        except StoreError as exc:
            done.release_error = exc
    for job_id, attempt, text in writes.progress:
        try:
            store.set_progress(job_id, writes.owner, attempt, text)
        except StoreError as exc:
            done.progress_errors.append((job_id, exc))
    for queue, free, idle in claims:
        try:
            done.claimed[queue] = store.claim(queue, free, owner=writes.owner, now=now, lease_s=lease_s, idle=idle)
        except StoreError as exc:
            done.claim_error = exc
            break
    return done


def _last_error_message(outcome: Outcome) -> str:
    if outcome.error is None:
        return "no error recorded"
    (error,) = decode_attempt_errors(f"[{outcome.error}]")
    return f"{error.type}: {error.message}"
