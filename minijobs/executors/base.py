"""The :class:`Executor` ABC: how a queue's claimed jobs are run.

The worker claims exactly :attr:`Executor.free_slots` jobs and hands each to
:meth:`Executor.push`.  An executor reports back through
:meth:`on_job_starting` and :meth:`on_job_completed`; the worker turns the
latter into a DB write (success, retry with backoff, failure, cancellation or
release), batched with the other completions of the same loop iteration.

Bookkeeping (``running``) lives in the worker's event-loop thread; executors
whose jobs finish in other threads call :meth:`on_job_completed` from there
and it hops to the loop.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from ..context import JobContext
from ..errors import Cancelled, JobReleased, JobTimeoutError, LeaseLostError, PayloadValueError, UnknownJobError
from ..job import Job

if TYPE_CHECKING:
    from ..queue import Queue
    from ..worker import Worker

CancelReason = Literal["cancel", "timeout", "shutdown", "lost"]


class Executor(ABC):
    """Runs the jobs of one queue inside a worker."""

    def __init__(self, worker: Worker, queue: Queue, **options: Any) -> None:
        if options:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(options)}")
        self.worker = worker
        self.queue = queue
        self.concurrency: int = queue.concurrency or self.get_default_concurrency()
        #: Jobs pushed and not yet completed, by id (touched only in the worker's loop thread).
        self.running: dict[int, Job] = {}
        self.contexts: dict[int, JobContext] = {}
        self._idle: asyncio.Future[None] | None = None

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
        registered = self.worker.app.registry.get(job.name)
        if registered is None:
            raise UnknownJobError(
                f"no job named {job.name!r} is registered in this process; "
                "register it with @app.job before starting the worker"
            )
        if not job.args and "__undecodable_payload__" in job.kwargs:
            raise PayloadValueError(f"job {job.id}: stored payload is not valid JSON job arguments")
        return registered.func, job.args, job.kwargs

    def make_context(self, job: Job) -> JobContext:
        ctx = JobContext(job, on_progress=self.worker.report_progress)
        self.contexts[job.id] = ctx
        if self.worker.is_stopping:
            ctx._request_cancel()  # pushed just before the stop began: it must see the stop as well
        return ctx

    def flag_stopping(self) -> list[int]:
        """Flag the context of every running job cancelled, recording nothing; return the jobs' ids.

        Called when the worker starts a graceful stop, so that cooperative jobs
        (``current_job().cancelled``, ``check_cancelled()``) end it early.  A job
        may still finish within ``grace_s``, and then what it returns is written.
        Jobs without a context here (a child process's) do not see it.
        """
        for ctx in self.contexts.values():
            ctx._request_cancel()
        return list(self.contexts)

    def on_job_starting(self, job: Job) -> Job:
        """Record ``job`` as running and let plugins see (and replace) it."""
        job = self.worker.job_starting(job)
        self.running[job.id] = job
        return job

    def on_job_completed(self, job: Job, exc: BaseException | None = None, result: Any = None) -> None:
        """Report the end of an attempt; safe to call from any thread."""
        if not self.worker.in_loop_thread():
            self.worker.call_soon(self.on_job_completed, job, exc, result)
            return
        if self.running.pop(job.id, None) is None:
            return  # already reported (e.g. a late result after a timeout)
        self.contexts.pop(job.id, None)
        self.worker.job_completed(job, exc=exc, result=result)

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
        hurry = asyncio.ensure_future(self.worker.hurried.wait())
        try:
            while pending and not hurry.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                done, _ = await asyncio.wait(pending | {hurry}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                pending -= done
        finally:
            hurry.cancel()
