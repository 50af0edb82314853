"""What a running job can ask about itself: ``minijobs.current_job()``."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable

from .errors import Cancelled, MinijobsError
from .job import Job, Progress

_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("minijobs_current_job")


class JobContext:
    """Handle given to the code of a running job.

    Cancellation of thread jobs is cooperative (Python cannot kill a thread):
    long loops should call :meth:`check_cancelled` or test :attr:`cancelled`.
    """

    __slots__ = ("job", "_cancel", "_on_progress", "timed_out")

    def __init__(
        self,
        job: Job,
        *,
        on_progress: Callable[[int, Progress], None] | None = None,
        cancel_event: threading.Event | None = None,
    ) -> None:
        self.job = job
        # Created on the first cancel request unless shared: most jobs are never
        # cancelled, and an Event (a Condition and a lock) costs ~3 us per job.
        self._cancel = cancel_event
        self._on_progress = on_progress
        self.timed_out = False

    @property
    def id(self) -> int:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempts

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled, timed out or the worker is shutting down."""
        event = self._cancel
        return event is not None and event.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`~minijobs.Cancelled` if the job should stop now."""
        if self.cancelled:
            raise Cancelled(f"job {self.job.id} was cancelled")

    def set_progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress; readers see it through ``app.get(id).progress`` and ``job.progress`` events."""
        for label, value in (("done", done), ("total", total)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise TypeError(f"progress {label} must be a number, got {type(value).__name__}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"progress message must be str, got {type(message).__name__}")
        if self._on_progress is not None:
            self._on_progress(self.job.id, Progress(done=done, total=total, message=message))

    def _request_cancel(self) -> None:
        event = self._cancel
        if event is None:
            event = self._cancel = threading.Event()
        event.set()


def current_job() -> JobContext:
    """The context of the job running in this task or thread.

    Raises ``MinijobsError`` when called outside a job.
    """
    try:
        return _current.get()
    except LookupError:
        raise MinijobsError("current_job() called outside a running job") from None


def set_current(ctx: JobContext) -> contextvars.Token[JobContext]:
    return _current.set(ctx)


def reset_current(token: contextvars.Token[JobContext]) -> None:
    _current.reset(token)
