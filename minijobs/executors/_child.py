"""The code that runs inside a :class:`~minijobs.ProcessExecutor` child process.

The child speaks JSON text over one duplex pipe, one message per job step
(never pickle): it announces ``["ready"]`` once its modules are imported, then
for each ``["run", {...job...}]`` it answers any number of
``["progress", id, done, total, message]`` followed by exactly one
``["done", id, result_json_or_null]`` or ``["error", id, {...exception...}]``.
``["stop"]`` or the pipe closing ends the child.

A job's function is found from the module and qualified name the parent read
off the function object in *its* registry, never from the database.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

from .. import payload
from ..context import JobContext, reset_current, set_current
from ..errors import PluginTrigger, public_module
from ..job import Job, JobState, Progress
from ..payload import utf8_safe
from ..registry import JobFunction
from .base import await_capturing

#: How often the child checks that its parent is still alive.
PARENT_CHECK_S = 0.5


def encode_message(message: Any) -> bytes:
    return json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def child_main(conn: Connection, modules: list[str], parent_pid: int, max_result_bytes: int) -> None:
    """Entry point of a child (the ``target`` of its spawn-context ``Process``)."""
    # Ctrl-C reaches the whole process group: the parent decides when jobs stop, not the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if STOP_SIGNAL is not None:
        # Installed before "ready": until then no job is sent, so the parent never signals earlier.
        signal.signal(STOP_SIGNAL, _on_stop_signal)
    _exit_with_parent(parent_pid)
    import_errors: dict[str, BaseException] = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - reported when a job of that module runs
            import_errors[name] = exc
    lock = threading.Lock()

    def send(message: list[Any]) -> None:
        data = encode_message(message)
        with lock:
            conn.send_bytes(data)

    send(["ready"])
    functions: dict[str, Callable[..., Any]] = {}
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        message = json.loads(data)
        if message[0] != "run":
            return
        spec = message[1]
        closing = execute(spec, send, functions, import_errors, max_result_bytes)
        try:
            send(closing)
        except OSError:
            return  # the parent is gone
        except Exception as exc:  # noqa: BLE001 - execute's answer is always sendable; if not, say why, stay up
            send(["error", spec["id"], describe_exception(exc)])


#: What the parent sends a child whose job should see its worker's graceful stop (``current_job().cancelled``).
STOP_SIGNAL: signal.Signals | None = getattr(signal, "SIGUSR1", None)

#: The context of the job this child runs now (a child runs one job at a time, in its main thread).
_running: JobContext | None = None


def _on_stop_signal(signum: int, frame: object) -> None:
    """The worker began a graceful stop: the running job sees ``cancelled`` (between jobs: nothing to do)."""
    ctx = _running
    if ctx is not None:
        ctx._request_cancel()


def _exit_with_parent(parent_pid: int) -> None:
    """Leave at once if the parent dies (SIGKILL gives it no chance to stop us); its jobs' leases expire."""

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_S)
            if os.getppid() != parent_pid:
                os._exit(70)

    threading.Thread(target=watch, name="minijobs-parent-watch", daemon=True).start()


def execute(
    spec: dict[str, Any],
    send: Callable[[list[Any]], None] | None,
    functions: dict[str, Callable[..., Any]],
    import_errors: dict[str, BaseException],
    max_result_bytes: int,
) -> list[Any]:
    """Run one job described by ``spec``; progress goes through ``send``; returns the closing message."""
    job_id = spec["id"]

    def on_progress(_: int, progress: Progress, _text: str) -> None:
        # Checked by the context already (finite numbers, UTF-8 message): it encodes for the pipe.
        if send is not None:
            send(["progress", job_id, progress.done, progress.total, progress.message])

    try:
        func = _resolve(spec["name"], spec["module"], spec["qualname"], functions, import_errors)
        args, kwargs = tuple(spec["args"]), spec["kwargs"]
        job = Job(
            id=job_id,
            name=spec["name"],
            queue=spec["queue"],
            args=args,
            kwargs=kwargs,
            state=JobState.RUNNING,
            priority=spec["priority"],
            attempts=spec["attempts"],
            max_attempts=spec["max_attempts"],
            timeout_s=spec["timeout_s"],
            scheduled_at=_dt(spec["scheduled_at"]),  # type: ignore[arg-type]
            created_at=_dt(spec["created_at"]),  # type: ignore[arg-type]
            started_at=_dt(spec["started_at"]),
            meta=spec["meta"],
            unique_key=spec["unique_key"],
            rescues=spec["rescues"],
        )
        global _running
        ctx = JobContext(job, on_progress=on_progress)
        token = set_current(ctx)
        _running = ctx
        try:
            result = func(*args, **kwargs)
            if inspect.isawaitable(result):
                # Captured inside the task and raised here, so a SystemExit never escapes the event loop.
                error, result = asyncio.run(_await(result))
                if error is not None:
                    raise error
        finally:
            _running = None
            reset_current(token)
        text = None if result is None else payload.encode(
            result, what=f"result of job {job_id} ({spec['name']})", max_bytes=max_result_bytes
        )
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a job is that job's failure, not the child's end
        return ["error", job_id, describe_exception(exc)]
    return ["done", job_id, text]


