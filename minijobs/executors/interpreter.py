"""``InterpreterExecutor``: jobs in subinterpreters (Python 3.14+ only; absent on older Pythons).

Each call runs on :class:`concurrent.futures.InterpreterPoolExecutor`, so
CPU-bound jobs run in parallel without child processes.  Like the process
executor, the job crosses as JSON text (module and qualified name of the
registered function plus arguments) and its result comes back as JSON text;
the subinterpreter imports the function's module.  Like threads, a running
call cannot be stopped: timeouts and cancels are recorded at once and the
call is abandoned (see :class:`~minijobs.ConcurrentExecutor`); the job
cannot see ``current_job().cancelled`` change, and its progress reports are
not carried back yet.

Importing this module on Python < 3.14 raises ImportError; ``minijobs``
then simply does not export ``InterpreterExecutor``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
from typing import TYPE_CHECKING, Any

from .. import payload
from ._child import encode_message, run_in_interpreter
from .base import ExecutorHost
from .concurrent import Call, ConcurrentExecutor
from .process import job_spec, locate_function, rebuild_exception

if not hasattr(concurrent.futures, "InterpreterPoolExecutor"):
    raise ImportError("InterpreterExecutor needs concurrent.futures.InterpreterPoolExecutor (Python 3.14+)")

if TYPE_CHECKING:
    from ..queue import Queue


class InterpreterExecutor(ConcurrentExecutor):
    """``Queue("cpu", executor=InterpreterExecutor, concurrency=4)``: one subinterpreter per slot."""

    def __init__(self, host: ExecutorHost, queue: Queue) -> None:
        super().__init__(host, queue)
        self._targets: dict[str, tuple[str, str]] = {}

    @classmethod
    def get_default_concurrency(cls) -> int:
        import os

        return os.cpu_count() or 1

    def create_pool(self) -> concurrent.futures.Executor:
        return concurrent.futures.InterpreterPoolExecutor(max_workers=self.concurrency)  # type: ignore[attr-defined,no-any-return]

    def submit(self, call: Call) -> None:
        job = call.job
        func, args, kwargs = self.get_function_and_kwargs(job)
        target = self._targets.get(job.name)
        if target is None:
            target = self._targets[job.name] = locate_function(job.name, func)
        spec = encode_message(job_spec(job, target, args, kwargs)).decode()
        assert self.pool is not None
        future = self.pool.submit(run_in_interpreter, spec, self.host.max_payload_bytes)
        future.add_done_callback(functools.partial(self._interpreter_done, call))

    def _interpreter_done(self, call: Call, future: concurrent.futures.Future[str]) -> None:
        if future.cancelled():
            self.returned(call, self.exception_for("shutdown", call.job), None)
            return
        self.returned_from(call, functools.partial(_read_answer, future))


def _read_answer(future: concurrent.futures.Future[str]) -> tuple[BaseException | None, Any]:
    """(error, result) of a finished call: the pool's own error, or the subinterpreter's closing message."""
    exc = future.exception()
    if exc is not None:
        return exc, None
    message: list[Any] = json.loads(future.result())
    if message[0] == "done":
        return None, None if message[2] is None else payload.decode(message[2])
    return rebuild_exception(message[2]), None
