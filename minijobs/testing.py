"""Helpers for users' tests: a controllable clock (more helpers below)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ("FakeClock",)


class FakeClock:
    """A clock that only moves when told to.

    Pass it as ``App(clock=FakeClock())``; :meth:`advance` moves time forward
    and wakes running workers, so delayed jobs, retries, leases and cron
    slots fall due without the test sleeping.
    """

    def __init__(self, start: datetime | float = datetime(2030, 1, 1, tzinfo=UTC)) -> None:
        self._now = _to_timestamp(start)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        return self._now

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self._now, UTC)

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0) and notify listeners; returns the new time."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward; got {seconds!r}")
        with self._lock:
            self._now += seconds
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return self._now

    def set(self, when: datetime | float) -> float:
        """Jump to ``when`` (not earlier than now) and notify listeners."""
        return self.advance(_to_timestamp(when) - self._now)

    def add_listener(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def __repr__(self) -> str:
        return f"FakeClock({self.datetime().isoformat()})"


def _to_timestamp(when: datetime | float) -> float:
    if isinstance(when, datetime):
        if when.utcoffset() is None:
            raise ValueError("FakeClock needs a timezone-aware datetime")
        return when.timestamp()
    return float(when)
