"""The plugins' job hooks: what a worker asks its plugins before an attempt starts and after it ends.

One owner for the hook contract, so the worker's claim loop only says *when*
a hook runs.  Hooks run in plugin order, in the worker's loop thread; each
may be a plain ``def`` or an ``async def`` (then awaited there, so it must
not block: store calls go through ``await app.call_store(...)``).  A hook
that raises, or returns something that cannot be used, is logged and skipped:
no plugin can take a worker down or make it write an outcome it cannot store.

When no plugin defines an ``async def`` hook of a kind, that kind runs
synchronously (:attr:`JobHooks.starting_is_async`,
:attr:`JobHooks.ending_is_async`), so an app with plain or no hooks pays no
task per job.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import payload
from .errors import PluginTrigger
from .job import AttemptError, Job, JobState, decode_attempt_errors, encode_attempt_error, to_datetime
from .plugin import Plugin, overrides
from .store import Outcome

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger(__name__)

#: States an outcome may have (an attempt that ended); ``pending`` runs again now, like ``retrying``.
_RUNNABLE = (JobState.RETRYING, JobState.PENDING)


def _is_async(plugins: Sequence[Plugin], name: str) -> bool:
    return any(inspect.iscoroutinefunction(getattr(type(p), name)) for p in plugins)


class JobHooks:
    """The ``on_job_starting``, ``on_job_trigger``, ``on_job_completed`` and ``on_job_updated`` hooks.

    Only plugins that override a hook are called for it, so an app whose
    plugins hook nothing pays nothing per job.
    """

    def __init__(self, plugins: Sequence[Plugin], *, max_payload_bytes: int) -> None:
        self._max_payload_bytes = max_payload_bytes
        self._starting = [p for p in plugins if overrides(p, "on_job_starting")]
        self._trigger = [p for p in plugins if overrides(p, "on_job_trigger")]
        self._completed = [p for p in plugins if overrides(p, "on_job_completed")]
        self._updated = [p for p in plugins if overrides(p, "on_job_updated")]
        #: Some ``on_job_starting`` is ``async def``: the worker awaits :meth:`starting_async` before a push.
        self.starting_is_async = _is_async(self._starting, "on_job_starting")
        #: Some ``on_job_trigger`` or ``on_job_completed`` is ``async def``: :meth:`ending_async` is awaited.
        self.ending_is_async = _is_async(self._trigger, "on_job_trigger") or _is_async(
            self._completed, "on_job_completed")
        #: Some ``on_job_updated`` is ``async def``.
        self.updated_is_async = _is_async(self._updated, "on_job_updated")

    @property
    def see_starts(self) -> bool:
        return bool(self._starting)

    @property
    def see_outcomes(self) -> bool:
        """True when some plugin may replace outcomes (they then need the job as proposed)."""
        return bool(self._completed)

    @property
    def see_triggers(self) -> bool:
        return bool(self._trigger)

    @property
    def see_writes(self) -> bool:
        """True when some plugin is told of written outcomes (:meth:`updated`)."""
        return bool(self._updated)

    # -- before an attempt ------------------------------------------------------------

    def starting(self, job: Job, worker: Worker) -> Job:
        """The job as the plugins hand it on (plain ``def`` hooks only): each may return a copy to run instead."""
        for plugin in self._starting:
            try:
                changed = plugin.on_job_starting(job=job, worker=worker)
            except Exception:  # noqa: BLE001 - logged with its traceback by _log_failure
                _log_failure(plugin, "on_job_starting", job)
                continue
            job = self._started_as(plugin, job, changed)
        return job

    async def starting_async(self, job: Job, worker: Worker) -> Job:
        """:meth:`starting`, awaiting the ``async def`` hooks."""
        for plugin in self._starting:
            try:
                changed = plugin.on_job_starting(job=job, worker=worker)
                if inspect.isawaitable(changed):
                    changed = await changed
            except Exception:  # noqa: BLE001 - logged with its traceback by _log_failure
                _log_failure(plugin, "on_job_starting", job)
                continue
            job = self._started_as(plugin, job, changed)
        return job

    def _started_as(self, plugin: Plugin, job: Job, changed: object) -> Job:
        """``changed`` if the attempt can run with it (and its arguments stored), else ``job``."""
        if not isinstance(changed, Job) or changed.id != job.id:
            logger.error("plugin %s: on_job_starting must return the job or a copy of it (same id), got %r; "
                         "hook ignored", plugin.get_identifier(), changed, extra={"job_id": job.id})
            return job
        if changed is not job and (changed.args != job.args or changed.kwargs != job.kwargs
                                   or changed.meta != job.meta):
            try:
                self.encode_arguments(changed)
            except Exception as exc:  # noqa: BLE001 - any reason it cannot be stored: the hook is ignored
                logger.error("plugin %s: on_job_starting gave job %d arguments or meta that cannot be stored "
                             "(%s: %s); hook ignored", plugin.get_identifier(), job.id, type(exc).__name__, exc,
                             extra={"job_id": job.id})
                return job
        return changed

    def encode_arguments(self, job: Job) -> tuple[str, str]:
        """The stored form of ``job``'s arguments and meta (what :meth:`Store.set_arguments` writes)."""
        args = payload.encode_call(job.args, job.kwargs, max_bytes=self._max_payload_bytes)
        meta = "{}" if not job.meta else payload.encode(dict(job.meta), what="meta", max_bytes=self._max_payload_bytes)
        return args, meta

    # -- after an attempt -------------------------------------------------------------

    def trigger(self, job: Job, exc: PluginTrigger, worker: Worker) -> Job | None:
        """The outcome a plugin decided for a job that raised :class:`PluginTrigger` (None: no plugin did)."""
        for plugin in self._trigger:
            try:
                decided = plugin.on_job_trigger(job=job, reason=exc.reason, data=exc.data, worker=worker)
            except Exception:  # noqa: BLE001 - logged with its traceback by _log_failure
                _log_failure(plugin, "on_job_trigger", job)
                continue
            if decided is not None and self._decision_ok(plugin, "on_job_trigger", decided, job):
                return decided  # type: ignore[return-value]
        return None

    async def trigger_async(self, job: Job, exc: PluginTrigger, worker: Worker) -> Job | None:
        for plugin in self._trigger:
            try:
                decided = plugin.on_job_trigger(job=job, reason=exc.reason, data=exc.data, worker=worker)
                if inspect.isawaitable(decided):
                    decided = await decided
            except Exception:  # noqa: BLE001 - logged with its traceback by _log_failure
                _log_failure(plugin, "on_job_trigger", job)
                continue
            if decided is not None and self._decision_ok(plugin, "on_job_trigger", decided, job):
                return decided
        return None

    def completed(
        self, job: Job, proposed: Job, *, exc: BaseException | None, result: Any, worker: Worker
    ) -> Job:
        """The job as plugins leave it: each sees the proposed outcome and may return a changed copy."""
        final = proposed
        for plugin in self._completed:
            try:
                changed = plugin.on_job_completed(job=final, worker=worker, exc=exc, result=result)
            except Exception:  # noqa: BLE001 - logged with its traceback by _log_failure
                _log_failure(plugin, "on_job_completed", job)
                continue
            if self._decision_ok(plugin, "on_job_completed", changed, job):
                final = changed  # type: ignore[assignment]
        return final

    async def completed_async(
        self, job: Job, proposed: Job, *, exc: BaseException | None, result: Any, worker: Worker
    ) -> Job:
        final = proposed
        for plugin in self._completed:
            try:
                changed = plugin.on_job_completed(job=final, worker=worker, exc=exc, result=result)
                if inspect.isawaitable(changed):
                    changed = await changed
            except Exception:  # noqa: BLE001 - logged with its traceback by _log_failure
                _log_failure(plugin, "on_job_completed", job)
                continue
            if self._decision_ok(plugin, "on_job_completed", changed, job):
                final = changed
        return final

    def _decision_ok(self, plugin: Plugin, hook: str, changed: object, job: Job) -> bool:
        """True if ``changed`` can be written as the outcome of ``job``'s attempt; logs why not."""
        problem = _unwritable(changed, job)
        if problem is None and isinstance(changed, Job) and changed.result is not None \
                and changed.state is JobState.SUCCEEDED:
            try:
                payload.encode(changed.result, what="result", max_bytes=self._max_payload_bytes)
            except Exception as exc:  # noqa: BLE001 - any reason the result cannot be stored
                problem = f"a result that cannot be stored ({type(exc).__name__}: {exc})"
        if problem is None:
            return True
        logger.error("plugin %s: %s returned %s for job %d; hook ignored",
                     plugin.get_identifier(), hook, problem, job.id, extra={"job_id": job.id})
        return False

    def outcome_of(self, job: Job, final: Job, outcome: Outcome, *, now: float, decided_by: str) -> tuple[Outcome, Job]:
        """The outcome to write for ``final``, a job a plugin changed, and the job as it will read back.

        Kept consistent whatever the plugin returned: a result only with
        ``succeeded``; a failure, cancellation or retry the plugin made of the
        attempt records an error (the plugin's, or one saying which plugin
        decided); a job that will run again has no completion time.
        """
        runnable = final.state in _RUNNABLE
        new_errors = final.errors[len(job.errors):]
        error: AttemptError | None = new_errors[-1] if new_errors else None
        if error is None and final.state is not JobState.SUCCEEDED:
            error = AttemptError(attempt=job.attempts, type="minijobs.PluginOutcome",
                                 message=f"{decided_by} set the attempt's outcome to {final.state.value}",
                                 traceback="", at=datetime.fromtimestamp(now, UTC))
        result = final.result if final.state is JobState.SUCCEEDED else None
        completed_at = None if runnable else (final.completed_at.timestamp() if final.completed_at else now)
        scheduled_at = final.scheduled_at.timestamp() if runnable else None
        written = outcome._replace(
            state=final.state,
            completed_at=completed_at,
            result=None if result is None else payload.encode(result, what="result", max_bytes=self._max_payload_bytes),
            error=None if error is None else encode_attempt_error(error),
            scheduled_at=scheduled_at,
        )
        errors = job.errors if error is None else (*job.errors, error)
        return written, final.replace(result=result, errors=errors, completed_at=to_datetime(completed_at),
                                      lease_owner=None)

    # -- after the write --------------------------------------------------------------

    def updated(self, job: Job, worker: Worker) -> None:
        """Tell plugins that ``job``'s outcome was written (plain ``def`` hooks; see :meth:`updated_async`)."""
        for plugin in self._updated:
            try:
                plugin.on_job_updated(job=job, worker=worker)
            except Exception:  # noqa: BLE001 - logged with its traceback by _log_failure
                _log_failure(plugin, "on_job_updated", job)

    async def updated_async(self, job: Job, worker: Worker) -> None:
        for plugin in self._updated:
            try:
                told = plugin.on_job_updated(job=job, worker=worker)
                if inspect.isawaitable(told):
                    await told
            except Exception:  # noqa: BLE001 - logged with its traceback by _log_failure
                _log_failure(plugin, "on_job_updated", job)


def proposed_job(job: Job, outcome: Outcome, result: Any) -> Job:
    """The job as it will look once ``outcome`` is written (what hooks and events see)."""
    errors = job.errors
    if outcome.error is not None:
        errors = (*errors, *decode_attempt_errors(f"[{outcome.error}]"))
    return job.replace(
        state=outcome.state,
        result=result if outcome.state is JobState.SUCCEEDED else None,
        errors=errors,
        completed_at=to_datetime(outcome.completed_at),
        scheduled_at=to_datetime(outcome.scheduled_at) if outcome.scheduled_at is not None else job.scheduled_at,
        lease_owner=None,
    )


def _log_failure(plugin: Plugin, hook: str, job: Job) -> None:
    logger.exception("plugin %s failed in %s for job %d; hook skipped", plugin.get_identifier(), hook, job.id,
                     extra={"job_id": job.id})


def _unwritable(changed: object, job: Job) -> str | None:
    """Why a hook's returned job cannot be written (None when it can)."""
    if not isinstance(changed, Job):
        return f"{type(changed).__name__} instead of a Job"
    if changed.id != job.id:
        return f"another job (id {changed.id})"
    if changed.state is JobState.RUNNING:
        return "state 'running' (only an outcome can be written)"
    return None
