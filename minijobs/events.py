"""An in-process event hub: the app, the worker and plugins publish; anyone subscribes.

Callbacks run synchronously in the thread that emits, so they must be quick
(hand work to a queue or call ``plugin.wake_up()``).  A callback that raises is
logged with its traceback and never breaks the emitter.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

#: Names emitted by minijobs itself; plugins may emit their own (``"<plugin>.<what>"``).
EVENTS = (
    "job.enqueued",
    "job.started",
    "job.progress",
    "job.completed",
    "job.cancel_requested",
    "job.retried",
    "job.recovered",
    "worker.started",
    "worker.stopping",
    "worker.stopped",
    "queue.paused",
    "queue.resumed",
    "leadership.gained",
    "leadership.lost",
)


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    data: dict[str, Any] = field(default_factory=dict)


Callback = Callable[[Event], None]


class EventHub:
    """Subscribe with an exact name, a prefix pattern such as ``"job.*"``, or ``"*"`` for everything."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, tuple[Callback, ...]] = {}

    def subscribe(self, pattern: str, callback: Callback) -> Callable[[], None]:
        """Register ``callback`` for ``pattern``; returns a function that unsubscribes it."""
        if not pattern or ("*" in pattern and not (pattern == "*" or pattern.endswith(".*"))):
            raise ValueError(f"event pattern must be a name, 'prefix.*' or '*', got {pattern!r}")
        with self._lock:
            self._subscribers[pattern] = (*self._subscribers.get(pattern, ()), callback)

        def unsubscribe() -> None:
            with self._lock:
                remaining = tuple(cb for cb in self._subscribers.get(pattern, ()) if cb is not callback)
                if remaining:
                    self._subscribers[pattern] = remaining
                else:
                    self._subscribers.pop(pattern, None)

        return unsubscribe

    def wants(self, name: str) -> bool:
        """Cheap check so hot paths skip building events nobody listens to."""
        subs = self._subscribers
        if not subs:
            return False
        return name in subs or "*" in subs or f"{name.split('.', 1)[0]}.*" in subs

    def emit(self, name: str, **data: Any) -> None:
        subs = self._subscribers
        if not subs:
            return
        callbacks = (*subs.get(name, ()), *subs.get(f"{name.split('.', 1)[0]}.*", ()), *subs.get("*", ()))
        if not callbacks:
            return
        event = Event(name, data)
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                logger.exception("event subscriber %r failed on %s", callback, name)
