"""Plugin supervision: a worker's plugins run protected, leader-scoped ones only while it leads.

A plugin's :meth:`~minijobs.Plugin.run` that raises is logged and restarted
with backoff; one that returns is done.  A plugin of scope
:attr:`~minijobs.PluginScope.LEADER` runs only while this worker leads that
plugin's election (decided by :mod:`minijobs.plugins.leadership`, which calls
:meth:`PluginSupervisor.set_leader`): it starts when the election is won and is
cancelled when it is lost.

A plugin learns of a stop through one signal, the worker's ``stopping``
event: :meth:`~minijobs.Plugin.sleep` returns False once it is set, and
:attr:`Worker.is_stopping <minijobs.worker.Worker.is_stopping>` reads it.  At a
stop, plugins get ``PLUGIN_STOP_S`` to end by themselves (so Leadership still
hands its leases back) before they are cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .plugin import Plugin, PluginScope

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger(__name__)

#: How long a stopping worker waits for its plugins to end by themselves before cancelling them.
PLUGIN_STOP_S = 2.0
#: A plugin that ran this long before crashing is restarted quickly again (its backoff starts over).
HEALTHY_RUN_S = 60.0
#: Longest pause before a crashed plugin is restarted.
MAX_RESTART_DELAY_S = 60.0


class PluginSupervisor:
    """Runs the plugins of one worker and keeps the leadership state they depend on."""

    def __init__(self, worker: Worker, plugins: Sequence[Plugin]) -> None:
        self._worker = worker
        self._plugins = list(plugins)
        #: Identifiers of the leader-scoped plugins: the elections this worker takes part in.
        self.leader_plugins: tuple[str, ...] = tuple(
            p.get_identifier() for p in self._plugins if p.get_scope() is PluginScope.LEADER
        )
        #: Elections this worker leads.
        self._leading: set[str] = set()
        #: Per election, an event set at its next change (see :meth:`_flip`).
        self._flips: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- leadership ---------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return bool(self._leading)

    def leads(self, plugin: str) -> bool:
        return plugin in self._leading

    def set_leader(self, leader: bool, *, plugin: str | None = None) -> None:
        """Record whether this worker leads ``plugin``'s election (None: all of :attr:`leader_plugins`)."""
        for name in self.leader_plugins if plugin is None else (plugin,):
            if leader == (name in self._leading):
                continue
            if leader:
                self._leading.add(name)
            else:
                self._leading.discard(name)
            flip = self._flips.pop(name, None)
            if flip is not None:
                flip.set()

    def _flip(self, plugin: str) -> asyncio.Event:
        """An event set at the next change of :meth:`leads` for ``plugin``."""
        event = self._flips.get(plugin)
        if event is None:
            event = self._flips[plugin] = asyncio.Event()
        return event

    # -- running ------------------------------------------------------------

    def start(self) -> None:
        """Start every plugin's supervisor task in the running loop."""
        for plugin in self._plugins:
            self._tasks.append(asyncio.create_task(self._supervise(plugin), name=plugin.get_identifier()))

    async def stop(self) -> None:
        """Wait up to ``PLUGIN_STOP_S`` for the plugins to end after the stop signal, then cancel the rest."""
        if not self._tasks:
            return
        tasks, self._tasks = self._tasks, []
        _, pending = await asyncio.wait(tasks, timeout=PLUGIN_STOP_S)
        for task in pending:
            logger.warning("plugin %s did not end within %.1f s of the stop; cancelling it",
                           task.get_name(), PLUGIN_STOP_S)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, plugin: Plugin) -> None:
        worker = self._worker
        name = plugin.get_identifier()
        if plugin.worker is not None and plugin.worker is not worker:
            logger.error("plugin %s already runs in worker %s; not running it in %s too (give each App its own "
                         "plugin instances)", name, plugin.worker.id, worker.id)
            return
        failures = 0
        leader_only = plugin.get_scope() is PluginScope.LEADER
        loop = asyncio.get_running_loop()
        plugin.attach(worker)
        try:
            while not worker.is_stopping:
                if leader_only and not self.leads(name):
                    await self._until_leadership_changes(name)
                    continue
                started = loop.time()
                task = asyncio.create_task(plugin.run(worker, worker.app), name=f"{name}.run")
                flip = asyncio.ensure_future(self._flip(name).wait()) if leader_only else None
                try:
                    await asyncio.wait({task} if flip is None else {task, flip}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    flipped = flip is not None and flip.done() and not flip.cancelled()
                    if flip is not None:
                        flip.cancel()
                    if not task.done():
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)
                if flipped and not worker.is_stopping:
                    # Leadership changed (lost, maybe regained since): the loop restarts it if we lead.
                    logger.info("plugin %s stopped: this worker no longer leads its election", name)
                    continue
                if task.cancelled() or task.exception() is None:
                    return
                if loop.time() - started > HEALTHY_RUN_S:
                    failures = 0
                failures += 1
                delay = min(MAX_RESTART_DELAY_S, 0.5 * 2 ** min(failures, 7))
                logger.error("plugin %s crashed; restarting in %.1f s", name, delay, exc_info=task.exception())
                if not await plugin.sleep(delay):
                    return
        finally:
            plugin.attach(None)

    async def _until_leadership_changes(self, plugin: str) -> None:
        """Wait until this worker gains or loses ``plugin``'s election, or starts stopping."""
        waiters: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(self._flip(plugin).wait()),
            asyncio.ensure_future(self._worker.stopping.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
