"""``ThreadExecutor``: jobs on a pool of threads, for blocking libraries.

Plain ``def`` jobs run directly in a pool thread.  ``async def`` jobs run in
that thread too, on an event loop the thread keeps for its whole life (one
loop per pool thread, cheaper than ``asyncio.run`` per job).

Python cannot kill a thread, so timeouts and cancellation are *cooperative*:
the attempt is recorded at the deadline or cancel (``JobTimeoutError`` /
``Cancelled``, retried if attempts remain), ``current_job().cancelled``
turns True, ``current_job().check_cancelled()`` raises, and an ``async def``
job also gets its task cancelled at its next ``await``.  A plain function that
never checks keeps running; what it returns is discarded, and its thread keeps
its slot until it returns (see :class:`~minijobs.ConcurrentExecutor`).

The pool's threads are daemon threads (:class:`._pool.DaemonThreadPool`), so
a job that never returns does not keep the process alive once the program is
done: after a stop its job was already released or recorded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..context import reset_current, set_current
from ._pool import DaemonThreadPool
from .base import ExecutorHost, await_capturing
from .concurrent import Call, ConcurrentExecutor

if TYPE_CHECKING:
    from ..queue import Queue

logger = logging.getLogger(__name__)


class ThreadExecutor(ConcurrentExecutor):
    """``Queue("io", executor=ThreadExecutor, concurrency=16)``; the pool has exactly ``concurrency`` threads."""

    def __init__(self, host: ExecutorHost, queue: Queue) -> None:
        super().__init__(host, queue)
        self._local = threading.local()
        self._loops: list[asyncio.AbstractEventLoop] = []
        self._loops_lock = threading.Lock()

    @classmethod
    def get_default_concurrency(cls) -> int:
        # Threads suit jobs that mostly wait, so the default is not tied to the CPU count; the pool
        # only starts a thread when no idle one is left.  Fewer slots also mean smaller claim and
        # finish batches: at 6 slots a no-op drain runs ~7k jobs/s, at 32 ~18k (benchmarks/).
        return 32

    def create_pool(self) -> concurrent.futures.Executor:
        return DaemonThreadPool(self.concurrency, thread_name_prefix=f"minijobs-{self.queue.name}")

    def submit(self, call: Call) -> None:
        func, args, kwargs = self.get_function_and_kwargs(call.job)
        assert self.pool is not None
        self.pool.submit(self._run, call, func, args, kwargs)

    def _run(self, call: Call, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # Reports itself rather than through the future: no done-callback and no future locking per job.
        token = set_current(call.ctx)
        try:
            result = func(*args, **kwargs)
            if inspect.isawaitable(result):
                result = self._run_awaitable(call, result)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a job is that job's failure
            self.returned(call, exc, None)
        else:
            self.returned(call, None, result)
        finally:
            reset_current(token)

    def _run_awaitable(self, call: Call, awaitable: Awaitable[Any]) -> Any:
        if call.abandoned:  # cancelled before the task existed: its outcome is discarded, so do not start it
            close = getattr(awaitable, "close", None)
            if callable(close):
                close()  # a coroutine never started must be closed, or it warns that it was never awaited
            return None
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            self._local.loop = loop
            with self._loops_lock:
                self._loops.append(loop)
        # The job's exception comes back as a value: a SystemExit or KeyboardInterrupt escaping the task
        # would leave this thread's loop mid-step (and be logged as never retrieved); raised here, the
        # caller records it like any other.
        task = loop.create_task(await_capturing(awaitable))
        call.interrupt = (loop, task)
        try:
            error, result = loop.run_until_complete(task)
        finally:
            call.interrupt = None
            if self.stopped:
                self._close_loop(loop)
        if error is not None:
            raise error
        return result

    def interrupt(self, call: Call) -> None:
        """Cancel the task of an ``async def`` job in its thread's loop (plain functions only get the flag)."""
        pair = call.interrupt
        if pair is None:
            return
        loop, task = pair
        try:
            loop.call_soon_threadsafe(task.cancel)
        except RuntimeError:  # its loop just closed: the call has returned
            pass

    def _close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._loops_lock:
            if loop in self._loops:
                self._loops.remove(loop)
        if not loop.is_closed():
            loop.close()

    async def stop(self, *, grace_s: float) -> None:
        await super().stop(grace_s=grace_s)
        # Close the per-thread loops that are idle; a thread still inside an abandoned call closes its own.
        with self._loops_lock:
            idle = [loop for loop in self._loops if not loop.is_running()]
        for loop in idle:
            self._close_loop(loop)
