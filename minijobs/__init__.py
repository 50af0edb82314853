"""minijobs: durable background jobs on SQLite, in-process, standard library only.

The worker and the executors (asyncio, threads, processes) load on first use,
as ``concurrent.futures`` loads its pools: a process that only enqueues, or a
CLI call, pays for none of them (``import minijobs`` measured in benchmarks/).
"""

import sys
from typing import TYPE_CHECKING, Any

from .app import App
from .backoff import Backoff
from .clock import Clock, SystemClock
from .context import JobContext, current_job
from .errors import (
    Cancelled,
    ConfigurationError,
    CorruptDatabaseError,
    CronError,
    DatabaseBusyError,
    DatabaseFileError,
    InvalidNameError,
    InvalidStateError,
    JobArgumentsError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    MinijobsError,
    PayloadTypeError,
    PayloadValueError,
    PluginTrigger,
    ProcessDiedError,
    RemoteJobError,
    Retry,
    SchemaVersionError,
    StorageFullError,
    StoreError,
    UnknownJobError,
    UnknownQueueError,
    WaitTimeoutError,
)
from .events import Event, EventHub
from .job import AttemptError, Job, JobState, Progress
from .plugin import Plugin, PluginScope
from .queue import Queue
from .registry import BoundJob, EnqueueRequest, JobFunction, JobRef

__version__ = "0.1.0"

__all__: tuple[str, ...] = (
    "App",
    "AsyncExecutor",
    "AttemptError",
    "Backoff",
    "BoundJob",
    "Cancelled",
    "Clock",
    "ConcurrentExecutor",
    "ConfigurationError",
    "CorruptDatabaseError",
    "CronError",
    "DatabaseBusyError",
    "DatabaseFileError",
    "EnqueueRequest",
    "Event",
    "EventHub",
    "Executor",
    "InvalidNameError",
    "InvalidStateError",
    "Job",
    "JobArgumentsError",
    "JobContext",
    "JobFailedError",
    "JobFunction",
    "JobNotFoundError",
    "JobRef",
    "JobState",
    "JobTimeoutError",
    "MinijobsError",
    "PayloadTypeError",
    "PayloadValueError",
    "Plugin",
    "PluginScope",
    "PluginTrigger",
    "ProcessDiedError",
    "ProcessExecutor",
    "Progress",
    "Queue",
    "RemoteJobError",
    "Retry",
    "SchemaVersionError",
    "StorageFullError",
    "StoreError",
    "SystemClock",
    "ThreadExecutor",
    "UnknownJobError",
    "UnknownQueueError",
    "WaitTimeoutError",
    "Worker",
    "__version__",
    "current_job",
)

if TYPE_CHECKING:
    from .executors import AsyncExecutor, ConcurrentExecutor, Executor, ProcessExecutor, ThreadExecutor
    from .worker import Worker

#: Public names loaded on first access, and the module that defines each.
_LAZY = {
    "AsyncExecutor": ".executors",
    "ConcurrentExecutor": ".executors",
    "Executor": ".executors",
    "ProcessExecutor": ".executors",
    "ThreadExecutor": ".executors",
    "InterpreterExecutor": ".executors",  # Python 3.14+ only
    "Worker": ".worker",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name, __name__), name, None)
    if value is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r} (InterpreterExecutor needs Python 3.14+)")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if sys.version_info >= (3, 14):
    __all__ = (*__all__, "InterpreterExecutor")
