"""The :class:`Executor` ABC: how a queue's claimed jobs are run.

The worker claims exactly :attr:`Executor.free_slots` jobs and hands each to
:meth:`Executor.push`.  An executor reports back through
:meth:`on_job_starting` and :meth:`on_job_completed`; the worker turns the
latter into a DB write (success, retry with backoff, failure, cancellation or
release), batched with the other completions of the same loop iteration.

Bookkeeping (``running``) lives in the worker's event-loop thread; executors
whose jobs finish in other threads call :meth:`on_job_completed` from there
and it hops to the loop.

**No job can end its worker.**  Whatever a job raises, ``BaseException``
included (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, a custom
``BaseException`` subclass, an ``asyncio.CancelledError`` the job raised
itself), ends *that attempt* as a failure recording the exception's type;
the worker and its other jobs go on.  Every executor catches at the point
where job code returns to it (the task, the pool thread, the child's loop)
and reports the exception through :meth:`on_job_completed`.  The only
exception not treated so is the ``CancelledError`` an executor itself uses
to stop a job for a cancel, timeout, lost lease or shutdown: then that reason
decides the outcome, whatever the job raised while stopping.

Such a failure is an ordinary one: it is retried while attempts remain.  A
job's ``sys.exit()`` or ``KeyboardInterrupt`` says nothing about the job
that another attempt could not fix (it is often a library's way of giving
up, e.g. a CLI entry point called as a function), and an exception type
cannot tell a permanent failure from a transient one any better than
``ValueError`` can; ``max_attempts`` bounds the retries either way.  (A real
Ctrl-C or SIGTERM never surfaces in job code: ``run_worker`` and the CLI
handle them as signals that stop the worker gracefully.)

**No job's outcome can be lost on its way in.**  If the worker cannot record
an outcome (a job's exception whose ``str()`` raises or holds a lone
surrogate, a result object that breaks during encoding), the attempt is
recorded as a failure by a stand-in that names the original type, and the
error is logged with the job's id.  Executors that handle several
completions in one go handle each on its own.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..context import JobContext
from ..errors import (
    Cancelled,
    JobReleased,
    JobTimeoutError,
    LeaseLostError,
    MinijobsError,
    PayloadValueError,
    UnknownJobError,
)
from ..job import Job, Progress
from ..payload import utf8_safe

if TYPE_CHECKING:
    from ..queue import Queue
    from ..registry import JobFunction

CancelReason = Literal["cancel", "timeout", "shutdown", "lost"]

logger = logging.getLogger(__name__)


class ExecutorHost(Protocol):
    """What an executor may use of the worker that runs it, and nothing more.

    The worker implements it; an executor never reaches the app, the store or
    the registry behind it, so that a worker can change (another store, another
    loop layout) without touching executors, and a test can host one alone.
    Everything but :meth:`call_soon` and :meth:`report_progress` is for the
    worker's loop thread.
    """

    #: Set when the worker must stop without waiting for running jobs.
    hurried: asyncio.Event

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The worker's event loop (timers, readers, ``run_in_executor``)."""
        ...

    @property
    def is_stopping(self) -> bool:
        """True once the worker's stop began: a job pushed now must see itself cancelled."""
        ...

    @property
    def max_payload_bytes(self) -> int:
        """Largest encoded result a job may return (what a process child checks before sending it)."""
        ...

    def in_loop_thread(self) -> bool: ...

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback`` in the loop thread (from any thread)."""
        ...

    def wake(self) -> None:
        """Say a slot is free (the worker claims again)."""
        ...

    def report_progress(self, job_id: int, progress: Progress, text: str | None = None) -> None:
        """Note a running job's progress (any thread)."""
        ...

    def job_function(self, name: str) -> JobFunction[..., Any] | None:
        """The function registered for job ``name`` in this process."""
        ...

    def job_modules(self) -> set[str]:
        """The modules defining the registered job functions (what a child process imports)."""
        ...

    def job_starting(self, job: Job) -> Job:
        """The job as it will run (plugins may replace it)."""
        ...

    def job_completed(self, job: Job, *, exc: BaseException | None, result: Any) -> None:
        """Record the end of an attempt (its outcome is decided and written by the worker)."""
        ...


