"""The plugins' job hooks: what a worker asks its plugins before an attempt starts and after it ends.

One owner for the hook contract, so the worker's claim loop only says *when*
a hook runs.  Hooks run in plugin order, in the worker's loop thread.  A hook
that raises, or returns something that cannot be used, is logged and skipped:
no plugin can take a worker down or make it write an outcome it cannot store.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import payload
from .job import Job, JobState, decode_attempt_errors, encode_attempt_error, to_datetime
from .plugin import Plugin, overrides
from .store import Outcome

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger(__name__)


class JobHooks:
    """The ``on_job_starting``, ``on_job_completed`` and ``on_job_updated`` hooks of an app's plugins.

    Only plugins that override a hook are called for it, so an app whose
    plugins hook nothing pays nothing per job.
    """

    def __init__(self, plugins: Sequence[Plugin], *, max_payload_bytes: int) -> None:
        self._max_payload_bytes = max_payload_bytes
        self._starting = [p for p in plugins if overrides(p, "on_job_starting")]
        self._completed = [p for p in plugins if overrides(p, "on_job_completed")]
        self._updated = [p for p in plugins if overrides(p, "on_job_updated")]

    @property
    def see_outcomes(self) -> bool:
        """True when some plugin may replace outcomes (:meth:`completed` then needs the job as proposed)."""
        return bool(self._completed)

    @property
    def see_writes(self) -> bool:
        """True when some plugin is told of written outcomes (:meth:`updated`)."""
        return bool(self._updated)

    def starting(self, job: Job, worker: Worker) -> Job:
        """The job as the plugins hand it on: each may return a copy to run instead."""
        for plugin in self._starting:
            try:
                changed = plugin.on_job_starting(job=job, worker=worker)
            except Exception:
                logger.exception("plugin %s failed in on_job_starting for job %d; hook skipped",
                                 plugin.get_identifier(), job.id, extra={"job_id": job.id})
                continue
            if not isinstance(changed, Job) or changed.id != job.id:
                logger.error("plugin %s: on_job_starting must return the job or a copy of it (same id), got %r; "
                             "hook ignored", plugin.get_identifier(), changed, extra={"job_id": job.id})
                continue
            job = changed
        return job

    def completed(
        self, job: Job, outcome: Outcome, *, exc: BaseException | None, result: Any, worker: Worker, now: float
    ) -> tuple[Outcome, Job]:
        """Let plugins replace ``outcome``; they see it as a job snapshot and return a changed copy.

        Returns the outcome to write and the job as it will look once written.
        A hook that raises, or returns something that cannot be written
        (another job, state ``running``, a result JSON cannot hold), is logged
        and skipped.
        """
        proposed = proposed_job(job, outcome, result)
        final = proposed
        for plugin in self._completed:
            try:
                changed = plugin.on_job_completed(job=final, worker=worker, exc=exc, result=result)
                problem = _unwritable(changed, job)
                if problem is None and changed is not final and changed.result is not None:
                    payload.encode(changed.result, what="result", max_bytes=self._max_payload_bytes)
            except Exception:
                logger.exception("plugin %s failed in on_job_completed for job %d; hook skipped",
                                 plugin.get_identifier(), job.id, extra={"job_id": job.id})
                continue
            if problem is not None:
                logger.error("plugin %s: on_job_completed returned %s for job %d; hook ignored",
                             plugin.get_identifier(), problem, job.id, extra={"job_id": job.id})
                continue
            final = changed
        if final is proposed:
            return outcome, proposed
        new_error = encode_attempt_error(final.errors[-1]) if len(final.errors) > len(job.errors) else None
        runnable = final.state in (JobState.RETRYING, JobState.PENDING)
        completed_at = None if runnable else (final.completed_at or to_datetime(now)).timestamp()  # type: ignore[union-attr]
        encoded = None
        if final.result is not None:
            encoded = payload.encode(final.result, what="result", max_bytes=self._max_payload_bytes)
        return outcome._replace(
            state=final.state,
            completed_at=completed_at,
            result=encoded,
            error=new_error,
            scheduled_at=final.scheduled_at.timestamp() if runnable else None,
        ), final

    def updated(self, job: Job, worker: Worker) -> None:
        """Tell plugins that ``job``'s outcome was written."""
        for plugin in self._updated:
            try:
                plugin.on_job_updated(job=job, worker=worker)
            except Exception:
                logger.exception("plugin %s failed in on_job_updated", plugin.get_identifier())


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


def _unwritable(changed: object, job: Job) -> str | None:
    """Why a hook's returned job cannot be written (None when it can)."""
    if not isinstance(changed, Job):
        return f"{type(changed).__name__} instead of a Job"
    if changed.id != job.id:
        return f"another job (id {changed.id})"
    if changed.state is JobState.RUNNING:
        return "state 'running' (only an outcome can be written)"
    return None
