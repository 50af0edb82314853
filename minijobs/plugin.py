"""The :class:`Plugin` ABC: periodic and cross-cutting work that runs beside a worker.

A plugin's :meth:`run` is a long-lived coroutine, restarted with backoff if it
raises, cancelled when the worker stops.  ``while await self.sleep(interval):``
is the idiomatic loop: :meth:`sleep` returns True when the time elapsed or
:meth:`wake_up` was called, and False once the worker is stopping.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from abc import ABC
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .job import Job

if TYPE_CHECKING:
    from .app import App
    from .worker import Worker


class PluginScope(enum.StrEnum):
    WORKER = "worker"  #: runs in every worker
    LEADER = "leader"  #: runs only in the worker that holds leadership among all processes


class Plugin(ABC):
    """Base class of plugins.  Subclasses override what they need; every hook has a no-op default."""

    #: Schema migrations of tables the plugin owns, oldest first (see :meth:`migrate`).
    migrations: Sequence[str] = ()

    def __init__(self) -> None:
        self._wake_lock = threading.Lock()
        self._wake_event: asyncio.Event | None = None
        self._wake_loop: asyncio.AbstractEventLoop | None = None
        self._woken = False
        self._worker: Worker | None = None

    # -- identity ----------------------------------------------------------

    @classmethod
    def get_identifier(cls) -> str:
        """Unique name, e.g. ``"minijobs.pruner"``."""
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def get_dependencies(cls) -> Sequence[str]:
        """Identifiers of plugins that must also be configured."""
        return ()

    @classmethod
    def get_scope(cls) -> PluginScope:
        return PluginScope.WORKER

    def configure(self, options: Mapping[str, Any]) -> None:
        """Apply settings from a plain mapping (e.g. a ``[plugins.<name>]`` TOML table)."""
        if options:
            raise TypeError(f"{self.get_identifier()} takes no configuration, got {sorted(options)}")

    # -- life cycle --------------------------------------------------------

    async def run(self, worker: Worker, app: App) -> None:
        """Long-running body; the default does nothing and returns."""

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if the time passed or :meth:`wake_up` was called, False if stopping."""
        worker = self._worker
        if worker is None or worker.is_stopping:
            return False
        if self._wake_event is None or self._wake_loop is not asyncio.get_running_loop():
            self._wake_loop = asyncio.get_running_loop()
            self._wake_event = asyncio.Event()
        with self._wake_lock:
            if self._woken:
                self._woken = False
                return not worker.is_stopping
            self._wake_event.clear()
        stopping = asyncio.ensure_future(worker.stopping.wait())
        woken = asyncio.ensure_future(self._wake_event.wait())
        try:
            await asyncio.wait({stopping, woken}, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            woken.cancel()
        with self._wake_lock:
            self._woken = False
        return not worker.is_stopping

    def wake_up(self) -> None:
        """Cut the current (or next) :meth:`sleep` short; safe from any thread."""
        with self._wake_lock:
            self._woken = True
            loop, event = self._wake_loop, self._wake_event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def attach(self, worker: Worker | None) -> None:
        """Called by the worker before :meth:`run` (and with None after it stopped)."""
        self._worker = worker

    # -- job hooks (run in the worker's loop thread) -----------------------

    def on_job_starting(self, *, job: Job, worker: Worker) -> Job:
        return job

    def on_job_completed(self, *, job: Job, worker: Worker, exc: BaseException | None, result: Any) -> Job:
        """``job`` carries the proposed outcome (state, result, errors); return it or a changed copy."""
        return job

    def on_job_updated(self, *, job: Job, worker: Worker) -> None:
        """Called after the outcome of ``job`` was written to the database."""

    async def on_drain(self, worker: Worker, app: App) -> None:
        """Called at the start of ``app.drain()`` (e.g. so cron enqueues what is due on a fake clock)."""

    # -- storage -----------------------------------------------------------

    def get_tables(self) -> Sequence[str]:
        return ()

    def cleanup(self, app: App) -> int | None:
        """Remove the plugin's stale rows; return how many (called by the Pruner)."""
        return None

    def migrate(self, app: App, to_version: int | None = None) -> int:
        """Bring this plugin's tables to ``to_version`` (default: latest); returns the version."""
        return app.store.migrate_component(self.get_identifier(), self.migrations, to_version=to_version)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.get_identifier()}>"


def overrides(plugin: Plugin, name: str) -> bool:
    """True if ``plugin`` overrides hook ``name`` (so the worker can skip no-op hooks on hot paths)."""
    return getattr(type(plugin), name) is not getattr(Plugin, name)
