"""The ranges of values that reach the database, and the checks that keep them there.

Whatever minijobs writes it must be able to read back: a time becomes a
``datetime`` (years 1 to 9999), an integer a SQLite INTEGER (signed 64 bits),
a string UTF-8.  Values are checked where the user gives them, so a bad one is
a typed error at that call and never a row that breaks every later read.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "INT32_MAX", "INT32_MIN", "INT64_MAX", "INT64_MIN", "MAX_DURATION_S", "MAX_TIMESTAMP", "MIN_TIMESTAMP",
    "check_duration", "check_int", "check_text", "check_timestamp", "is_number",
]

from .errors import MAX_DURATION_S, ConfigurationError, PayloadValueError
from .payload import utf8_size

#: The last second a ``datetime`` can hold; every stored time is at most this (epoch seconds).
MAX_TIMESTAMP = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
#: The first day a ``datetime`` can hold, with a day to spare.
MIN_TIMESTAMP = datetime(1, 1, 2, tzinfo=UTC).timestamp()
#: SQLite INTEGER range: job ids live here.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Range of small integer options (priority, attempts), far from any overflow in ``attempts + 1``.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def check_duration(value: Any, what: str, *, allow_zero: bool = False) -> float:
    """``value`` as float seconds: finite, positive (or zero if allowed), at most :data:`MAX_DURATION_S`."""
    if not is_number(value) or value < 0 or (value == 0 and not allow_zero) or value > MAX_DURATION_S:
        low = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{what} must be a number of seconds {low} and at most {MAX_DURATION_S:.0f} "
                                 f"(100 years), got {value!r}")
    return float(value)


def check_timestamp(value: float, what: str) -> float:
    """An epoch time that a ``datetime`` can represent (years 1 to 9999)."""
    if not (is_number(value) and MIN_TIMESTAMP <= value <= MAX_TIMESTAMP):
        raise ConfigurationError(f"{what} is outside the years 1 to 9999 that minijobs can store")
    return float(value)


def check_int(value: Any, what: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{what} must be an int from {low} to {high}, got {value!r}")
    return value


def check_text(value: Any, what: str, *, max_chars: int) -> str:
    """A non-empty str of at most ``max_chars`` characters that encodes as UTF-8 (no lone surrogates)."""
    if not isinstance(value, str) or not 0 < len(value) <= max_chars:
        raise ConfigurationError(f"{what} must be a non-empty str of at most {max_chars} characters, got {value!r}")
    if not value.isascii():
        try:
            utf8_size(value, what)
        except PayloadValueError as exc:  # an option, not a payload: the same words, the option's error type
            raise ConfigurationError(str(exc)) from None
    return value
