"""The app and job bodies every reliability process shares.

A job's behaviour is data (its ``plan`` argument), so one registered function
can hang on its first attempt, kill its own process on every attempt, fail
once or wait for a gate file: the scenario decides at enqueue time.  Plan keys:
``hang``/``die``/``stop``/``fail`` (``true`` or a list of attempt numbers),
``sleep_s`` (with ``sleep_on``: attempts), ``gate`` (a path to wait for) and
``end_before_gate`` (record ``end`` before waiting, for disk-full scenarios) and
``stubborn_s`` (a sync body sleeps without looking at cancellation),
``in_pid`` (the plan applies only in that process or its pool children; elsewhere the
job just returns).  Every
execution writes ``start`` and ``end`` to the process's ledger and returns
``{"pid", "attempt"}`` so the checker can tell which execution's result the
database accepted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minijobs import App, Plugin, Queue, current_job

from .ledger import process_ledger

TASK = "rel.task"
ATASK = "rel.atask"


def _applies(rule: Any, attempt: int) -> bool:
    return rule is True or (isinstance(rule, list) and attempt in rule)


def _sleep_s(plan: dict[str, Any], attempt: int) -> float:
    if "sleep_on" in plan and attempt not in plan["sleep_on"]:
        return 0.0
    return float(plan.get("sleep_s", 0.0))


def _before(plan: dict[str, Any], job_id: int, attempt: int) -> None:
    if _applies(plan.get("stop"), attempt):
        # Freeze the whole process right here (resumed by the test's SIGCONT): unlike an
        # external SIGSTOP, the body then finishes before any other code of the worker runs.
        process_ledger().fault(os.getpid(), "SIGSTOP")
        os.kill(os.getpid(), signal.SIGSTOP)
    if _applies(plan.get("fail"), attempt):
        raise RuntimeError(f"planned failure of job {job_id} attempt {attempt}")


def _die(plan: dict[str, Any], attempt: int) -> None:
    if _applies(plan.get("die"), attempt):
        # Record the fault first: the checker needs it to explain the next execution.
        process_ledger().fault(os.getpid(), "crash")
        os.kill(os.getpid(), signal.SIGKILL)


def task(plan: dict[str, Any]) -> dict[str, Any]:
    """Synchronous body (runs in a thread or a process-pool child)."""
    ctx = current_job()
    job_id, attempt = ctx.id, ctx.attempt
    if plan.get("in_pid") not in (None, os.getpid(), os.getppid()):
        plan = {}
    ledger = process_ledger()
    token = ledger.start(job_id, attempt)
    outcome = "error"
    try:
        _before(plan, job_id, attempt)
        if plan.get("stubborn_s"):
            time.sleep(plan["stubborn_s"])  # ignores cancellation, as careless thread code does
        if _applies(plan.get("hang"), attempt):
            while not ctx.cancelled:
                time.sleep(0.02)
            outcome = "cancelled"
            ctx.check_cancelled()
        if _sleep_s(plan, attempt):
            deadline = time.monotonic() + _sleep_s(plan, attempt)
            while time.monotonic() < deadline:
                if ctx.cancelled:
                    outcome = "cancelled"
                    ctx.check_cancelled()
                time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        _die(plan, attempt)
        gate = plan.get("gate")
        if gate and plan.get("end_before_gate"):
            ledger.end(job_id, attempt, token, "ok")
            token = ""
        if gate:
            while not Path(gate).exists():
                time.sleep(0.01)
        outcome = "ok"
        return {"pid": os.getpid(), "attempt": attempt}
    finally:
        if token:
            ledger.end(job_id, attempt, token, outcome)


async def atask(plan: dict[str, Any]) -> dict[str, Any]:
    """Asynchronous body (runs as a task of the worker's loop; cancellation is hard)."""
    ctx = current_job()
    job_id, attempt = ctx.id, ctx.attempt
    if plan.get("in_pid") not in (None, os.getpid(), os.getppid()):
        plan = {}
    ledger = process_ledger()
    token = ledger.start(job_id, attempt)
    outcome = "error"
    try:
        _before(plan, job_id, attempt)
        if _applies(plan.get("hang"), attempt):
            await asyncio.sleep(3600)
        if _sleep_s(plan, attempt):
            await asyncio.sleep(_sleep_s(plan, attempt))
        _die(plan, attempt)
        gate = plan.get("gate")
        if gate and plan.get("end_before_gate"):
            ledger.end(job_id, attempt, token, "ok")
            token = ""
        if gate:
            while not Path(gate).exists():
                await asyncio.sleep(0.01)
        outcome = "ok"
        return {"pid": os.getpid(), "attempt": attempt}
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        if token:
            ledger.end(job_id, attempt, token, outcome)


def build_app(
    db: str | os.PathLike[str],
    *,
    queues: Sequence[Queue] = (),
    plugins: Sequence[Plugin] = (),
    **options: Any,
) -> App:
    """The app of every reliability process: ``rel.task`` and ``rel.atask`` on the given queues."""
    app = App(db, queues=list(queues) or [Queue("default")], plugins=list(plugins), **options)
    app.job(name=TASK)(task)
    app.job(name=ATASK)(atask)
    return app
