"""``DaemonThreadPool``: a :mod:`concurrent.futures` thread pool whose threads never hold the process open.

Why not :class:`~concurrent.futures.ThreadPoolExecutor`?  Its threads are
joined at interpreter exit, even after ``shutdown(wait=False)``.  Python
cannot kill a thread, so a plain ``def`` job that ignores cancellation and
never returns would keep the whole process alive after its worker stopped
and released the job.  Here the threads are daemon threads and nothing joins
them at exit: once the program's main thread returns, a thread still inside
an abandoned call ends with the interpreter.  Its attempt was already
recorded, or its job released for another worker to run (at-least-once).

While the pool is in use it behaves as the executors relied on with
``ThreadPoolExecutor``: at most ``max_workers`` threads, a new thread only
when no idle one is left, calls started in submission order, the returned
future gets the result or the exception (``BaseException`` too: a job's
``SystemExit`` never ends a pool thread), and
``shutdown(wait=..., cancel_futures=...)`` lets running calls finish.  It
copies no context itself (the executors do), exactly like the standard pool.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class _WorkItem:
    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, future: concurrent.futures.Future[Any], fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def run(self) -> None:
        future = self.future
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - the future carries it, as in ThreadPoolExecutor
            future.set_exception(exc)
            # The traceback holds this frame: let the frame drop the future that holds the traceback.
            del self, future
        else:
            future.set_result(result)


def _work(items: queue.SimpleQueue[_WorkItem | None], idle: threading.Semaphore) -> None:
    # Holds the queue, not the pool, so a pool dropped without shutdown can still be collected.
    while True:
        item = items.get()
        if item is None:  # shut down: pass the signal on to the next idle thread
            items.put(None)
            return
        try:
            item.run()
        except BaseException:  # from a done-callback (the call's own error is on its future)
            # concurrent.futures logs a callback's Exception itself; anything else must not end this thread,
            # which would leave the pool one thread short for good.
            logger.exception("%s: a done-callback raised; the thread goes on", threading.current_thread().name)
        del item  # drop the call's arguments and result before waiting for more
        idle.release()


class DaemonThreadPool(concurrent.futures.Executor):
    """``max_workers`` daemon threads named ``{thread_name_prefix}_{n}``, started on demand."""

    def __init__(self, max_workers: int, *, thread_name_prefix: str) -> None:
        if max_workers <= 0:
            raise ValueError(f"max_workers must be > 0, got {max_workers!r}")
        self.max_workers = max_workers
        self.thread_name_prefix = thread_name_prefix
        self._items: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shutdown = False
        # Idle threads of a pool that is garbage-collected without shutdown() exit instead of waiting forever.
        weakref.finalize(self, self._items.put, None)

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._items.put(_WorkItem(future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=_work, args=(self._items, self._idle),
                    name=f"{self.thread_name_prefix}_{len(self._threads)}", daemon=True,
                )
                thread.start()
                self._threads.append(thread)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; with ``cancel_futures`` drop those not started.  Running calls are never stopped."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        item = self._items.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item.future.cancel()
            self._items.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
