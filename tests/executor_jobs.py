"""Job functions for tests/test_executors.py.

They live at module level in an importable module because a ProcessExecutor
child imports this module and finds each function by module and name.  Tests
register them on their own app (``app.job(name=...)(executor_jobs.add)``).

A job that must stay running reports ``set_progress(os.getpid())`` first, so
a test learns from the ``job.progress`` event that it started, and in which
process, without polling or sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import minijobs

#: Longest any blocking job here waits, so a broken executor fails a test instead of hanging it.
SAFETY_S = 30.0

#: In-process gates for thread-executor tests (set from the test thread).
GATES: dict[str, threading.Event] = {}
#: Set by async jobs when their task was cancelled (thread-executor tests).
CANCELLED_TASKS: dict[str, threading.Event] = {}


class CustomError(Exception):
    """An application error type the parent does not know by itself."""


def add(a: int, b: int) -> int:
    return a + b


async def add_async(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def custom_error(message: str) -> None:
    raise CustomError(message)


def flaky() -> int:
    """Fails its first attempt, succeeds on the next one."""
    attempt = minijobs.current_job().attempt
    if attempt < 2:
        raise RuntimeError("first attempt fails")
    return attempt


def retry_later(delay_s: float) -> None:
    raise minijobs.Retry(delay_s=delay_s)


def progress_steps() -> str:
    ctx = minijobs.current_job()
    ctx.set_progress(1, 3, "one")
    ctx.set_progress(2, 3, "two")
    ctx.set_progress(3, 3, "done")
    return "ok"


def block() -> str:
    """Say "started" (progress = pid), then wait cooperatively until cancelled."""
    ctx = minijobs.current_job()
    ctx.set_progress(os.getpid())
    deadline = time.monotonic() + SAFETY_S
    while not ctx.cancelled and time.monotonic() < deadline:
        time.sleep(0.002)
    return "stopped"


def block_first_attempt() -> int:
    """Attempt 1 blocks like :func:`block`; later attempts return their process id."""
    if minijobs.current_job().attempt == 1:
        block()
        return -1
    return os.getpid()


def check_cancelled_loop(name: str) -> None:
    """Poll ``check_cancelled()``; note in ``CANCELLED_TASKS[name]`` (in-process tests) that it raised."""
    ctx = minijobs.current_job()
    ctx.set_progress(os.getpid())
    deadline = time.monotonic() + SAFETY_S
    while time.monotonic() < deadline:
        try:
            ctx.check_cancelled()
        except minijobs.Cancelled:
            CANCELLED_TASKS[name].set()
            raise
        time.sleep(0.002)


def until_stopped() -> str:
    """Report progress, then poll ``check_cancelled()``: a graceful stop must reach it, even in a child."""
    ctx = minijobs.current_job()
    ctx.set_progress(os.getpid())
    deadline = time.monotonic() + SAFETY_S
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(0.002)
    return "never told"


def trigger_quota(n: int) -> None:
    """Hand the outcome to plugins from a child: ``PluginTrigger`` must cross the pipe with its data."""
    raise minijobs.PluginTrigger("quota", n=n)


def exit_first_attempt(code: int) -> str:
    if minijobs.current_job().attempt == 1:
        os._exit(code)
    return "recovered"


def spin() -> None:
    """CPU-bound and deaf to cancellation: only killing its process stops it."""
    minijobs.current_job().set_progress(os.getpid())
    while True:
        pass


def wait_gate(gate: str) -> str:
    """Ignore cancellation; return only when the test opens ``GATES[gate]``."""
    minijobs.current_job().set_progress(0)
    GATES[gate].wait(SAFETY_S)
    return "late"


async def sleep_async(name: str) -> None:
    try:
        await asyncio.sleep(SAFETY_S)
    except asyncio.CancelledError:
        CANCELLED_TASKS[name].set()
        raise


def bad_result() -> Any:
    return {1, 2}  # a set is not JSON


def exit_job() -> None:
    sys.exit(3)


def pid() -> int:
    return os.getpid()


# -- for tests/test_executor_failures.py ----------------------------------------------------------


class CustomBaseException(BaseException):
    """A job's own BaseException subclass (not an Exception)."""


class Unprintable(Exception):
    """An exception whose ``str()`` raises: nothing may read its message directly."""

    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be printed")


def _base_exception(which: str) -> BaseException:
    made: dict[str, Callable[[], BaseException]] = {
        "SystemExit": SystemExit,
        "SystemExit(3)": lambda: SystemExit(3),
        "KeyboardInterrupt": KeyboardInterrupt,
        "GeneratorExit": GeneratorExit,
        "CustomBaseException": lambda: CustomBaseException("custom"),
        "StopIteration": StopIteration,
        "CancelledError": asyncio.CancelledError,
        "surrogate": lambda: ValueError("bad \udc80 byte"),
        "Unprintable": Unprintable,
    }
    return made[which]()


def raise_base(which: str) -> None:
    raise _base_exception(which)


async def raise_base_async(which: str) -> None:
    await asyncio.sleep(0)
    raise _base_exception(which)


def exit_on_first_attempt() -> int:
    """``sys.exit()`` on attempt 1; later attempts return their number."""
    attempt = minijobs.current_job().attempt
    if attempt == 1:
        sys.exit(2)
    return attempt


async def exit_when_cancelled() -> None:
    """Say "started", then answer the executor's cancellation with SystemExit instead of CancelledError."""
    minijobs.current_job().set_progress(os.getpid())
    try:
        await asyncio.sleep(SAFETY_S)
    except asyncio.CancelledError:
        raise SystemExit(4) from None


BAD_PROGRESS: dict[str, tuple[Any, Any, Any]] = {
    "nan": (float("nan"), None, None),
    "inf total": (1, float("inf"), None),
    "-inf": (float("-inf"), 10, None),
    "bool": (True, None, None),
    "str done": ("1", None, None),
    "huge int": (10**5000, None, None),
    "surrogate message": (1, 2, "half \ud800 a pair"),
    "bytes message": (1, 2, b"bytes"),
    "long message": (1, 2, "x" * 5000),
}


def bad_progress(which: str) -> str:
    """Report one of :data:`BAD_PROGRESS`; the error it raises (if any) is the job's failure."""
    minijobs.current_job().set_progress(*BAD_PROGRESS[which])
    return "reported"


def gated(gate: str, then: str) -> str:
    """Say "started", wait for ``GATES[gate]``, then return ``then`` or, for "raise:WHICH", raise WHICH."""
    minijobs.current_job().set_progress(0)
    GATES[gate].wait(SAFETY_S)
    if then.startswith("progress:"):
        return bad_progress(then.partition(":")[2])
    if then.startswith("raise:"):
        raise_base(then.partition(":")[2])
    return then


def smuggle_nan_progress() -> str:
    """Go around ``set_progress``'s checks and send the parent a progress message with NaN in it.

    Only for a ProcessExecutor child: stands for a child whose word the parent cannot handle.
    """
    from minijobs.executors import _child

    _child.encode_message = lambda message: json.dumps(message).encode()  # allows NaN, unlike the real one
    ctx = minijobs.current_job()
    ctx._on_progress(ctx.id, minijobs.Progress(done=float("nan")), "")  # type: ignore[misc]
    return "sent"
