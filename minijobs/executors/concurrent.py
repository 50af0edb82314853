"""``ConcurrentExecutor``: the base for executors that run each job on a :mod:`concurrent.futures` pool.

What it adds to :class:`~minijobs.Executor`:

* **Batched completions.**  A pool thread that finishes a call appends it to a
  list and, only if no hop is already pending, schedules one
  ``call_soon_threadsafe`` to the worker's loop; the loop then reports every
  call finished meanwhile in one go.  Progress reports travel in the same list
  so a job's last progress is always noted before its completion.
* **Independent completions.**  Each entry of a batch is handled on its
  own: one that cannot be (logged with its job id, and a completion still
  settled, as a failure) does not lose the outcomes of the others.
* **Timeouts and cancellation that do not wait for the call.**  A pool
  cannot stop a call it has started (Python cannot kill a thread), so on a
  timeout, cancel, lost lease or shutdown the attempt is *recorded at once*
  (``JobTimeoutError``, ``Cancelled``...), the job's context is flagged
  (``current_job().cancelled``) and the call is *abandoned*: whatever it
  returns later is discarded.  An abandoned call still occupies its slot
  (:attr:`free_slots` counts it) until it really returns, so a queue of stuck
  jobs can never grow the pool beyond ``concurrency`` threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..context import JobContext
from ..job import Job, Progress
from .base import CancelReason, Executor, ExecutorHost

if TYPE_CHECKING:
    from ..queue import Queue

logger = logging.getLogger(__name__)


class Call:
    """One attempt handed to the pool: the job, its context and what is needed to stop it early."""

    __slots__ = ("abandoned", "ctx", "interrupt", "job", "timer")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.ctx: JobContext = None  # type: ignore[assignment]  # set right after, bound to this call
        self.timer: asyncio.TimerHandle | None = None
        #: True once the attempt was recorded (timeout, cancel...) while the call still runs.
        self.abandoned = False
        #: Set by subclasses while the call can be hurried (e.g. the task of an ``async def`` job).
        self.interrupt: Any = None


class ConcurrentExecutor(Executor):
    """Runs jobs on a :class:`concurrent.futures.Executor` created by :meth:`create_pool`.

    Subclasses provide :meth:`create_pool` and :meth:`submit`; they may override
    :meth:`interrupt` to hurry a call that was abandoned.
    """

    def __init__(self, host: ExecutorHost, queue: Queue, **options: Any) -> None:
        super().__init__(host, queue, **options)
        self.pool: concurrent.futures.Executor | None = None
        self._calls: dict[int, Call] = {}
        self._abandoned: set[Call] = set()
        # (call, exc, result) for a finished call, or (call, None, Progress) with progress=True marker.
        self._inbox: list[tuple[Call, BaseException | None, Any, bool]] = []
        self._inbox_lock = threading.Lock()
        self._hop_pending = False
        self.stopped = False

    @property
    def free_slots(self) -> int:
        # An abandoned call still holds a pool worker: count it until it returns.
        return max(0, self.concurrency - len(self.running) - len(self._abandoned))

    @property
    def abandoned_calls(self) -> int:
        """Calls already recorded (timed out, cancelled...) whose thread has not returned yet."""
        return len(self._abandoned)

    @abstractmethod
    def create_pool(self) -> concurrent.futures.Executor:
        """The pool; its size should be :attr:`concurrency` so that slots and workers match."""

    @abstractmethod
    def submit(self, call: Call) -> None:
        """Start ``call`` on :attr:`pool` and make sure :meth:`returned` is called when it ends.

        A callable run in this process can call :meth:`returned` itself (cheapest); otherwise
        pass the pool's future to :meth:`watch`.  Raising here fails the attempt at once.
        """

    def interrupt(self, call: Call) -> None:
        """Hurry an abandoned call if the pool can (default: nothing beyond the context flag)."""

    async def start(self) -> None:
        self.pool = self.create_pool()

    def push(self, job: Job) -> None:
        job = self.on_job_starting(job)
        call = Call(job)
        # Progress is bound to this call, so a late report of an abandoned call never lands on a newer attempt.
        call.ctx = self.make_context(job, on_progress=functools.partial(self._progress_from_pool, call))
        self._calls[job.id] = call
        if job.timeout_s is not None:
            call.timer = self.host.loop.call_later(
                job.timeout_s, functools.partial(self.cancel, job.id, reason="timeout")
            )
        try:
            self.submit(call)
        except Exception as exc:  # noqa: BLE001 - unknown job, pool shut down...: this attempt fails, the worker goes on
            self._settle(call, exc, None)

    def watch(self, call: Call, future: concurrent.futures.Future[Any]) -> None:
        """Report ``call`` through :meth:`returned` when ``future`` is done."""
        future.add_done_callback(functools.partial(self._future_done, call))

    # -- from pool threads -------------------------------------------------

    def _future_done(self, call: Call, future: concurrent.futures.Future[Any]) -> None:
        if future.cancelled():
            self.returned(call, self.exception_for("shutdown", call.job), None)
            return
        exc = future.exception()
        self.returned(call, exc, None if exc is not None else future.result())

    def returned_from(self, call: Call, outcome: Callable[[], tuple[BaseException | None, Any]]) -> None:
        """Report ``call`` with what ``outcome()`` says (error, result); if reading it fails, as that failure.

        For done-callbacks that decode a call's answer: an exception escaping a future's callback is
        only logged by :mod:`concurrent.futures`, and the job would stay running.
        """
        try:
            exc, result = outcome()
        except Exception as error:  # noqa: BLE001 - an undecodable answer is this attempt's failure
            exc, result = error, None
        self.returned(call, exc, result)

    def returned(self, call: Call, exc: BaseException | None, result: Any) -> None:
        """The call ended with ``result`` or ``exc``; safe from any thread, batched into one loop hop."""
        self._post(call, exc, result, False)

    def _progress_from_pool(self, call: Call, job_id: int, progress: Progress, text: str) -> None:
        # Already checked and encoded by the job's context, in the job's thread: it cannot fail in the loop.
        if not call.abandoned:
            self._post(call, None, (progress, text), True)

    def _post(self, call: Call, exc: BaseException | None, value: Any, is_progress: bool) -> None:
        with self._inbox_lock:
            self._inbox.append((call, exc, value, is_progress))
            if self._hop_pending:
                return
            self._hop_pending = True
        self.host.call_soon(self._drain_inbox)

    # -- in the loop thread --------------------------------------------------

    def _drain_inbox(self) -> None:
        with self._inbox_lock:
            batch, self._inbox = self._inbox, []
            self._hop_pending = False
        for call, exc, value, is_progress in batch:
            # Each entry on its own: one that cannot be handled must not lose the others of the batch.
            try:
                self._handle(call, exc, value, is_progress)
            except Exception as error:  # logged; a completion is still settled, as a failure
                logger.exception("job %d attempt %d: its %s could not be handled", call.job.id, call.job.attempts,
                                 "progress report" if is_progress else "completion", extra={"job_id": call.job.id})
                if not is_progress and not call.abandoned and self.running.get(call.job.id) is call.job:
                    if self._calls.get(call.job.id) is call:
                        del self._calls[call.job.id]
                    self.on_job_completed(call.job, exc=error)
        if not self._calls:
            self.notify_idle()

    def _handle(self, call: Call, exc: BaseException | None, value: Any, is_progress: bool) -> None:
        """One inbox entry: a progress report, or the end of a call (settled, or discarded if abandoned)."""
        if is_progress:
            if not call.abandoned:
                progress, text = value
                self.host.report_progress(call.job.id, progress, text)
        elif call.abandoned:
            self._abandoned.discard(call)
            logger.info(
                "job %d attempt %d: call returned after its attempt was recorded; its %s is discarded",
                call.job.id, call.job.attempts, "error" if exc is not None else "result",
                extra={"job_id": call.job.id},
            )
            self.host.wake()  # its slot is free again
        else:
            self._settle(call, exc, value)

    def _settle(self, call: Call, exc: BaseException | None, result: Any) -> None:
        if self._calls.get(call.job.id) is call:
            del self._calls[call.job.id]
        if call.timer is not None:
            call.timer.cancel()
        self.on_job_completed(call.job, exc=exc, result=result)

    def cancel(self, job_id: int, *, reason: CancelReason = "cancel") -> None:
        """Record the attempt now (timeout, cancelled, lost or released) and abandon its call."""
        call = self._calls.get(job_id)
        if call is None or call.abandoned:
            return
        call.abandoned = True
        call.ctx.timed_out = reason == "timeout"
        call.ctx._request_cancel()
        self._abandoned.add(call)
        try:
            self.interrupt(call)
        except Exception:
            logger.exception("job %d: could not interrupt its call", job_id)
        self._settle(call, self.exception_for(reason, call.job), None)

    async def stop(self, *, grace_s: float) -> None:
        self._drain_inbox()
        if self._calls:
            await self.wait_idle(grace_s)
            self._drain_inbox()
        for job_id in list(self._calls):
            self.cancel(job_id, reason="shutdown")
        if self._abandoned:
            logger.warning(
                "queue %s: %d job calls are still running in the pool; their jobs were recorded or "
                "released and whatever they return is discarded (threads cannot be killed)",
                self.queue.name, len(self._abandoned),
            )
        self.stopped = True
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
