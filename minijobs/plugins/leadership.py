"""Leadership: each leader-scoped plugin runs in exactly one process that has it.

Leadership is elected per leader-scoped plugin, not once for the whole
group: every leader-scoped plugin identifier (``minijobs.cron``,
``minijobs.pruner``...) has its own lease row in ``minijobs_leadership``, and
a worker takes part only in the elections of the leader-scoped plugins it
runs.  One shared election would let a worker whose App has no Cron win it
and leave cron firing nowhere (schedules from ``minijobs.toml`` reach only the
command line's App, so an in-process worker beside it would do exactly
that); per-plugin elections let workers with different plugin sets share a
database without starving each other, and a worker without leader-scoped
plugins takes part in none.

Acquiring and renewing are one atomic statement (``INSERT … ON CONFLICT DO
UPDATE … WHERE expired OR owner = me``), so two processes can never both win
the same term.  Followers retry right when the current lease expires, so a
leader that dies (SIGKILL, power loss) is replaced within one lease period; a
leader that stops cleanly hands the lease back at once.

A leader that cannot renew (database locked, process stalled, laptop lid
closed) steps down *before* its lease expires: it tracks the deadline both on
the app's clock (what other processes compare the lease against, and what a
test's ``FakeClock`` moves) and on the monotonic clock (real elapsed time,
immune to wall-clock jumps), and gives up at whichever comes first.

Leadership is a coordination aid, not a lock for correctness: between a
stalled leader noticing and a new one starting there can be a brief overlap,
so leader-only plugins keep their own writes safe with database constraints
(the cron plugin's slot table, for instance).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigurationError, StoreError
from ..plugin import Plugin, PluginScope
from ..store import LeaseRecord

if TYPE_CHECKING:
    from ..app import App
    from ..worker import Worker

logger = logging.getLogger(__name__)

IDENTIFIER = "minijobs.leadership"


@dataclass(frozen=True, slots=True)
class Leader:
    """A lease as stored: who leads the election of ``plugin``, since when, until when (UTC)."""

    owner: str
    term: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    #: Identifier of the leader-scoped plugin this election is for (e.g. ``"minijobs.cron"``).
    plugin: str

    def is_valid(self, now: datetime) -> bool:
        return now < self.expires_at


@dataclass(slots=True)
class _Election:
    """This worker's view of one plugin's election."""

    plugin: str
    #: The term this worker leads in, None while it follows.
    term: int | None = None
    #: When leading: step down at whichever of these comes first (app clock, monotonic clock).
    clock_deadline: float = 0.0
    mono_deadline: float = 0.0
    #: Next attempt, at whichever of these comes first (app clock, monotonic clock); 0 = now.
    next_clock: float = 0.0
    next_mono: float = 0.0


class Leadership(Plugin):
    """Elects, for every leader-scoped plugin, one leader among the workers on the database that run it.

    ``lease_s`` (default 15 s) bounds how long a plugin goes without a leader
    after its leader dies; the leader renews every ``renew_interval_s``
    (default a third of the lease) and steps down when less than a quarter of
    the lease is left without a successful renewal.  Keep ``lease_s``
    comfortably above the app's ``busy_timeout_s``: a renewal may wait that
    long for the lock.
    """

    config_schema: ClassVar[Mapping[str, Any]] = {"lease_s": float, "renew_interval_s": float | None}

    lease_s: float
    renew_interval_s: float | None

    def __init__(self, *, lease_s: float = 15.0, renew_interval_s: float | None = None) -> None:
        super().__init__()
        self.lease_s = 15.0
        self.renew_interval_s = None
        self.configure({"lease_s": lease_s, "renew_interval_s": renew_interval_s})

    @classmethod
    def get_identifier(cls) -> str:
        return IDENTIFIER

    @classmethod
    def get_scope(cls) -> PluginScope:
        return PluginScope.WORKER

    def apply_config(self, values: dict[str, Any]) -> None:
        lease_s = values.get("lease_s", self.lease_s)
        renew = values.get("renew_interval_s", self.renew_interval_s)
        if not lease_s > 0:
            raise ConfigurationError(f"{IDENTIFIER}: option 'lease_s' must be > 0, got {lease_s!r}")
        if renew is not None and not 0 < renew <= lease_s / 2:
            raise ConfigurationError(
                f"{IDENTIFIER}: option 'renew_interval_s' must be > 0 and at most half of lease_s, got {renew!r}"
            )
        super().apply_config(values)

    @property
    def renew_every_s(self) -> float:
        return self.renew_interval_s if self.renew_interval_s is not None else self.lease_s / 3

    @property
    def margin_s(self) -> float:
        """Step down when less than this much of the lease is left unrenewed."""
        return self.lease_s / 4

    # -- running ---------------------------------------------------------------

    async def run(self, worker: Worker, app: App) -> None:
        elections = [_Election(plugin) for plugin in worker.leader_plugins]
        if not elections:
            logger.debug("worker %s runs no leader-scoped plugin: it takes part in no election", worker.id)
            return
        try:
            while True:
                mono, now = time.monotonic(), app.clock.now()
                for election in elections:
                    if now >= election.next_clock or mono >= election.next_mono:
                        wait_clock, wait_real = await self._step(worker, app, election)
                        election.next_clock = app.clock.now() + wait_clock
                        election.next_mono = time.monotonic() + wait_real
                until = min(e.next_clock for e in elections)
                real_s = max(0.0, min(e.next_mono for e in elections) - time.monotonic())
                if not await self.sleep_until(until, at_most_s=real_s):
                    return
        finally:
            for election in elections:
                await self._resign(worker, app, election)

    def migrate(self, app: App, to_version: int | None = None) -> int:
        """The election table is the store's own (a built-in schema), not SQL of this plugin."""
        return app.store.migrate_component(IDENTIFIER, to_version=to_version)

    async def _step(self, worker: Worker, app: App, election: _Election) -> tuple[float, float]:
        """Try to acquire or renew once; return how long to wait (clock seconds, real seconds)."""
        mono = time.monotonic()
        now = app.clock.now()
        try:
            term = await app.call_store(
                worker.store.acquire_leadership, election.plugin, owner=worker.id, now=now, lease_s=self.lease_s
            )
        except StoreError as exc:
            logger.warning("worker %s: leadership renewal (%s) failed: %s", worker.id, election.plugin, exc)
            term = None
            failed = True
        else:
            failed = False
        leading = election.term is not None
        if term is not None:
            election.clock_deadline = now + self.lease_s - self.margin_s
            election.mono_deadline = mono + self.lease_s - self.margin_s
            if leading and term != election.term:
                # Our lease lapsed and another process led in between: that was a different reign.
                self._lose(worker, app, election, "another leader held the lease in between")
                leading = False
            if not leading:
                self._gain(worker, app, election, term)
            return self.renew_every_s, self.renew_every_s
        if leading:
            if not failed:
                self._lose(worker, app, election, "another worker holds the lease")
            elif time.monotonic() >= election.mono_deadline or app.clock.now() >= election.clock_deadline:
                self._lose(worker, app, election, "could not renew the lease before it expired")
            else:
                left = min(election.mono_deadline - time.monotonic(), election.clock_deadline - app.clock.now())
                retry = max(0.001, min(self.renew_every_s / 2, left))
                return retry, retry
        if failed:
            return self.renew_every_s, self.renew_every_s
        # A follower: try again right when the current lease runs out.
        try:
            leases = await app.call_store(worker.store.leadership_leases)
        except StoreError as exc:
            logger.warning("worker %s: reading the lease of %s failed: %s", worker.id, election.plugin, exc)
            return self.renew_every_s, self.renew_every_s
        current = next((_leader(lease) for lease in leases if lease.plugin == election.plugin), None)
        if current is None:
            return 0.0, 0.0
        until_expiry = current.expires_at.timestamp() - app.clock.now()
        return max(0.0, until_expiry), max(0.001, min(self.renew_every_s, until_expiry))

    def _gain(self, worker: Worker, app: App, election: _Election, term: int) -> None:
        election.term = term
        worker.set_leader(True, plugin=election.plugin)
        logger.info("worker %s now leads %s (term %d)", worker.id, election.plugin, term)
        app.events.emit("leadership.gained", worker_id=worker.id, term=term, plugin=election.plugin)

    def _lose(self, worker: Worker, app: App, election: _Election, reason: str) -> None:
        term, election.term = election.term, None
        worker.set_leader(False, plugin=election.plugin)
        logger.warning("worker %s no longer leads %s (term %s): %s", worker.id, election.plugin, term, reason)
        app.events.emit("leadership.lost", worker_id=worker.id, term=term, plugin=election.plugin, reason=reason)

    async def _resign(self, worker: Worker, app: App, election: _Election) -> None:
        """Hand the lease back so another process takes over at once (worker stopping)."""
        term = election.term
        if term is None:
            return
        try:
            await app.call_store(
                worker.store.resign_leadership, election.plugin, owner=worker.id, term=term, now=app.clock.now()
            )
        except StoreError as exc:
            logger.warning("worker %s: could not hand the lease of %s back (it expires by itself): %s",
                           worker.id, election.plugin, exc)
        election.term = None
        worker.set_leader(False, plugin=election.plugin)
        logger.info("worker %s resigned leadership of %s (term %s)", worker.id, election.plugin, term)
        app.events.emit("leadership.lost", worker_id=worker.id, term=term, plugin=election.plugin,
                        reason="worker stopping")

    # -- inspection ------------------------------------------------------------

    @staticmethod
    def current(app: App, *, plugin: str) -> Leader | None:
        """The lease of ``plugin``'s election as stored (possibly expired), or None if nobody ever led it."""
        return Leadership.leases(app).get(plugin)

    @staticmethod
    def leases(app: App) -> dict[str, Leader]:
        """Every stored lease (possibly expired), by the identifier of the plugin it elects for."""
        return {lease.plugin: _leader(lease) for lease in app.store.leadership_leases()}


def _leader(lease: LeaseRecord) -> Leader:
    return Leader(
        owner=lease.owner,
        term=lease.term,
        acquired_at=datetime.fromtimestamp(lease.acquired_at, UTC),
        renewed_at=datetime.fromtimestamp(lease.renewed_at, UTC),
        expires_at=datetime.fromtimestamp(lease.expires_at, UTC),
        plugin=lease.plugin,
    )
