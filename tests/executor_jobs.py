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
import os
import sys
import threading
import time
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
