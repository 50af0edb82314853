"""minijobs: durable background jobs on SQLite, in-process, standard library only."""

from .app import App, BoundJob, EnqueueRequest, JobFunction, JobRef
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
from .executors import AsyncExecutor, ConcurrentExecutor, Executor, ProcessExecutor, ThreadExecutor
from .job import AttemptError, Job, JobState, Progress
from .plugin import Plugin, PluginScope
from .queue import Queue
from .worker import Worker

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
    "JobArgumentsError",
    "Job",
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

try:  # Python 3.14+ only (concurrent.futures.InterpreterPoolExecutor)
    from .executors import InterpreterExecutor  # noqa: F401
except ImportError:
    pass
else:
    __all__ = (*__all__, "InterpreterExecutor")
