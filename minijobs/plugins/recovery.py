"""Recovery: jobs whose worker vanished go back to their queue.

A running job's lease is renewed by its worker's heartbeat.  When the lease
expires (worker SIGKILLed, machine suspended, process wedged), this plugin
puts the job back as ``retrying`` so another worker runs it: at-least-once
delivery.  Each rescue is counted; a job rescued more than ``max_rescues``
times is failed as a poison pill (``minijobs.PoisonJobError`` in its errors)
instead of killing worker after worker forever.

It runs in *every* worker rather than only on the leader: the pass is one
short, idempotent write (an indexed scan of expired leases; two workers
racing cannot rescue a job twice, since the update only matches jobs still
running on an expired lease), and the safety net of at-least-once delivery
should not wait for a leadership handover, which is exactly what happens
when the process that died was the leader.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigurationError
from ..plugin import Plugin, PluginScope

if TYPE_CHECKING:
    from ..app import App
    from ..worker import Worker

logger = logging.getLogger(__name__)

IDENTIFIER = "minijobs.recovery"


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """Jobs one pass put back in their queue, and jobs it failed as poison pills."""

    requeued: list[int] = field(default_factory=list)
    poisoned: list[int] = field(default_factory=list)


class Recovery(Plugin):
    """Requeues jobs whose lease expired.

    ``interval_s`` (default: half the worker's ``lease_s``) is how often leases
    are checked, on the app's clock; ``max_rescues`` (default 3) how many times
    a job may lose its worker before it is failed; ``batch_size`` bounds the
    rows touched per transaction.
    """

    config_schema: ClassVar[Mapping[str, Any]] = {"interval_s": float | None, "max_rescues": int, "batch_size": int}

    interval_s: float | None
    max_rescues: int
    batch_size: int

    def __init__(self, *, interval_s: float | None = None, max_rescues: int = 3, batch_size: int = 500) -> None:
        super().__init__()
        self.interval_s, self.max_rescues, self.batch_size = None, 3, 500
        self.configure({"interval_s": interval_s, "max_rescues": max_rescues, "batch_size": batch_size})

    @classmethod
    def get_identifier(cls) -> str:
        return IDENTIFIER

    @classmethod
    def get_scope(cls) -> PluginScope:
        return PluginScope.WORKER

    def apply_config(self, values: dict[str, Any]) -> None:
        interval = values.get("interval_s")
        if interval is not None and not interval > 0:
            raise ConfigurationError(f"{IDENTIFIER}: option 'interval_s' must be > 0, got {interval!r}")
        if values.get("max_rescues", 0) < 0:
            raise ConfigurationError(f"{IDENTIFIER}: option 'max_rescues' must be >= 0, got {values['max_rescues']!r}")
        if values.get("batch_size", 1) < 1:
            raise ConfigurationError(f"{IDENTIFIER}: option 'batch_size' must be >= 1, got {values['batch_size']!r}")
        super().apply_config(values)

    async def run(self, worker: Worker, app: App) -> None:
        interval = self.interval_s if self.interval_s is not None else max(0.01, worker.lease_s / 2)
        while True:
            # Schedule the next pass from the time read before this one: a clock jump during the
            # pass (FakeClock.advance in tests, a resumed laptop) then triggers another pass at once.
            started = app.clock.now()
            report = await app.call_store(self.recover, app, spare_owner=worker.id)
            if report.requeued:
                worker.wake()
            if not await self.sleep_until(started + interval):
                return

    def recover(self, app: App, *, spare_owner: str | None = None) -> RecoveryReport:
        """One pass: requeue every job whose lease expired by the app's clock (in batches).

        ``spare_owner`` (the worker running this plugin) keeps its own jobs:
        it is alive, and renews their leases as soon as it can write again
        (after another process held the database locked past a lease, say).
        """
        report = RecoveryReport()
        while True:
            requeued, poisoned = app.store.recover_expired(
                now=app.clock.now(), max_rescues=self.max_rescues, limit=self.batch_size, spare_owner=spare_owner
            )
            if requeued:
                logger.warning("requeued %d job(s) whose worker stopped renewing their lease: %s",
                               len(requeued), requeued[:20])
            if poisoned:
                logger.error("failed %d job(s) that lost their worker more than %d times (poison pills): %s",
                             len(poisoned), self.max_rescues, poisoned[:20])
                app.notify_finished(poisoned)
            if requeued or poisoned:
                app.events.emit("job.recovered", job_ids=requeued, poisoned_ids=poisoned)
            report.requeued.extend(requeued)
            report.poisoned.extend(poisoned)
            if len(requeued) + len(poisoned) < self.batch_size:
                return report
