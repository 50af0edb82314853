"""What a running job can ask about itself: ``minijobs.current_job()``."""

from __future__ import annotations

import contextvars
import math
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from . import payload
from .errors import Cancelled, MinijobsError, PayloadTypeError, PayloadValueError, PluginTrigger
from .job import Job, Progress

_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("minijobs_current_job")

#: Longest progress message accepted, in bytes of UTF-8 (a status line, not a log).
MAX_PROGRESS_MESSAGE_BYTES = 4096
#: ``done`` and ``total`` as integers must fit in 64 bits (JSON and SQLite readers; no 5,000-digit ints).
_INT_LIMIT = 2**63

#: What receives a validated report: the job id, the report and its JSON text as stored.
ProgressCallback = Callable[[int, Progress, str], None]


def encode_progress(done: object, total: object = None, message: object = None) -> tuple[Progress, str]:
    """Check a progress report and encode it as the JSON text stored in the job row.

    The one place progress values are checked: ``set_progress`` calls it in the
    job (so a bad value raises there, at the call), and the worker calls it only
    for reports that did not come through a context (a process child's pipe).
    What it returns cannot fail to encode or to store later, in the worker's loop.
    Numbers are normalised to plain ``int``/``float`` and the message to a plain
    ``str``, so subclasses (``IntEnum``, NumPy floats) are accepted as their values.
    """
    checked = Progress(done=_number("done", done), total=None if total is None else _number("total", total),
                       message=None if message is None else _message(message))
    text = payload.encode({"done": checked.done, "total": checked.total, "message": checked.message}, what="progress")
    return checked, text


def _number(label: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadTypeError(f"progress {label} must be an int or a float, got {type(value).__name__}")
    if isinstance(value, int):
        if not -_INT_LIMIT <= value < _INT_LIMIT:
            raise PayloadValueError(f"progress {label} must fit in 64 bits, got an integer of {value.bit_length()} bits")
        return int(value)
    number = float(value)
    if not math.isfinite(number):
        raise PayloadValueError(f"progress {label} must be a finite number, got {number!r}")
    return number


def _message(value: object) -> str:
    if not isinstance(value, str):
        raise PayloadTypeError(f"progress message must be str, got {type(value).__name__}")
    text = str.__str__(value)  # a plain str even for a subclass (whose __str__ could say anything)
    size = payload.utf8_size(text, "progress message")
    if size > MAX_PROGRESS_MESSAGE_BYTES:
        raise PayloadValueError(
            f"progress message is {size} bytes of UTF-8, over the {MAX_PROGRESS_MESSAGE_BYTES}-byte limit"
        )
    return text


class JobContext:
    """Handle given to the code of a running job.

    Cancellation of thread jobs is cooperative (Python cannot kill a thread):
    long loops should call :meth:`check_cancelled` or test :attr:`cancelled`.
    """

    __slots__ = ("_cancel", "_on_progress", "job", "timed_out")

    def __init__(
        self,
        job: Job,
        *,
        on_progress: ProgressCallback | None = None,
        cancel_event: threading.Event | None = None,
    ) -> None:
        self.job = job
        # Created on the first cancel request unless shared: most jobs are never
        # cancelled, and an Event (a Condition and a lock) would be built for every job.
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
        """True once the job should stop: it was cancelled, it timed out, or its worker began a graceful stop.

        The stop sets it for every running job at once, not after ``grace_s``,
        so that a cooperative job can end the stop early: stopping then costs it
        nothing (see :meth:`check_cancelled`).  A job may also ignore it and
        return within ``grace_s``, and its result is written.  A
        ``ProcessExecutor`` child sees the stop too (it is told by ``SIGUSR1``,
        where the platform has it); a cancel or timeout stops it by kill.
        """
        event = self._cancel
        return event is not None and event.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`~minijobs.Cancelled` if :attr:`cancelled` is True.

        What is recorded depends on why: after ``app.cancel`` the job ends
        ``cancelled``; after a timeout the ``JobTimeoutError`` stands; during a
        graceful stop the job is released back to its queue instead (no attempt
        used, its progress cleared), since nobody cancelled it and it must run
        again.
        """
        if self.cancelled:
            raise Cancelled(f"job {self.job.id} was cancelled")

    def plugin_trigger(self, reason: str, **data: Any) -> NoReturn:
        """Hand this attempt's outcome to the app's plugins: raises :class:`~minijobs.PluginTrigger`."""
        raise PluginTrigger(reason, **data)

    def set_progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress; readers see it through ``app.get(id).progress`` and ``job.progress`` events.

        ``done`` and ``total`` must be finite ints or floats (not bools), ``message`` a
        ``str`` valid as UTF-8 (no lone surrogates) of at most ``MAX_PROGRESS_MESSAGE_BYTES``.
        Anything else raises :class:`~minijobs.errors.PayloadTypeError` or
        :class:`~minijobs.errors.PayloadValueError` here, in the job, and nothing is reported:
        a bad value never travels to the worker, where it could only be dropped.
        """
        progress, text = encode_progress(done, total, message)
        if self._on_progress is not None:
            self._on_progress(self.job.id, progress, text)

    def _request_cancel(self) -> None:
        event = self._cancel
        if event is None:
            # Set before it is shared: no lock anyone else could hold is taken, so this is
            # safe from a signal handler too (a process child learns of a stop that way).
            event = threading.Event()
            event.set()
            self._cancel = event
        else:
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