#: Per-interpreter state of :func:`run_in_interpreter` (each subinterpreter has its own module copy).
_functions: dict[str, Callable[..., Any]] = {}


def run_in_interpreter(spec_json: str, max_result_bytes: int) -> str:
    """Entry point of an ``InterpreterExecutor`` call: JSON text in, the closing message as JSON text out."""
    spec = json.loads(spec_json)
    module = spec["module"]
    errors: dict[str, BaseException] = {}
    if module != "__main__":
        try:
            importlib.import_module(module)
        except BaseException as exc:  # noqa: BLE001 - reported as the job's failure
            errors[module] = exc
    return encode_message(execute(spec, None, _functions, errors, max_result_bytes)).decode()


async def _await(awaitable: Awaitable[Any]) -> tuple[BaseException | None, Any]:
    return await await_capturing(awaitable)


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _resolve(
    name: str,
    module: str,
    qualname: str,
    functions: dict[str, Callable[..., Any]],
    import_errors: dict[str, BaseException],
) -> Callable[..., Any]:
    found = functions.get(name)
    if found is not None:
        return found
    from ..errors import UnknownJobError

    failed = import_errors.get(module)
    if failed is not None:
        raise UnknownJobError(
            f"job {name!r}: module {module!r} failed to import in the worker process: "
            f"{type(failed).__name__}: {failed}"
        ) from failed
    try:
        # Spawn re-ran the parent's main script as __mp_main__ and aliased it as __main__.
        obj: Any = sys.modules["__main__"] if module == "__main__" else importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        hint = " (define it at module level, outside `if __name__ == \"__main__\":`)" if module == "__main__" else ""
        raise UnknownJobError(
            f"job {name!r}: {module}.{qualname} cannot be found in the worker process{hint}: {exc}"
        ) from exc
    if isinstance(obj, JobFunction):
        obj = obj.func
    if not callable(obj):
        raise UnknownJobError(f"job {name!r}: {module}.{qualname} is not callable in the worker process")
    functions[name] = obj
    return obj  # type: ignore[no-any-return]


def describe_exception(exc: BaseException) -> dict[str, Any]:
    """Plain data the parent turns back into an exception (see ``process.rebuild_exception``)."""
    kind = type(exc)
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error
        message = f"<unprintable {kind.__name__}>"
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:  # noqa: BLE001 - same
        text = f"{kind.__qualname__}: {message}\n"
    # spawn renames the script; a vendored minijobs sends its errors under their public module name.
    module = "__main__" if kind.__module__ == "__mp_main__" else public_module(kind.__module__)
    # Text a job put in its exception may hold lone surrogates, which the UTF-8 pipe cannot carry: escaped.
    info: dict[str, Any] = {"module": module, "qualname": kind.__qualname__, "message": utf8_safe(message),
                            "traceback": utf8_safe(text)}
    try:
        encode_message(list(exc.args))
        info["args"] = list(exc.args)
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        pass
    if isinstance(exc, PluginTrigger):
        try:
            encode_message(exc.data)
            info["trigger"] = {"reason": exc.reason, "data": exc.data}
        except (TypeError, ValueError, RecursionError):
            info["trigger"] = {"reason": exc.reason, "data": {}}  # the reason still reaches the plugins
    delay = getattr(exc, "delay_s", None)
    if isinstance(delay, int | float) and not isinstance(delay, bool):
        info["delay_s"] = delay
    return info
