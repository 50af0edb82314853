"""``ProcessExecutor``: each job runs in a spawn-context child process that can be killed.

For CPU-bound work (no GIL shared with the worker) and for code that may hang
or crash: a timeout or cancel ends the child (SIGKILL), and a child that dies
by itself (``os._exit``, a segfault, the OOM killer) fails or retries only the
job it was running; a new child takes its place and other jobs go on.

Why not :class:`concurrent.futures.ProcessPoolExecutor` (and so not
:class:`~minijobs.ConcurrentExecutor`)?  That pool cannot stop one task,
and one dead child breaks the whole pool (``BrokenProcessPool``) and every
task in it.  Here the executor owns up to ``concurrency`` children, each with
one job at a time and its own pipe, so killing and replacing is per job.

Nothing is pickled beyond what ``multiprocessing`` needs to start a child:
the job travels as JSON text (name, module and qualified name of its
function, arguments) and the result and progress come back as JSON text.
The child imports the modules of the app's registered functions (spawn has
already re-run a ``__main__`` script as ``__mp_main__``), then finds each
function by the module and qualified name the parent read off the registered
function object, never from a string in the database.  So job functions must
be defined at module level in an importable module (or the main script,
outside ``if __name__ == "__main__":``).

Costs: starting a child takes ~0.1-0.3 s (a new interpreter plus imports),
paid once per child, not per job; each job then costs two small pipe
messages plus JSON encoding of its arguments and result.
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import collections
import functools
import json
import logging
import multiprocessing
import multiprocessing.util  # imported before our atexit hook so that hook runs first
import os
import signal
import sys
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .. import errors, payload
from ..errors import ConfigurationError, ProcessDiedError, RemoteJobError, UnknownJobError
from ..job import Job, Progress
from ..registry import JobFunction
from ._child import STOP_SIGNAL, child_main, encode_message
from .base import CancelReason, Executor, ExecutorHost, TracebackText

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from ..queue import Queue

logger = logging.getLogger(__name__)

_SPAWN = multiprocessing.get_context("spawn")
#: How long idle children get to leave after ``stop`` before they are killed.
EXIT_WAIT_S = 5.0
#: Longest pause between attempts to start a child that keeps dying at start-up.
MAX_RESTART_DELAY_S = 5.0


class _Child:
    """One child process: its pipe, and the job it runs (at most one)."""

    __slots__ = ("conn", "fd", "job", "jobs_run", "proc", "ready", "reason", "retiring", "start_timer", "timer")

    def __init__(self, proc: BaseProcess, conn: Connection) -> None:
        self.proc = proc
        self.conn = conn
        self.fd: int | None = conn.fileno()
        self.ready = False
        self.job: Job | None = None
        #: Why the executor killed it (timeout, cancel...), if it did.
        self.reason: CancelReason | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.start_timer: asyncio.TimerHandle | None = None
        self.jobs_run = 0
        self.retiring = False


class ProcessExecutor(Executor):
    """``Queue("cpu", executor=ProcessExecutor, concurrency=2)``: up to ``concurrency`` child processes.

    Options (``Queue(executor_options={...})``): ``preload`` (modules every
    child imports before its first job, e.g. the module that builds the app
    when jobs are registered elsewhere), ``max_jobs_per_child`` (replace a
    child after that many jobs, against leaks) and ``start_timeout_s`` (a
    child not ready by then is killed and counted as a failed start).
    """

    def __init__(
        self,
        host: ExecutorHost,
        queue: Queue,
        *,
        preload: Sequence[str] = (),
        max_jobs_per_child: int | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(host, queue)
        if isinstance(preload, str) or not all(isinstance(m, str) and m for m in preload):
            raise ConfigurationError(f"queue {queue.name!r}: preload must be a list of module names, got {preload!r}")
        if max_jobs_per_child is not None and (
            isinstance(max_jobs_per_child, bool) or not isinstance(max_jobs_per_child, int) or max_jobs_per_child < 1
        ):
            raise ConfigurationError(f"queue {queue.name!r}: max_jobs_per_child must be an int >= 1 or None")
        if isinstance(start_timeout_s, bool) or not isinstance(start_timeout_s, int | float) or not start_timeout_s > 0:
            raise ConfigurationError(f"queue {queue.name!r}: start_timeout_s must be a positive number")
        self.preload = tuple(preload)
        self.max_jobs_per_child = max_jobs_per_child
        self.start_timeout_s = float(start_timeout_s)
        self.children: list[_Child] = []
        self._pending: collections.deque[tuple[Job, bytes]] = collections.deque()
        self._by_job: dict[int, _Child] = {}
        self._targets: dict[str, tuple[str, str]] = {}
        self._start_failures = 0
        self._restart: asyncio.TimerHandle | None = None
        self._stopping = False
        self._gone: asyncio.Future[None] | None = None
        #: Children started so far (a counter for names and tests).
        self.started_children = 0

    @classmethod
    def get_default_concurrency(cls) -> int:
        return os.cpu_count() or 1

    # -- pushing jobs ---------------------------------------------------------

    def push(self, job: Job) -> None:
        job = self.on_job_starting(job)
        try:
            func, args, kwargs = self.get_function_and_kwargs(job)
            message = encode_message(["run", job_spec(job, self._target(job.name, func), args, kwargs)])
        except Exception as exc:  # noqa: BLE001 - unknown job, bad target: this attempt fails
            self._complete(job, exc, None)
            return
        self._pending.append((job, message))
        self._dispatch()

    def _target(self, name: str, func: Callable[..., Any]) -> tuple[str, str]:
        found = self._targets.get(name)
        if found is None:
            found = self._targets[name] = locate_function(name, func)
        return found

    def _dispatch(self) -> None:
        """Hand pending jobs to idle children; start children for the rest (up to ``concurrency``)."""
        if self._stopping:
            return
        while self._pending:
            child = next((c for c in self.children if c.ready and c.job is None and not c.retiring), None)
            if child is None:
                break
            job, message = self._pending.popleft()
            self._send(child, job, message)
        starting = sum(1 for c in self.children if not c.ready and not c.retiring)
        missing = len(self._pending) - starting
        while missing > 0 and self._restart is None and len(self.children) < self.concurrency:
            if not self._spawn():
                break
            missing -= 1

    def _send(self, child: _Child, job: Job, message: bytes) -> None:
        try:
            child.conn.send_bytes(message)
        except OSError:
            # The child is dying; its exit is noticed through its sentinel. Give the job to another.
            child.retiring = True
            self._pending.appendleft((job, message))
            return
        child.job = job
        self._by_job[job.id] = child
        if job.timeout_s is not None:
            child.timer = self.host.loop.call_later(
                job.timeout_s, functools.partial(self.cancel, job.id, reason="timeout")
            )

    def _spawn(self) -> bool:
        loop = self.host.loop
        modules = sorted(
            self.host.job_modules()
            - {"__main__"}
            | set(self.preload)
        )
        parent_conn, child_conn = _SPAWN.Pipe(duplex=True)
        self.started_children += 1
        proc = _SPAWN.Process(
            target=child_main,
            args=(child_conn, modules, os.getpid(), self.host.max_payload_bytes),
            name=f"minijobs-{self.queue.name}-{self.started_children}",
            daemon=False,  # a job may start processes of its own
        )
        try:
            proc.start()
        except OSError as exc:
            parent_conn.close()
            logger.error("queue %s: could not start a worker process: %s", self.queue.name, exc)
            self._start_failed(f"could not start a worker process: {exc}")
            return False
        finally:
            child_conn.close()
        _LIVE.add(proc)
        child = _Child(proc, parent_conn)
        self.children.append(child)
        loop.add_reader(child.fd, self._on_readable, child)  # type: ignore[arg-type]
        loop.add_reader(proc.sentinel, self._on_exit, child)
        child.start_timer = loop.call_later(self.start_timeout_s, self._start_timed_out, child)
        logger.debug("queue %s: started worker process %s", self.queue.name, proc.pid)
        return True

    # -- messages and exits (loop thread) ----------------------------------------

    def _on_readable(self, child: _Child) -> None:
        conn = child.conn
        try:
            while child.fd is not None and conn.poll():
                data = conn.recv_bytes()
                try:
                    self._on_message(child, data)
                except Exception as exc:  # noqa: BLE001 - one bad message must not stop the reading of the others
                    self._bad_message(child, data, exc)
        except (EOFError, OSError):
            self._stop_reading(child)  # the child is gone or going; its sentinel says when

    def _bad_message(self, child: _Child, data: bytes, exc: Exception) -> None:
        """A message that could not be handled: the child's word can no longer be trusted, so it is killed.

        The job it runs, if still unsettled, fails with the error met here (retried if attempts
        remain); a new child takes the dead one's place for the other jobs.
        """
        job = child.job
        logger.error("queue %s: worker process %s sent a message that could not be handled (%d bytes: %r); "
                     "killing it", self.queue.name, child.proc.pid, len(data), data[:200], exc_info=exc,
                     extra={"job_id": job.id} if job is not None else {})
        child.retiring = True  # its exit is expected: no warning, no start-failure count
        if job is not None and child.reason is None:
            child.job = None
            self._by_job.pop(job.id, None)
            if child.timer is not None:
                child.timer.cancel()
                child.timer = None
            self._complete(job, exc, None)
        _kill(child)

    def _stop_reading(self, child: _Child) -> None:
        if child.fd is not None:
            self.host.loop.remove_reader(child.fd)
            child.fd = None

    def _on_message(self, child: _Child, data: bytes) -> None:
        message = json.loads(data)
        kind = message[0]
        if kind == "ready":
            child.ready = True
            if child.start_timer is not None:
                child.start_timer.cancel()
                child.start_timer = None
            self._start_failures = 0
            self._dispatch()
            return
        job = child.job
        if job is None or job.id != message[1] or child.reason is not None:
            return  # a late word from a job already stopped: its exit reports it
        if kind == "progress":
            self.host.report_progress(job.id, Progress(done=message[2], total=message[3], message=message[4]))
            return
        child.job = None
        self._by_job.pop(job.id, None)
        if child.timer is not None:
            child.timer.cancel()
            child.timer = None
        child.jobs_run += 1
        if kind == "done":
            try:
                result = None if message[2] is None else payload.decode(message[2])
            except ValueError as exc:
                self._complete(job, exc, None)
            else:
                self._complete(job, None, result)
        else:
            self._complete(job, rebuild_exception(message[2]), None)
        if self.max_jobs_per_child is not None and child.jobs_run >= self.max_jobs_per_child:
            self._retire(child)
        self._dispatch()

    def _on_exit(self, child: _Child) -> None:
        loop = self.host.loop
        loop.remove_reader(child.proc.sentinel)
        if child.fd is not None:
            self._on_readable(child)  # words it sent before it died count
            self._stop_reading(child)
        child.proc.join()
        code = child.proc.exitcode
        pid = child.proc.pid
        child.conn.close()
        child.proc.close()
        _LIVE.discard(child.proc)
        self.children.remove(child)
        for timer in (child.timer, child.start_timer):
            if timer is not None:
                timer.cancel()
        job = child.job
        if job is not None:
            child.job = None
            self._by_job.pop(job.id, None)
            if child.reason is not None:
                exc: BaseException = self.exception_for(child.reason, job)
            else:
                exc = ProcessDiedError(
                    f"worker process {pid} died while running job {job.id} ({job.name}): {_describe_exit(code)}"
                )
                logger.warning("queue %s: %s", self.queue.name, exc, extra={"job_id": job.id})
            self._complete(job, exc, None)
        elif not child.ready and not child.retiring and not self._stopping:
            self._start_failed(f"worker process {pid} {_describe_exit(code)} before it was ready "
                               "(see its stderr: an import error in the main script or a preloaded module?)")
        elif not child.retiring and not self._stopping:
            logger.warning("queue %s: idle worker process %s %s", self.queue.name, pid, _describe_exit(code))
        if self._gone is not None and not self.children and not self._gone.done():
            self._gone.set_result(None)
        self._dispatch()

    def _start_failed(self, why: str) -> None:
        """A child could not start: fail one waiting job (so a broken set-up cannot spin), retry later."""
        self._start_failures += 1
        if self._pending:
            job, _ = self._pending.popleft()
            self._complete(job, ProcessDiedError(f"job {job.id} ({job.name}) not started: {why}"), None)
        else:
            logger.error("queue %s: %s", self.queue.name, why)
        if self._restart is None and not self._stopping:
            delay = min(MAX_RESTART_DELAY_S, 0.1 * 2 ** (self._start_failures - 1))
            self._restart = self.host.loop.call_later(delay, self._restart_now)

    def _restart_now(self) -> None:
        self._restart = None
        self._dispatch()

    def _start_timed_out(self, child: _Child) -> None:
        child.start_timer = None
        if not child.ready:
            logger.error("queue %s: worker process %s not ready after %.1f s; killing it",
                         self.queue.name, child.proc.pid, self.start_timeout_s)
            _kill(child)

    def _retire(self, child: _Child) -> None:
        """Ask an idle child to leave (it exits when it reads ``stop``); kill one still starting."""
        if child.retiring:
            return
        child.retiring = True
        if not child.ready:
            _kill(child)
            return
        try:
            child.conn.send_bytes(encode_message(["stop"]))
        except OSError:
            pass

    def _complete(self, job: Job, exc: BaseException | None, result: Any) -> None:
        self.on_job_completed(job, exc=exc, result=result)
        if not self.running:
            self.notify_idle()

    # -- stopping ------------------------------------------------------------------

    def cancel(self, job_id: int, *, reason: CancelReason = "cancel") -> None:
        """Hard stop: a job still waiting for a child is dropped, a running one's child is killed."""
        for index, (job, _) in enumerate(self._pending):
            if job.id == job_id:
                del self._pending[index]
                self._complete(job, self.exception_for(reason, job), None)
                return
        child = self._by_job.get(job_id)
        if child is None or child.reason is not None:
            return
        child.reason = reason
        if child.timer is not None:
            child.timer.cancel()
            child.timer = None
        _kill(child)

    def flag_stopping(self) -> list[int]:
        """Tell each child running a job that the worker is stopping (its ``current_job().cancelled``).

        By :data:`~minijobs.executors._child.STOP_SIGNAL` (``SIGUSR1``); where the
        platform has no such signal the children are not told, and only the
        grace period and the kill after it end their jobs.
        """
        flagged = super().flag_stopping()
        if STOP_SIGNAL is None:
            return flagged
        for job_id, child in self._by_job.items():
            if child.reason is not None or child.proc.pid is None:
                continue
            try:
                os.kill(child.proc.pid, STOP_SIGNAL)
            except ProcessLookupError:
                continue  # it just died: its end is reported through its pipe
            flagged.append(job_id)
        return flagged

    async def stop(self, *, grace_s: float) -> None:
        loop = asyncio.get_running_loop()
        if self.running:
            await self.wait_idle(grace_s)
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        while self._pending:
            job, _ = self._pending.popleft()
            self._complete(job, self.exception_for("shutdown", job), None)
        for job_id in list(self._by_job):
            self.cancel(job_id, reason="shutdown")
        for child in list(self.children):
            if child.job is None:
                self._retire(child)
        if self.children:
            self._gone = loop.create_future()
            try:
                for last_try in (False, True):
                    done, _ = await asyncio.wait({self._gone}, timeout=EXIT_WAIT_S)
                    if done or last_try:
                        break
                    for child in self.children:
                        logger.warning("queue %s: worker process %s did not leave; killing it",
                                       self.queue.name, child.proc.pid)
                        _kill(child)
            finally:
                if not self._gone.done():
                    self._gone.cancel()
                self._gone = None
        if self.children:
            logger.error("queue %s: %d worker processes could not be stopped", self.queue.name, len(self.children))


