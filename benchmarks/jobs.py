"""The apps and job functions the benchmarks run.

Job functions live at module level (importable by name) so a process
executor's children and the benchmark's own subprocesses can register the same
functions under the same names as the parent.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import minijobs

NOOP = "bench.noop"
NOOP_SYNC = "bench.noop_sync"
STAMP = "bench.stamp"
STAMP_SYNC = "bench.stamp_sync"

#: Called by the stamp jobs with ``time.time() - sent_at`` (set by the latency benchmarks).
on_stamp: Callable[[float], None] | None = None


async def noop(*args: Any) -> None:
    """The cheapest async job: one durable claim+complete cycle and nothing else."""


def noop_sync(*args: Any) -> None:
    """The cheapest plain ``def`` job (for thread and process executors)."""


async def stamp(sent_at: float) -> None:
    """Record how long after ``sent_at`` (the enqueuer's ``time.time()``) this job started."""
    started = time.time()
    if on_stamp is not None:
        on_stamp(started - sent_at)


def stamp_sync(sent_at: float) -> None:
    started = time.time()
    if on_stamp is not None:
        on_stamp(started - sent_at)


def executor_class(kind: str) -> type[minijobs.Executor]:
    """The executor class for ``async``, ``thread`` or ``process``; ImportError if not available yet."""
    if kind == "async":
        return minijobs.AsyncExecutor
    name = {"thread": "ThreadExecutor", "process": "ProcessExecutor"}.get(kind)
    if name is None:
        raise ValueError(f"unknown executor {kind!r} (async, thread or process)")
    cls = getattr(minijobs, name, None)
    if cls is None:
        raise ImportError(f"minijobs.{name} is not available in this checkout")
    return cls  # type: ignore[no-any-return]


def build_app(
    path: str | Path,
    *,
    executor: str = "async",
    concurrency: int | None = None,
    **app_options: Any,
) -> minijobs.App:
    """An app on ``path`` with one queue ``default`` served by ``executor``, with the bench jobs registered."""
    queue = minijobs.Queue("default", concurrency=concurrency, executor=executor_class(executor))
    app = minijobs.App(path, queues=[queue], **app_options)
    app.job(name=NOOP)(noop)
    app.job(name=NOOP_SYNC)(noop_sync)
    app.job(name=STAMP)(stamp)
    app.job(name=STAMP_SYNC)(stamp_sync)
    return app


def load_workload(spec: str) -> Callable[..., Any]:
    """Resolve ``module:function`` (the user's own job function) for ``--workload``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--workload must look like module:function, got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, minijobs.JobFunction):
        obj = obj.func  # already decorated on the user's app: take the plain function
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj  # type: ignore[no-any-return]
