"""Declaration of a queue: its name, how many of its jobs run at once, and on which executor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .names import check_queue_name

if TYPE_CHECKING:
    from .executors.base import Executor


@dataclass(frozen=True, slots=True)
class Queue:
    """``Queue("cpu", executor=ProcessExecutor, concurrency=2)``.

    ``concurrency=None`` takes the executor's default.  ``executor=None`` means
    :class:`~minijobs.AsyncExecutor`.  ``executor_options`` go to the executor's
    constructor.
    """

    name: str
    concurrency: int | None = None
    executor: type[Executor] | None = None
    executor_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_queue_name(self.name)
        if self.concurrency is not None and (
            isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1
        ):
            raise ConfigurationError(f"queue {self.name!r}: concurrency must be an int >= 1, got {self.concurrency!r}")