class Executor(ABC):
    """Runs the jobs of one queue inside a worker, through the worker's :class:`ExecutorHost` side."""

    def __init__(self, host: ExecutorHost, queue: Queue, **options: Any) -> None:
        if options:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(options)}")
        self.host = host
        self.queue = queue
        self.concurrency: int = queue.concurrency or self.get_default_concurrency()
        #: Jobs pushed and not yet completed, by id (touched only in the worker's loop thread).
        self.running: dict[int, Job] = {}
        self.contexts: dict[int, JobContext] = {}
        self._idle: asyncio.Future[None] | None = None

    @property
    def worker(self) -> ExecutorHost:
        """The same object as :attr:`host` (the name executors written before it used)."""
        return self.host

    @classmethod
    def get_default_concurrency(cls) -> int:
        return 100

    @property
    def free_slots(self) -> int:
        return max(0, self.concurrency - len(self.running))

    async def start(self) -> None:
        """Create pools or other resources; called once before the first push."""

    @abstractmethod
    def push(self, job: Job) -> None:
        """Start running ``job`` (already claimed and leased); must not block."""

    @abstractmethod
    def cancel(self, job_id: int, *, reason: CancelReason = "cancel") -> None:
        """Stop ``job_id`` as promptly as this executor can (hard or cooperative)."""

    @abstractmethod
    async def stop(self, *, grace_s: float) -> None:
        """Wait up to ``grace_s`` for running jobs, then cancel the rest with reason ``"shutdown"``.

        Returns once every pushed job has been reported to :meth:`on_job_completed`.
        """

    # -- shared machinery -------------------------------------------------

    def get_function_and_kwargs(self, job: Job) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """Look the job's function up in the app's registry (never import a stored name)."""
        registered = self.host.job_function(job.name)
        if registered is None:
            raise UnknownJobError(
                f"no job named {job.name!r} is registered in this process; "
                "register it with @app.job before starting the worker"
            )
        if not job.args and "__undecodable_payload__" in job.kwargs:
            raise PayloadValueError(f"job {job.id}: stored payload is not valid JSON job arguments")
        return registered.func, job.args, job.kwargs

    def make_context(self, job: Job, *, on_progress: Callable[..., None] | None = None) -> JobContext:
        """The job's context, registered for cancellation; ``on_progress`` defaults to the worker's."""
        ctx = JobContext(job, on_progress=self.host.report_progress if on_progress is None else on_progress)
        self.contexts[job.id] = ctx
        if self.host.is_stopping:
            ctx._request_cancel()  # pushed just before the stop began: it must see the stop as well
        return ctx

    def flag_stopping(self) -> list[int]:
        """Flag the context of every running job cancelled, recording nothing; return the jobs' ids.

        Called when the worker starts a graceful stop, so that cooperative jobs
        (``current_job().cancelled``, ``check_cancelled()``) end it early.  A job
        may still finish within ``grace_s``, and then what it returns is written.
        Executors whose jobs have no context here (a process child's) tell them their own way.
        """
        for ctx in self.contexts.values():
            ctx._request_cancel()
        return list(self.contexts)

    def on_job_starting(self, job: Job) -> Job:
        """Record ``job`` as running and let plugins see (and replace) it."""
        job = self.host.job_starting(job)
        self.running[job.id] = job
        return job

    def on_job_completed(self, job: Job, exc: BaseException | None = None, result: Any = None) -> None:
        """Report the end of an attempt; safe to call from any thread."""
        if not self.host.in_loop_thread():
            self.host.call_soon(self.on_job_completed, job, exc, result)
            return
        if self.running.pop(job.id, None) is None:
            return  # already reported (e.g. a late result after a timeout)
        self.contexts.pop(job.id, None)
        try:
            self.host.job_completed(job, exc=exc, result=result)
        except Exception as error:  # noqa: BLE001 - one broken outcome must not stop the caller's other work
            self._record_stand_in(job, exc, error)

    def _record_stand_in(self, job: Job, exc: BaseException | None, error: Exception) -> None:
        """The worker could not record this attempt's outcome: record a failure that it can."""
        what = "its error" if exc is not None else "its result"
        logger.error("job %d (%s) attempt %d: %s could not be recorded (%s); recording a failure instead",
                     job.id, job.name, job.attempts, what, _safe_text(f"{type(error).__name__}: ", error),
                     exc_info=error, extra={"job_id": job.id})
        try:
            self.host.job_completed(job, exc=stand_in(exc, error), result=None)
        except Exception:  # nothing left to try; the job's lease will expire and it reruns
            logger.exception("job %d: not even a stand-in failure could be recorded; the job runs again once its "
                             "lease expires", job.id, extra={"job_id": job.id})

    def exception_for(self, reason: CancelReason, job: Job) -> BaseException:
        """The exception that stands for a job stopped by the executor for ``reason``."""
        if reason == "timeout":
            return JobTimeoutError(f"job {job.id} ({job.name}) timed out after {job.timeout_s} s")
        if reason == "shutdown":
            return JobReleased(f"job {job.id} released: worker stopping")
        if reason == "lost":
            return LeaseLostError(f"job {job.id}: lease lost to another worker")
        return Cancelled(f"job {job.id} was cancelled")

    async def wait_idle(self, grace_s: float) -> None:
        """Wait until :meth:`notify_idle` says no work is left, up to ``grace_s`` (or less if hurried)."""
        self._idle = asyncio.get_running_loop().create_future()
        try:
            await self.wait_or_hurry([self._idle], grace_s)
        finally:
            if not self._idle.done():
                self._idle.cancel()
            self._idle = None

    def notify_idle(self) -> None:
        """Called by subclasses once their last running call has ended, to end :meth:`wait_idle`."""
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def wait_or_hurry(self, futures: Iterable[Awaitable[Any]], grace_s: float) -> None:
        """Wait for ``futures`` up to ``grace_s``, or less if the worker is told to stop at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        pending: set[asyncio.Future[Any]] = {asyncio.ensure_future(f) for f in futures}
        hurry = asyncio.ensure_future(self.host.hurried.wait())
        try:
            while pending and not hurry.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                done, _ = await asyncio.wait(pending | {hurry}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                pending -= done
        finally:
            hurry.cancel()


# -- what a job raised, made safe to record ------------------------------------------------


class TracebackText(Exception):
    """Carries a traceback as text, as the ``__cause__`` of an error re-made elsewhere.

    Used for stand-ins of errors that could not be recorded as raised, and for
    errors re-created from a process child's description.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


