"""Where minijobs reads the time.

Every scheduling decision (due times, retries, leases, cron) asks the app's
clock, never ``time.time()`` directly, so tests can swap in
``minijobs.testing.FakeClock`` and move time forward without sleeping.
Durations of real waiting (timeouts of running code, poll intervals) use the
event loop's monotonic clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Returns the current time as float seconds since the Unix epoch (UTC)."""

    def now(self) -> float: ...


@runtime_checkable
class ObservableClock(Clock, Protocol):
    """A clock that tells listeners when it jumps, so sleeping workers re-check due jobs."""

    def add_listener(self, callback: Callable[[], None]) -> None: ...

    def remove_listener(self, callback: Callable[[], None]) -> None: ...


class SystemClock:
    """The wall clock."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"