def job_spec(job: Job, target: tuple[str, str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a child needs to run ``job``, as plain JSON data."""
    return {
        "id": job.id, "name": job.name, "module": target[0], "qualname": target[1],
        "args": list(args), "kwargs": kwargs, "queue": job.queue, "priority": job.priority,
        "attempts": job.attempts, "max_attempts": job.max_attempts, "timeout_s": job.timeout_s,
        "scheduled_at": job.scheduled_at.timestamp(), "created_at": job.created_at.timestamp(),
        "started_at": None if job.started_at is None else job.started_at.timestamp(),
        "meta": job.meta, "unique_key": job.unique_key, "rescues": job.rescues,
    }


def locate_function(name: str, func: Callable[..., Any]) -> tuple[str, str]:
    """Module and qualified name by which another interpreter finds ``func``; checked here, in the parent."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        raise UnknownJobError(
            f"job {name!r} cannot run in another process: {func!r} is not a module-level function "
            "that a child process can import (no lambdas, nested functions or callable objects)"
        )
    main = sys.modules.get("__main__")
    if module == "__main__" and getattr(main, "__file__", None) is None and getattr(main, "__spec__", None) is None:
        raise UnknownJobError(
            f"job {name!r} is defined in an interactive session; another process can only run "
            "functions from a script or an importable module"
        )
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not (obj is func or (isinstance(obj, JobFunction) and obj.func is func)):
        raise UnknownJobError(
            f"job {name!r}: {module}.{qualname} does not name the registered function (shadowed, or "
            "wrapped by another decorator on top of @app.job?), so a child process could not find it"
        )
    return module, qualname


def _kill(child: _Child) -> None:
    try:
        child.proc.kill()
    except (OSError, ValueError):  # already gone (or closed)
        pass


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


#: Children alive in this process, killed at interpreter exit if a worker never stopped them
#: (multiprocessing would otherwise wait forever for non-daemon children blocked on their pipe).
_LIVE: weakref.WeakSet[BaseProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftover_children() -> None:
    for proc in list(_LIVE):
        try:
            if proc.is_alive():
                proc.kill()
        except (OSError, ValueError):
            pass


# -- exceptions from children ----------------------------------------------------------

_REMOTE_CLASSES: dict[tuple[str, str], type[RemoteJobError]] = {}


def _remote_class(module: str, qualname: str) -> type[RemoteJobError]:
    key = (module, qualname)
    cls = _REMOTE_CLASSES.get(key)
    if cls is None:
        cls = type(qualname.rpartition(".")[2], (RemoteJobError,), {
            "__module__": module, "__qualname__": qualname, "remote_type": f"{module}.{qualname}",
            "__doc__": f"{module}.{qualname} raised in a worker process.",
        })
        _REMOTE_CLASSES[key] = cls
    return cls


def rebuild_exception(info: dict[str, Any]) -> BaseException:
    """Turn a child's exception description back into an exception the worker can classify.

    minijobs' own errors (``Retry`` with its delay, ``Cancelled``, payload errors...) and builtin
    exceptions come back as themselves; anything else as a :class:`~minijobs.RemoteJobError`
    subclass named after the original type.
    """
    module, qualname, message = str(info.get("module")), str(info.get("qualname")), str(info.get("message", ""))
    exc: BaseException | None = None
    args = info.get("args")
    if module == "minijobs.errors":
        cls = getattr(errors, qualname, None)
        trigger = info.get("trigger")
        if cls is errors.Retry:
            exc = errors.Retry(info.get("delay_s"), message)
        elif cls is errors.PluginTrigger and isinstance(trigger, dict):
            data = trigger.get("data")
            exc = errors.PluginTrigger(str(trigger.get("reason") or message), **(data if isinstance(data, dict) else {}))
        elif isinstance(cls, type) and issubclass(cls, Exception) and cls is not errors.JobFailedError:
            exc = _construct(cls, message, None)
    elif module == "builtins":
        cls = getattr(builtins, qualname, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            exc = _construct(cls, message, args)
    if exc is None:
        exc = _remote_class(module, qualname)(message)
    exc.__cause__ = TracebackText(str(info.get("traceback", "")))
    return exc


def _construct(cls: type[Exception], message: str, args: Any) -> Exception | None:
    try:
        return cls(*args) if isinstance(args, list) else cls(message)
    except Exception:  # noqa: BLE001 - any constructor quirk: fall back to RemoteJobError
        return None
