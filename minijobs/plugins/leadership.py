"""Leadership: exactly one leader among all processes that share the database file.

The leader holds a lease row in ``minijobs_leadership``.  Acquiring and
renewing are one atomic statement (``INSERT … ON CONFLICT DO UPDATE … WHERE
expired OR owner = me``), so two processes can never both win the same term.
Followers retry right when the current lease expires, so a leader that dies
(SIGKILL, power loss) is replaced within one lease period; a leader that stops
cleanly hands the lease back at once.

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
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigurationError, StoreError
from ..job import to_datetime
from ..plugin import Plugin, PluginScope

if TYPE_CHECKING:
    from ..app import App
    from ..worker import Worker

logger = logging.getLogger(__name__)

IDENTIFIER = "minijobs.leadership"
_ELECTION = "leader"

MIGRATIONS = (
    """
    CREATE TABLE minijobs_leadership (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        term INTEGER NOT NULL,
        acquired_at REAL NOT NULL,
        renewed_at REAL NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID
    """,
)

# Right-hand sides of SET see the row as it was, so the CASEs compare against the old owner.
_ACQUIRE = """
INSERT INTO minijobs_leadership (name, owner, term, acquired_at, renewed_at, expires_at)
VALUES (:name, :owner, 1, :now, :now, :expires)
ON CONFLICT (name) DO UPDATE SET
    owner = excluded.owner,
    term = CASE WHEN owner = excluded.owner THEN term ELSE term + 1 END,
    acquired_at = CASE WHEN owner = excluded.owner THEN acquired_at ELSE excluded.acquired_at END,
    renewed_at = excluded.renewed_at,
    expires_at = excluded.expires_at
WHERE owner = excluded.owner OR expires_at <= excluded.renewed_at
RETURNING term
"""

_CURRENT = "SELECT owner, term, acquired_at, renewed_at, expires_at FROM minijobs_leadership WHERE name = ?"

_RESIGN = (
    "UPDATE minijobs_leadership SET expires_at = :now "
    "WHERE name = :name AND owner = :owner AND term = :term AND expires_at > :now"
)


@dataclass(frozen=True, slots=True)
class Leader:
    """The lease as stored: who leads, since when, until when (UTC)."""

    owner: str
    term: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime

    def is_valid(self, now: datetime) -> bool:
        return now < self.expires_at


class Leadership(Plugin):
    """Elects one leader among every worker of every process on the same database.

    ``lease_s`` (default 15 s) bounds how long the group is leaderless after
    the leader dies; the leader renews every ``renew_interval_s`` (default a
    third of the lease) and steps down when less than a quarter of the lease
    is left without a successful renewal.  Keep ``lease_s`` comfortably above
    the app's ``busy_timeout_s``: a renewal may wait that long for the lock.
    """

    migrations = MIGRATIONS
    config_schema: ClassVar[Mapping[str, Any]] = {"lease_s": float, "renew_interval_s": float | None}

    lease_s: float
    renew_interval_s: float | None

    def __init__(self, *, lease_s: float = 15.0, renew_interval_s: float | None = None) -> None:
        super().__init__()
        self.lease_s = 15.0
        self.renew_interval_s = None
        self.configure({"lease_s": lease_s, "renew_interval_s": renew_interval_s})
        self._term: int | None = None
        self._clock_deadline = 0.0
        self._mono_deadline = 0.0

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
        try:
            while True:
                wait_clock, wait_real = self._step(worker, app)
                if not await self.sleep_until(app.clock.now() + wait_clock, at_most_s=wait_real):
                    return
        finally:
            self._resign(worker, app)

    def _step(self, worker: Worker, app: App) -> tuple[float, float]:
        """Try to acquire or renew once; return how long to wait (clock seconds, real seconds)."""
        mono = time.monotonic()
        now = app.clock.now()
        try:
            term = self._acquire(app, worker.id, now)
        except StoreError as exc:
            logger.warning("worker %s: leadership renewal failed: %s", worker.id, exc)
            term = None
            failed = True
        else:
            failed = False
        if term is not None:
            self._clock_deadline = now + self.lease_s - self.margin_s
            self._mono_deadline = mono + self.lease_s - self.margin_s
            if worker.is_leader and term != self._term:
                # Our lease lapsed and another process led in between: that was a different reign.
                self._lose(worker, app, "another leader held the lease in between")
            if not worker.is_leader:
                self._gain(worker, app, term)
            return self.renew_every_s, self.renew_every_s
        if worker.is_leader:
            if not failed:
                self._lose(worker, app, "another worker holds the lease")
            elif time.monotonic() >= self._mono_deadline or app.clock.now() >= self._clock_deadline:
                self._lose(worker, app, "could not renew the lease before it expired")
            else:
                left = min(self._mono_deadline - time.monotonic(), self._clock_deadline - app.clock.now())
                retry = max(0.001, min(self.renew_every_s / 2, left))
                return retry, retry
        if failed:
            return self.renew_every_s, self.renew_every_s
        # A follower: try again right when the current lease runs out.
        current = self.current(app)
        if current is None:
            return 0.0, 0.0
        until_expiry = current.expires_at.timestamp() - app.clock.now()
        return max(0.0, until_expiry), max(0.001, min(self.renew_every_s, until_expiry))

    def _acquire(self, app: App, owner: str, now: float) -> int | None:
        with app.store.transaction("acquire leadership") as conn:
            row = conn.execute(
                _ACQUIRE, {"name": _ELECTION, "owner": owner, "now": now, "expires": now + self.lease_s}
            ).fetchone()
        return None if row is None else int(row[0])

    def _gain(self, worker: Worker, app: App, term: int) -> None:
        self._term = term
        worker.set_leader(True)
        logger.info("worker %s is now the leader (term %d)", worker.id, term)
        app.events.emit("leadership.gained", worker_id=worker.id, term=term)

    def _lose(self, worker: Worker, app: App, reason: str) -> None:
        term, self._term = self._term, None
        worker.set_leader(False)
        logger.warning("worker %s is no longer the leader (term %s): %s", worker.id, term, reason)
        app.events.emit("leadership.lost", worker_id=worker.id, term=term, reason=reason)

    def _resign(self, worker: Worker, app: App) -> None:
        """Hand the lease back so another process takes over at once (worker stopping)."""
        if not worker.is_leader:
            return
        term = self._term
        try:
            app.store.execute_write(
                "resign leadership",
                _RESIGN,
                {"name": _ELECTION, "owner": worker.id, "term": term, "now": app.clock.now()},
            )
        except StoreError as exc:
            logger.warning("worker %s: could not hand the lease back (it expires by itself): %s", worker.id, exc)
        term, self._term = self._term, None
        worker.set_leader(False)
        logger.info("worker %s resigned leadership (term %s)", worker.id, term)
        app.events.emit("leadership.lost", worker_id=worker.id, term=term, reason="worker stopping")

    # -- inspection ------------------------------------------------------------

    @staticmethod
    def current(app: App) -> Leader | None:
        """The lease as stored (possibly expired), or None if nobody ever led."""
        rows = app.store.query("read leadership", _CURRENT, (_ELECTION,))
        if not rows:
            return None
        owner, term, acquired_at, renewed_at, expires_at = rows[0]
        return Leader(
            owner=owner,
            term=int(term),
            acquired_at=to_datetime(acquired_at),  # type: ignore[arg-type]
            renewed_at=to_datetime(renewed_at),  # type: ignore[arg-type]
            expires_at=to_datetime(expires_at),  # type: ignore[arg-type]
        )
