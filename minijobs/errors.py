"""Every exception minijobs raises, rooted at :class:`MinijobsError`.

Errors raised because of bad input also subclass the matching builtin
(``TypeError``, ``ValueError``, ``LookupError``, ``TimeoutError``) so callers
that already catch those keep working.  ``Retry`` and ``Cancelled`` are
control-flow signals a job raises; they are not failures.
"""

from __future__ import annotations

import math
from typing import Any

#: Longest duration accepted anywhere (delays, timeouts, leases, backoff, ``Retry``): a century.
#: Defined here because ``Retry`` checks it; :mod:`minijobs.limits` holds the other bounds.
MAX_DURATION_S = 100 * 365.25 * 86400.0


#: The package minijobs was imported as: ``"minijobs"``, or e.g. ``"myapp._vendor.minijobs"`` when vendored.
_PACKAGE = __name__.rpartition(".")[0]


def public_module(module: str) -> str:
    """``module`` as recorded: minijobs' own modules as ``minijobs...`` whatever path it was imported by.

    Error records are read by name (``e.type == "minijobs.JobTimeoutError"``), so
    a vendored copy must record the names the docs give, not its import path.
    """
    if module == _PACKAGE or module.startswith(_PACKAGE + "."):
        return "minijobs" + module[len(_PACKAGE):]
    return module


def type_name(kind: type[BaseException]) -> str:
    """The dotted name an error record gives an exception type.

    Builtins bare (``"ValueError"``), minijobs' errors by their public name
    (``"minijobs.JobTimeoutError"``), anything else ``module.qualname``.
    """
    module = public_module(kind.__module__)
    if module == "builtins":
        return kind.__qualname__
    if module == "minijobs.errors":
        return f"minijobs.{kind.__qualname__}"
    return f"{module}.{kind.__qualname__}"


class MinijobsError(Exception):
    """Root of every error raised by minijobs."""


class PayloadTypeError(MinijobsError, TypeError):
    """Job arguments or a result hold a value JSON cannot round-trip exactly."""


class PayloadValueError(MinijobsError, ValueError):
    """Job arguments are JSON-typed but unacceptable (NaN, too deep, too large)."""


class InvalidNameError(MinijobsError, ValueError):
    """A queue or job name is empty, too long or has characters outside the allowed set."""


class ConfigurationError(MinijobsError, ValueError):
    """An option given to App, Queue, a job or a plugin is out of range or inconsistent."""


class CronError(MinijobsError, ValueError):
    """A cron expression or time zone is malformed, or the expression can never fire."""


class UnknownJobError(MinijobsError, LookupError):
    """A job name is not in this process's registry (never imported from a string)."""


class JobArgumentsError(MinijobsError, TypeError):
    """The arguments given at enqueue do not fit the job function's signature; nothing was written."""


class UnknownQueueError(MinijobsError, LookupError):
    """A job was enqueued to a queue the App does not declare (see ``App(remote_queues=...)``)."""


class JobNotFoundError(MinijobsError, LookupError):
    """No job has the given id."""


class InvalidStateError(MinijobsError):
    """The job is not in a state that allows the requested operation."""


class WaitTimeoutError(MinijobsError, TimeoutError):
    """``JobRef.wait`` ran out of time before the job reached a terminal state."""


class JobTimeoutError(MinijobsError, TimeoutError):
    """A job ran longer than its ``timeout_s``; recorded as a failed attempt."""


class JobFailedError(MinijobsError):
    """Raised by ``drain(raise_on_failure=True)`` for the first job that failed."""

    def __init__(self, message: str, *, job_id: int) -> None:
        super().__init__(message)
        self.job_id = job_id


class StoreError(MinijobsError):
    """The SQLite store could not complete an operation."""


class DatabaseBusyError(StoreError, TimeoutError):
    """Another connection held the write lock for longer than the busy timeout."""


class StorageFullError(StoreError, OSError):
    """The disk (or a file size limit) is full; nothing was written."""


class DatabaseFileError(StoreError, OSError):
    """The database file or its folder cannot be created, opened or written (missing folder, permissions).

    The message names the path and the operating system's reason.
    """


class CorruptDatabaseError(StoreError):
    """The file is not a SQLite database or is damaged."""


class SchemaVersionError(StoreError):
    """The database was written by a newer minijobs than this one."""


class Retry(Exception):
    """Raise inside a job to ask for another attempt after ``delay_s`` seconds.

    It consumes an attempt: once ``max_attempts`` is reached the job fails,
    so a job that always raises ``Retry`` cannot loop forever.
    """

    def __init__(self, delay_s: float | None = None, message: str = "") -> None:
        super().__init__(message or f"retry requested (delay_s={delay_s})")
        if delay_s is not None and (
            isinstance(delay_s, bool) or not isinstance(delay_s, int | float) or not math.isfinite(delay_s)
            or not 0 <= delay_s <= MAX_DURATION_S
        ):
            raise ConfigurationError(f"Retry delay_s must be a number of seconds from 0 to {MAX_DURATION_S:.0f} "
                                     f"(100 years), got {delay_s!r}")
        self.delay_s = delay_s


class PluginTrigger(Exception):
    """Raised by a job to hand its outcome to the app's plugins: ``raise PluginTrigger("quota", retry_in=60)``.

    Each plugin's :meth:`~minijobs.Plugin.on_job_trigger` sees ``reason`` and
    ``data`` and may decide the outcome by returning the job with its state
    and result set (succeeded with a replacement result, say); the first
    plugin that returns a job decides.  When none does, the attempt fails
    with this error like with any other (retried while attempts remain).
    ``current_job().plugin_trigger(reason, **data)`` raises it.  ``data``
    should be JSON (it crosses to the worker from a process child).
    """

    def __init__(self, reason: str, **data: Any) -> None:
        if not isinstance(reason, str) or not reason:
            raise TypeError(f"PluginTrigger needs a non-empty str reason, got {reason!r}")
        super().__init__(reason)
        self.reason = reason
        self.data = data


class Cancelled(Exception):
    """Raised by ``current_job().check_cancelled()`` once the job was cancelled.

    Deliberately not an ``asyncio.CancelledError``: it is an ordinary exception a
    thread job can raise to stop cooperatively.
    """


class JobReleased(MinijobsError):
    """The worker stopped before the job finished; the job goes back to its queue unharmed."""


class LeaseLostError(MinijobsError):
    """The worker lost the job's lease to another worker; this attempt's outcome is discarded."""


class ProcessDiedError(MinijobsError):
    """The child process running a job died before reporting (killed, ``os._exit``, crash).

    Only that job's attempt fails (and is retried if attempts remain); the
    process executor starts a new child and its other jobs go on.
    """


class RemoteJobError(MinijobsError):
    """An exception a job raised in a child process, re-created in the worker.

    The class the worker sees is a subclass named after the original type
    (``__module__`` and ``__qualname__`` are the child's), so error records
    show ``myapp.errors.QuotaError``; ``remote_type`` holds that dotted name and
    ``__cause__`` carries the child's traceback.  Builtin exceptions and
    minijobs' own (``Retry``, ``Cancelled``...) are re-created as themselves.
    """

    remote_type: str = ""
