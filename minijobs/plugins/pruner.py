"""Pruner: deletes old finished jobs, lets plugins clean their tables, keeps the WAL small.

Retention (seconds after a job finished, on the app's clock; ``None`` keeps
forever), most specific first:

1. ``keep_by_queue[queue]`` - every finished job of that queue;
2. ``keep_by_state[state]`` - ``succeeded``, ``failed`` or ``cancelled`` jobs of other queues;
3. ``keep_s`` - everything else (default 7 days).

Deletes run in batches of ``batch_size`` rows, each its own short write
transaction with a pause between them, so other processes get the write lock
in between; a pass stops after ``time_budget_s`` of real time and the next
one comes a second later.  After each pass the pruner calls every plugin's
:meth:`~minijobs.Plugin.cleanup` and runs a passive WAL checkpoint; when
this worker is idle and the WAL file grew past ``wal_truncate_bytes`` it
truncates it (``PRAGMA wal_checkpoint(TRUNCATE)``).

The job with the highest id is never deleted (see :meth:`SQLiteStore.prune
<minijobs.store.SQLiteStore.prune>`): that keeps job ids from being reused.

It runs on the leader only.  :func:`prune` does one complete pass on demand
(for a cron job, or the ``minijobs prune`` command, a shell over it) with the
app's Pruner settings or a rule of its own (``older_than_s``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigurationError, InvalidNameError
from ..job import JobState
from ..names import check_queue_name
from ..plugin import Plugin, PluginScope
from ..store import CheckpointMode
from .leadership import IDENTIFIER as LEADERSHIP

if TYPE_CHECKING:
    from ..app import App
    from ..worker import Worker

logger = logging.getLogger(__name__)

IDENTIFIER = "minijobs.pruner"
WEEK_S = 7 * 24 * 3600.0
#: The first pass comes this long (app clock) after the worker became leader, or one interval if shorter.
FIRST_PASS_S = 10.0
#: Real-time pause between two delete batches, so writers of other processes get the lock.
BATCH_PAUSE_S = 0.005
_TERMINAL = tuple(s.value for s in JobState if s.is_terminal)


@dataclass(slots=True)
class PruneReport:
    """What one pass removed: jobs, rows per plugin, whether it finished, and the checkpoint result."""

    jobs: int = 0
    plugins: dict[str, int] = field(default_factory=dict)
    complete: bool = True
    checkpoint: tuple[int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class _Rule:
    keep_s: float
    states: tuple[str, ...]
    queue: str | None
    exclude_queues: tuple[str, ...]


class Pruner(Plugin):
    """Deletes finished jobs older than their retention; see the module docstring for the rules."""

    config_schema: ClassVar[Mapping[str, Any]] = {
        "keep_s": float | None,
        "keep_by_state": dict[str, float | None],
        "keep_by_queue": dict[str, float | None],
        "interval_s": float,
        "batch_size": int,
        "time_budget_s": float,
        "wal_truncate_bytes": int,
    }

    keep_s: float | None
    keep_by_state: dict[str, float | None]
    keep_by_queue: dict[str, float | None]
    interval_s: float
    batch_size: int
    time_budget_s: float
    wal_truncate_bytes: int

    def __init__(
        self,
        *,
        keep_s: float | None = WEEK_S,
        keep_by_state: dict[str, float | None] | None = None,
        keep_by_queue: dict[str, float | None] | None = None,
        interval_s: float = 60.0,
        batch_size: int = 500,
        time_budget_s: float = 0.5,
        wal_truncate_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        super().__init__()
        self.keep_s, self.keep_by_state, self.keep_by_queue = WEEK_S, {}, {}
        self.interval_s, self.batch_size, self.time_budget_s = 60.0, 500, 0.5
        self.wal_truncate_bytes = 64 * 1024 * 1024
        self.configure({
            "keep_s": keep_s,
            "keep_by_state": keep_by_state or {},
            "keep_by_queue": keep_by_queue or {},
            "interval_s": interval_s,
            "batch_size": batch_size,
            "time_budget_s": time_budget_s,
            "wal_truncate_bytes": wal_truncate_bytes,
        })

    @classmethod
    def get_identifier(cls) -> str:
        return IDENTIFIER

    @classmethod
    def get_dependencies(cls) -> tuple[str, ...]:
        return (LEADERSHIP,)

    @classmethod
    def get_scope(cls) -> PluginScope:
        return PluginScope.LEADER

    def apply_config(self, values: dict[str, Any]) -> None:
        def fail(name: str, why: str) -> ConfigurationError:
            return ConfigurationError(f"{IDENTIFIER}: option {name!r} {why}")

        for name in ("keep_s", "interval_s", "time_budget_s"):
            value = values.get(name)
            if value is not None and not value > 0:
                raise fail(name, f"must be > 0, got {value!r}")
        for name in ("batch_size", "wal_truncate_bytes"):
            if name in values and values[name] < 1:
                raise fail(name, f"must be >= 1, got {values[name]!r}")
        for state, keep in values.get("keep_by_state", {}).items():
            if state not in _TERMINAL:
                raise fail(f"keep_by_state.{state}", f"is not a finished state (use one of {', '.join(_TERMINAL)})")
            if keep is not None and not keep > 0:
                raise fail(f"keep_by_state.{state}", f"must be > 0 or None, got {keep!r}")
        for queue, keep in values.get("keep_by_queue", {}).items():
            try:
                check_queue_name(queue)
            except InvalidNameError as exc:
                raise fail(f"keep_by_queue.{queue}", str(exc)) from None
            if keep is not None and not keep > 0:
                raise fail(f"keep_by_queue.{queue}", f"must be > 0 or None, got {keep!r}")
        super().apply_config(values)

    def rules(self) -> list[_Rule]:
        """The delete statements one pass runs, most specific first."""
        rules = [_Rule(keep, _TERMINAL, queue, ()) for queue, keep in self.keep_by_queue.items() if keep is not None]
        spared = tuple(self.keep_by_queue)
        by_keep: dict[float, list[str]] = {}
        for state in _TERMINAL:
            keep = self.keep_by_state.get(state, self.keep_s)
            if keep is not None:
                by_keep.setdefault(keep, []).append(state)
        rules.extend(_Rule(keep, tuple(states), None, spared) for keep, states in by_keep.items())
        return rules

    # -- running ---------------------------------------------------------------

    async def run(self, worker: Worker, app: App) -> None:
        next_at = app.clock.now() + min(self.interval_s, FIRST_PASS_S)
        while await self.sleep_until(next_at):
            report = await self.prune_async(worker, app)
            next_at = app.clock.now() + (self.interval_s if report.complete else min(self.interval_s, 1.0))

    async def prune_async(self, worker: Worker, app: App) -> PruneReport:
        """One pass within ``time_budget_s``, pausing between batches; emits ``pruner.pass``."""
        deadline = time.monotonic() + self.time_budget_s
        import asyncio  # lazily: `import minijobs` loads no event loop machinery

        batches = _Batches(self, app)
        report = PruneReport()
        while await app.call_store(batches.step):
            if time.monotonic() >= deadline:
                report.complete = False
                break
            await asyncio.sleep(BATCH_PAUSE_S)
        report.jobs = batches.deleted
        report.plugins = await app.call_store(_cleanup_plugins, app)
        report.checkpoint = await app.call_store(self.checkpoint, app, idle=worker.is_idle)
        if report.jobs or any(report.plugins.values()):
            logger.info("pruned %d finished job(s)%s%s", report.jobs,
                        "".join(f", {n} {name} row(s)" for name, n in report.plugins.items() if n),
                        "" if report.complete else " (time budget used up; continuing shortly)")
        app.events.emit("pruner.pass", jobs=report.jobs, plugins=report.plugins, complete=report.complete,
                        checkpoint=report.checkpoint)
        return report

    def checkpoint(self, app: App, *, idle: bool) -> tuple[int, int, int] | None:
        """Passive WAL checkpoint; a truncating one when ``idle`` and the WAL outgrew ``wal_truncate_bytes``."""
        store = app.store
        if store.is_memory:
            return None
        try:
            wal_bytes = os.path.getsize(f"{store.path}-wal")
        except OSError:
            wal_bytes = 0
        mode: CheckpointMode = "TRUNCATE" if idle and wal_bytes > self.wal_truncate_bytes else "PASSIVE"
        result = store.checkpoint(mode)
        if mode == "TRUNCATE":
            logger.info("truncated the WAL of %s (was %d bytes; busy=%d)", store.path, wal_bytes, result[0])
        return result


class _Batches:
    """Runs a pass's rules one bounded delete at a time.

    By default the pruner's rules, ``batch_size`` rows at a time, measured
    from the app's clock now; :func:`prune` may give its own of each.
    """

    def __init__(
        self,
        pruner: Pruner,
        app: App,
        *,
        rules: Sequence[_Rule] | None = None,
        batch_size: int | None = None,
        now: float | None = None,
    ) -> None:
        self.app = app
        self.limit = pruner.batch_size if batch_size is None else batch_size
        self.now = app.clock.now() if now is None else now
        self.rules = deque(pruner.rules() if rules is None else rules)
        self.deleted = 0

    def step(self) -> bool:
        """Delete one batch; True while more may remain."""
        if not self.rules:
            return False
        rule = self.rules[0]
        n = self.app.store.prune(
            before=self.now - rule.keep_s,
            states=rule.states,
            queue=rule.queue,
            exclude_queues=rule.exclude_queues,
            limit=self.limit,
        )
        self.deleted += n
        if n < self.limit:
            self.rules.popleft()
        return bool(self.rules)


def _cleanup_plugins(app: App, *, raise_errors: bool = False) -> dict[str, int]:
    """Every plugin's ``cleanup()``: rows removed by each.  A failing one is logged and skipped, or raised."""
    removed: dict[str, int] = {}
    for plugin in app.plugins:
        try:
            n = plugin.cleanup(app)
        except Exception:
            if raise_errors:
                raise
            logger.exception("plugin %s failed in cleanup()", plugin.get_identifier())
            continue
        if n is not None:
            removed[plugin.get_identifier()] = n
    return removed


