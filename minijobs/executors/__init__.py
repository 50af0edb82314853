"""Executors run claimed jobs; each queue picks one."""

from .aio import AsyncExecutor
from .base import Executor

__all__ = ("AsyncExecutor", "Executor")
