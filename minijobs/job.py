"""Immutable views of jobs as stored: :class:`Job`, :class:`JobState`, :class:`Progress`."""

from __future__ import annotations

import dataclasses
import itertools
import json
import operator
import traceback as traceback_module
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .errors import type_name
from .payload import utf8_safe


class JobState(StrEnum):
    """Life cycle of a job.

    ``pending`` and ``retrying`` are runnable once ``scheduled_at`` is due;
    ``succeeded``, ``failed`` and ``cancelled`` are terminal.
    """

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
TERMINAL_STATES = tuple(sorted(_TERMINAL))
LIVE_STATES = (JobState.PENDING, JobState.RUNNING, JobState.RETRYING)


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """What a running job last reported through ``current_job().set_progress``."""

    done: float
    total: float | None = None
    message: str | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptError:
    """One failed attempt: which attempt, what was raised, and its traceback."""

    attempt: int
    type: str
    message: str
    traceback: str
    at: datetime

    @classmethod
    def from_exception(cls, exc: BaseException, *, attempt: int, at: float) -> AttemptError:
        """The record of ``exc`` ending attempt ``attempt`` at ``at`` (epoch seconds)."""
        return cls(
            attempt=attempt,
            type=type_name(type(exc)),
            message=utf8_safe(str(exc)),  # a broken __str__ raises: the caller records a stand-in
            traceback=utf8_safe("".join(traceback_module.format_exception(exc))),
            at=datetime.fromtimestamp(at, UTC),
        )


# The error record's one encoder and one decoder: the store appends what ``encode_attempt_error``
# writes to a job's ``errors`` array, and reads the array back with ``decode_attempt_errors``.

def encode_attempt_error(error: AttemptError) -> str:
    """``error`` as the JSON object stored in a job's ``errors`` array (``at`` as epoch seconds)."""
    return json.dumps({
        "attempt": error.attempt, "type": error.type, "message": error.message,
        "traceback": error.traceback, "at": error.at.timestamp(),
    })  # ASCII (the default): a lone surrogate in a message is escaped, never unstorable


def decode_attempt_errors(text: str) -> tuple[AttemptError, ...]:
    """A job's stored ``errors`` array; missing keys read as empty (rows written by hand, old versions)."""
    return tuple(
        AttemptError(
            attempt=item.get("attempt", 0),
            type=item.get("type", ""),
            message=item.get("message", ""),
            traceback=item.get("traceback", ""),
            at=datetime.fromtimestamp(item.get("at", 0.0), UTC),
        )
        for item in json.loads(text)
    )


def to_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A snapshot of one job row.

    Snapshots never change; hooks that want a different job return
    ``job.replace(...)``.  Timestamps are timezone-aware UTC.
    """

    id: int
    name: str
    queue: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    scheduled_at: datetime
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    result: Any = None
    errors: tuple[AttemptError, ...] = ()
    progress: Progress | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    unique_key: str | None = None
    timeout_s: float | None = None
    rescues: int = 0
    cancel_requested: bool = False
    lease_owner: str | None = None

    def replace(self, **changes: Any) -> Job:
        return dataclasses.replace(self, **changes)

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal


#: ``JobState`` by its stored value: a dict lookup instead of an Enum call per row read.
STATE_BY_VALUE: dict[str, JobState] = {state.value: state for state in JobState}

_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Job))
_FIELD_SETTERS = tuple(Job.__dict__[name].__set__ for name in _FIELD_NAMES)
_FIELD_COUNT = len(_FIELD_SETTERS)


def job_from_fields(values: tuple[Any, ...]) -> Job:
    """Build a :class:`Job` from already-typed values in field order (the store's row reader).

    The generated ``__init__`` of a frozen dataclass makes one
    ``object.__setattr__`` call per field and parses keywords; calling the slot
    setters from C through ``map`` avoids both on the claim's hot path (the
    drain benchmarks, ``python3 -m benchmarks --only drain``, measure it).
    Callers pass every field.
    """
    if len(values) != _FIELD_COUNT:
        # A programming error (a field added to Job but not to the caller), not a damaged row.
        raise RuntimeError(f"job_from_fields got {len(values)} values for the {_FIELD_COUNT} fields of Job")
    job = object.__new__(Job)
    # Every setter returns None, so any() runs them all; it only serves to drive the map.
    any(map(operator.call, _FIELD_SETTERS, itertools.repeat(job, _FIELD_COUNT), values))
    return job
