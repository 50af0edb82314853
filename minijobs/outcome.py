"""The outcome policy: what an ended attempt becomes, decided from the attempt and the clock alone.

A pure function, so the rules (which errors retry, when, what a stop or a
lost lease means) are read in one place and tested without a database or a
worker.  The worker encodes and writes what :func:`decide` returns.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .backoff import Backoff
from .errors import (
    Cancelled,
    JobReleased,
    LeaseLostError,
    PayloadTypeError,
    PayloadValueError,
    Retry,
    UnknownJobError,
)
from .job import AttemptError, Job, JobState
from .limits import MAX_TIMESTAMP

#: Errors that retrying cannot fix: the job's name, arguments or result are wrong, or it was stopped.
NO_RETRY: tuple[type[BaseException], ...] = (UnknownJobError, PayloadValueError, PayloadTypeError, Cancelled,
                                             LeaseLostError)
DEFAULT_BACKOFF = Backoff()


class Action(enum.Enum):
    WRITE = "write"  #: write ``state`` (and the error, the retry time) for the attempt
    RELEASE = "release"  #: give the job back without counting the attempt (the worker is stopping)
    DISCARD = "discard"  #: write nothing: another worker owns the job now


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What to do with an ended attempt."""

    action: Action
    state: JobState | None = None
    error: AttemptError | None = None
    #: When a retry runs (epoch seconds); None unless ``state`` is retrying.
    retry_at: float | None = None
    #: When the job ended (epoch seconds); None while it will run again.
    completed_at: float | None = None


RELEASE = Decision(action=Action.RELEASE)
DISCARD = Decision(action=Action.DISCARD)


def decide(
    job: Job,
    exc: BaseException | None,
    *,
    now: float,
    stopping: bool = False,
    cancel_requested: bool = False,
    backoff: Backoff | None = None,
) -> Decision:
    """The outcome of attempt ``job.attempts`` of ``job``, which ended raising ``exc`` (None: it returned).

    - ``Cancelled`` while the worker is ``stopping`` and nobody asked to
      cancel the job (``cancel_requested``): the job gave up because of the
      stop, so it is released, as is a :class:`~minijobs.errors.JobReleased`.
    - :class:`~minijobs.LeaseLostError`: another worker owns the job now.
    - Success: succeeded.  ``Cancelled``: cancelled.
    - Any other error: retrying while attempts are left and the error is
      not in :data:`NO_RETRY`, after :class:`~minijobs.Retry`'s ``delay_s``
      or ``backoff`` (default :data:`DEFAULT_BACKOFF`); failed otherwise.
    """
    if isinstance(exc, JobReleased) or (isinstance(exc, Cancelled) and stopping and not cancel_requested):
        return RELEASE
    if isinstance(exc, LeaseLostError):
        return DISCARD
    if exc is None:
        return Decision(action=Action.WRITE, state=JobState.SUCCEEDED, completed_at=now)
    error = AttemptError.from_exception(exc, attempt=job.attempts, at=now)
    if isinstance(exc, Cancelled):
        return Decision(action=Action.WRITE, state=JobState.CANCELLED, error=error, completed_at=now)
    if job.attempts < job.max_attempts and not isinstance(exc, NO_RETRY):
        if isinstance(exc, Retry) and exc.delay_s is not None:
            delay = exc.delay_s
        else:
            delay = (backoff or DEFAULT_BACKOFF).delay_s(job.attempts)
        # Delays are at most a century (minijobs.limits); the clamp keeps a clock near 9999 storable.
        return Decision(action=Action.WRITE, state=JobState.RETRYING, error=error,
                        retry_at=min(MAX_TIMESTAMP, now + delay))
    return Decision(action=Action.WRITE, state=JobState.FAILED, error=error, completed_at=now)
