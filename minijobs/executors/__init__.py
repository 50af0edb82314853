"""Executors run claimed jobs; each queue picks one (see docs/executors.md)."""

from .aio import AsyncExecutor
from .base import Executor
from .concurrent import ConcurrentExecutor
from .process import ProcessExecutor
from .thread import ThreadExecutor

__all__ = ["AsyncExecutor", "ConcurrentExecutor", "Executor", "ProcessExecutor", "ThreadExecutor"]

try:  # Python 3.14+: concurrent.futures.InterpreterPoolExecutor
    from .interpreter import InterpreterExecutor  # noqa: F401
except ImportError:
    pass
else:
    __all__.append("InterpreterExecutor")
