"""The default executor: each job is an asyncio task in the worker's loop.

Timeouts and cancellation are hard for ``async def`` jobs (the task is
cancelled at its next ``await``).  Plain ``def`` jobs run in a small thread
pool so they cannot block the loop; for them, as in any thread, cancellation is
cooperative (see :class:`~minijobs.ThreadExecutor`), and as there the pool's
threads are daemon threads, so one that never returns does not hold the
process open at exit.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import sys
from typing import TYPE_CHECKING, Any

from ..context import reset_current, set_current
from ..job import Job
from ._pool import DaemonThreadPool
from .base import CancelReason, Executor, ExecutorHost, call_capturing

#: Whether ``asyncio.Task`` takes ``eager_start`` (Python 3.12+).
_EAGER = sys.version_info >= (3, 12)

if TYPE_CHECKING:
    from ..queue import Queue

logger = logging.getLogger(__name__)


class AsyncExecutor(Executor):
    """Runs jobs as asyncio tasks; ``sync_threads`` bounds the pool used for plain ``def`` jobs."""

    def __init__(self, host: ExecutorHost, queue: Queue, *, sync_threads: int = 8) -> None:
        super().__init__(host, queue)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._reasons: dict[int, CancelReason] = {}
        self._sync_threads = sync_threads
        self._pool: DaemonThreadPool | None = None
        #: Jobs whose plain ``def`` function is running in a pool thread (touched only in the loop thread).
        self._in_thread: set[int] = set()
        #: ``inspect.iscoroutinefunction`` per function, asked once per function rather than per job (it walks the function's wrappers).
        self._is_async: dict[Any, bool] = {}

    def push(self, job: Job) -> None:
        job = self.on_job_starting(job)
        if _EAGER:
            # Python 3.12+: the job runs until its first real suspension right here, so a job that
            # never waits finishes without a trip through the loop's ready queue.  The task is still
            # a real task from its first step (current_task(), timeouts and TaskGroups work).
            task = asyncio.Task(self._run(job), loop=self.host.loop, eager_start=True)  # type: ignore[call-arg]
            if task.done():
                return
        else:
            task = self.host.loop.create_task(self._run(job))
        self._tasks[job.id] = task

    async def _run(self, job: Job) -> None:
        ctx = self.make_context(job)
        token = set_current(ctx)
        timer = None
        if job.timeout_s is not None:
            timer = self.host.loop.call_later(job.timeout_s, functools.partial(self.cancel, job.id, reason="timeout"))
        exc: BaseException | None = None
        result: Any = None
        stopped_for: CancelReason | None = None
        # Every exception a job raises ends here, in the job's own task: one that escaped would end the
        # task without a report (GeneratorExit: the job stays running) or, for SystemExit and
        # KeyboardInterrupt, be re-raised out of the worker's event loop and end the worker.
        try:
            func, args, kwargs = self.get_function_and_kwargs(job)
            if self._coroutine_function(func):
                result = await func(*args, **kwargs)
            else:
                self._in_thread.add(job.id)
                try:
                    error, result = await self._run_sync(func, args, kwargs)
                finally:
                    self._in_thread.discard(job.id)
                if error is not None:
                    raise error  # caught below, in this frame (out of a coroutine, StopIteration would change)
            if result is not None and inspect.isawaitable(result):
                result = await result
        except asyncio.CancelledError as cancelled:
            if job.id in self._reasons or _cancel_requested():
                stopped_for = "shutdown"  # a stop from outside the job (the executor's reason, if any, wins below)
            else:
                exc = cancelled  # the job's own (e.g. it awaited a future someone cancelled): a failure
        except BaseException as error:  # noqa: BLE001 - SystemExit, KeyboardInterrupt...: this attempt's failure
            exc = error
        finally:
            if timer is not None:
                timer.cancel()
            reset_current(token)
            self._tasks.pop(job.id, None)
        stopped_for = self._reasons.pop(job.id, stopped_for)
        if stopped_for is not None:
            # The attempt was stopped: the reason decides the outcome, whether the job let its CancelledError
            # through, swallowed it or raised something else instead (kept as the cause, in the traceback).
            raised, exc = exc, self.exception_for(stopped_for, job)
            exc.__cause__ = raised
        self.on_job_completed(job, exc=exc, result=None if exc is not None else result)

    def _coroutine_function(self, func: Any) -> bool:
        try:
            known = self._is_async.get(func)
        except TypeError:  # an unhashable callable object
            return inspect.iscoroutinefunction(func)
        if known is None:
            known = self._is_async[func] = inspect.iscoroutinefunction(func)
        return known

    async def _run_sync(
        self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[BaseException | None, Any]:
        """(error, result) of ``func`` run in the pool.

        The exception comes back as a value: an asyncio future refuses some (StopIteration), and
        neither it nor the pool thread should carry a job's SystemExit.
        """
        if self._pool is None:
            self._pool = DaemonThreadPool(self._sync_threads, thread_name_prefix=f"minijobs-{self.queue.name}")
        call = functools.partial(contextvars.copy_context().run, call_capturing, func, args, kwargs)
        outcome: tuple[BaseException | None, Any] = await self.host.loop.run_in_executor(self._pool, call)
        return outcome

    def cancel(self, job_id: int, *, reason: CancelReason = "cancel") -> None:
        task = self._tasks.get(job_id)
        if task is None or job_id in self._reasons:
            return
        self._reasons[job_id] = reason
        ctx = self.contexts.get(job_id)
        if ctx is not None:
            ctx._request_cancel()
        task.cancel()

    async def stop(self, *, grace_s: float) -> None:
        await self.wait_or_hurry(list(self._tasks.values()), grace_s)
        if self._in_thread:
            logger.warning(
                "queue %s: %d plain def jobs are still running in their threads; their jobs are released and "
                "whatever they return is discarded (threads cannot be killed)",
                self.queue.name, len(self._in_thread),
            )
        for job_id in list(self._tasks):
            self.cancel(job_id, reason="shutdown")
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()))
        if self._pool is not None:
            # Threads cannot be killed: abandon jobs still running in them (already released).
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _cancel_requested() -> bool:
    """True if someone called ``cancel()`` on the running task (not a CancelledError the job raised itself)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