def prune(
    app: App,
    pruner: Pruner | None = None,
    *,
    older_than_s: float | None = None,
    states: Iterable[JobState | str] | None = None,
    queue: str | None = None,
    batch_size: int | None = None,
    now: datetime | None = None,
    cleanup: bool = True,
    checkpoint: bool = True,
    raise_on_cleanup_error: bool = False,
    progress: Callable[[int], None] | None = None,
) -> PruneReport:
    """Run one complete prune now, with ``pruner``'s settings (default: the app's Pruner, else defaults).

    Deletes in batches (each its own short transaction) until nothing old is
    left, then runs every plugin's ``cleanup()`` and a WAL checkpoint.

    ``older_than_s`` replaces the retention rules with one: finished jobs
    (of ``states``, default all three, and of ``queue`` if given) that
    finished more than that long before ``now`` (default: the app's clock).
    ``batch_size`` overrides the pruner's; ``progress`` is called after each
    batch with the number of jobs deleted so far.  A plugin whose cleanup
    fails is logged and skipped, as in the Pruner's passes, or, with
    ``raise_on_cleanup_error``, raises (the jobs are deleted by then).
    """
    if pruner is None:
        pruner = next((p for p in app.plugins if isinstance(p, Pruner)), None) or Pruner()
    rules: list[_Rule] | None = None
    if older_than_s is not None:
        only = None if queue is None else check_queue_name(queue)
        rules = [_Rule(_check_age(older_than_s), _checked_states(states), only, exclude_queues=())]
    elif states is not None or queue is not None:
        raise ConfigurationError("prune: states and queue need older_than_s (without it the retention rules apply)")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigurationError(f"prune: batch_size must be an int >= 1, got {batch_size!r}")
    if now is not None and (not isinstance(now, datetime) or now.utcoffset() is None):
        raise ConfigurationError(f"prune: now must be a timezone-aware datetime, got {now!r}")
    batches = _Batches(pruner, app, rules=rules, batch_size=batch_size, now=None if now is None else now.timestamp())
    while batches.rules:
        batches.step()
        if progress is not None:
            progress(batches.deleted)
    report = PruneReport(jobs=batches.deleted)
    if cleanup:
        report.plugins = _cleanup_plugins(app, raise_errors=raise_on_cleanup_error)
    if checkpoint:
        report.checkpoint = pruner.checkpoint(app, idle=True)
    return report


def _check_age(value: float) -> float:
    """A retention age in seconds: a finite number >= 0, with no upper bound (as ``keep_s`` has none)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigurationError(f"prune: older_than_s must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _checked_states(states: Iterable[JobState | str] | None) -> tuple[str, ...]:
    """Finished states as stored (each once, in the order given); all three when None."""
    if states is None:
        return _TERMINAL
    if isinstance(states, str):
        states = [states]
    checked = tuple(dict.fromkeys(str(state) for state in states))
    bad = [state for state in checked if state not in _TERMINAL]
    if bad or not checked:
        raise ConfigurationError(f"prune: states must be finished states ({', '.join(_TERMINAL)}), got {bad or 'none'}")
    return checked