_STAND_INS: dict[tuple[str, str], type[MinijobsError]] = {}


def stand_in(exc: BaseException | None, error: Exception) -> MinijobsError:
    """An error that can be recorded in place of ``exc``, which could not be (``error`` says why).

    Its class is named after ``exc``'s (module and qualified name), so the error
    record still says what the job raised; its message and traceback are
    ``exc``'s as far as they can be read, with lone surrogates escaped.
    With ``exc`` None (the result was what failed), a plain ``MinijobsError``.
    """
    reason = _safe_text(f"{type(error).__name__}: ", error)
    if exc is None:
        made = MinijobsError(f"the result could not be recorded: {reason}")
        text = utf8_safe("".join(traceback.format_exception(error)))
    else:
        kind = type(exc)
        key = (kind.__module__, kind.__qualname__)
        cls = _STAND_INS.get(key)
        if cls is None:
            cls = _STAND_INS[key] = type(kind.__name__, (MinijobsError,), {
                "__module__": kind.__module__, "__qualname__": kind.__qualname__,
                "__doc__": f"Stands for a {kind.__module__}.{kind.__qualname__} that could not be recorded as such.",
            })
        made = cls(f"{_safe_text('', exc)} (recorded by a stand-in: {reason})")
        text = utf8_safe("".join(traceback.format_exception(exc)))
    made.__cause__ = TracebackText(text)
    return made


def _safe_text(prefix: str, exc: BaseException) -> str:
    """``prefix + str(exc)`` that never raises and holds only valid UTF-8."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ is what we are working around
        text = f"<unprintable {type(exc).__name__}>"
    return utf8_safe(prefix + text)


def call_capturing(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[BaseException | None, Any]:
    """``(None, func(*args, **kwargs))``, or ``(exception, None)`` for *any* exception it raised.

    For job code run where an exception must not travel by itself: an
    ``asyncio`` future refuses ``StopIteration`` and re-raises ``SystemExit``
    out of the loop; a pool thread must outlive its job.
    """
    try:
        return None, func(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - the caller records it as the attempt's failure
        return exc, None


async def await_capturing(awaitable: Awaitable[Any]) -> tuple[BaseException | None, Any]:
    """Like :func:`call_capturing` for an awaitable, run as a task's coroutine.

    A task whose coroutine raises ``SystemExit`` or ``KeyboardInterrupt``
    re-raises it out of ``run_forever`` (leaving the loop mid-step); caught
    here, inside the coroutine, it stays a value.  ``CancelledError`` too: the
    callers of this helper record a stop themselves and discard the outcome.
    """
    try:
        return None, await awaitable
    except BaseException as exc:  # noqa: BLE001 - see above
        return exc, None
