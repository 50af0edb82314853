"""The store thread: how async code waits for the database without stalling its event loop.

A store call can block for as long as another process holds SQLite's write
lock (up to ``busy_timeout_s``).  Run on an event loop, that freezes every
task of the host program (a web server, a bot, a GUI) and can even cost a
worker its own leases.  So async code never calls the store on its loop: it
awaits :meth:`StoreThread.call`, which runs the call on one thread per App
and resolves an asyncio future when it returns.

One thread, not a pool: the store serialises its connection under a lock
anyway, and one thread keeps calls in the order they were made (an outcome
is written before the claim that refills its slot).  The thread takes every
call that is queued when it wakes and posts their results back in one
``call_soon_threadsafe`` per loop, so a busy worker pays one loop wake-up
per batch.  SQLite's C code releases the GIL, so the writes overlap with the
Python of running jobs on another core.

Sync APIs (``fn.enqueue``, ``app.get``...) stay direct calls on the caller's
thread: no hop, no added latency.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: What the thread is handed: (call, loop, future), or None to stop.
_Item = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"] | None


class StoreThread:
    """Runs blocking store calls, one at a time and in order, for any number of event loops."""

    def __init__(self, name: str = "minijobs-store") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False
        #: At collection or exit: stop the thread (it holds no reference to this object).
        self._finalizer = weakref.finalize(self, self._queue.put, None)

    async def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` on the store thread and await its result (or exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._ensure_running()
        self._queue.put(((lambda: fn(*args, **kwargs)), loop, future))
        return await future

    def close(self) -> None:
        """Stop the thread once the calls already queued have run; later calls start a new one."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None or self._pid != os.getpid():
                return
            self._queue.put(None)
            self._queue = queue.SimpleQueue()
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, self._queue.put, None)
        if thread is not threading.current_thread():
            thread.join()

    def _ensure_running(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            if self._pid != os.getpid() and self._pid:
                # A forked child: the parent's thread does not exist here, and its queue may hold
                # the parent's calls.  Start afresh.
                self._queue = queue.SimpleQueue()
                self._finalizer.detach()
                self._finalizer = weakref.finalize(self, self._queue.put, None)
            thread = threading.Thread(target=_serve, args=(self._queue,), name=self._name, daemon=True)
            thread.start()
            self._thread, self._pid = thread, os.getpid()


def _serve(calls: queue.SimpleQueue[_Item]) -> None:
    """The thread's body: run calls in order; hand results back in one callback per loop and batch."""
    while True:
        item = calls.get()
        batch: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        stop = False
        while item is not None:
            fn, loop, future = item
            try:
                outcome: tuple[asyncio.Future[Any], bool, Any] = (future, True, fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, whatever it is
                outcome = (future, False, exc)
            batch.setdefault(loop, []).append(outcome)
            try:
                item = calls.get_nowait()
            except queue.Empty:
                break
        else:
            stop = True
        for loop, results in batch.items():
            try:
                loop.call_soon_threadsafe(_resolve, results)
            except RuntimeError:  # the loop closed while its call ran: nobody awaits the result
                logger.debug("store call finished after its event loop closed; result dropped")
        del batch
        if stop:
            return


def _resolve(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
