"""Executors run claimed jobs; each queue picks one (see docs/executors.md)."""

from .aio import AsyncExecutor
from .base import Executor
from .concurrent import ConcurrentExecutor
from .thread import ThreadExecutor

__all__ = ("AsyncExecutor", "ConcurrentExecutor", "Executor", "ThreadExecutor")
