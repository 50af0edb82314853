"""Cron expressions: parse them and compute fire times.  Pure functions: no I/O, no clock.

Syntax (Vixie/ISC cron, five fields)::

    minute  hour  day-of-month  month  day-of-week
    0-59    0-23  1-31          1-12   0-7 (0 and 7 are Sunday)

Each field is ``*``, a value, a range ``a-b``, a step ``*/n``, ``a-b/n`` or
``a/n`` (from ``a`` to the field's maximum), or a comma-separated list of
those.  Months and weekdays also take English three-letter names
(``jan``-``dec``, ``sun``-``sat``, any case), in ranges too (``mon-fri``).
Macros: ``@yearly`` (= ``@annually``), ``@monthly``, ``@weekly``, ``@daily``
(= ``@midnight``) and ``@hourly``.

Day matching follows Vixie cron: when both day-of-month and day-of-week are
restricted, a day matches if *either* matches (``0 0 1 * mon`` fires on the
1st and on every Monday).  A field counts as unrestricted when it starts with
``*`` (so ``*/2`` in day-of-month still means "and", as in Vixie cron).

Time zones and daylight saving time (fire times are computed on the wall
clock of the schedule's zone, then converted to UTC):

* Fall back (a wall-clock hour happens twice): each wall-clock time fires once,
  at its *first* occurrence.  The repeated hour never fires again, so a
  ``*/15`` schedule pauses for one real hour; use ``tz="UTC"`` for schedules
  that must keep a fixed real interval.
* Spring forward (a wall-clock hour does not exist): a time in the gap fires
  once, at the first wall-clock minute after the gap (``30 2 * * *`` in
  Europe/Paris fires at 03:00 on the last Sunday of March).  Several skipped
  times coalesce into that single firing.

Expressions that can never fire (``0 0 31 2 *``, 31 April) are refused when
parsed, and every search is bounded, so no input makes :func:`next_fire` hang.
"""

from __future__ import annotations

import calendar
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import CronError

__all__ = ("CronError", "CronExpression", "next_fire", "parse", "prev_fire", "resolve_tz")

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_WEEKDAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}

#: (label, lowest, highest, names) of the five fields.
_FIELDS: tuple[tuple[str, int, int, dict[str, int] | None], ...] = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _WEEKDAYS),
)

_NUMBER = re.compile(r"[0-9]{1,4}")
_MAX_LENGTH = 1000
#: Bound of every search, in days: long enough for any Feb 29 / weekday combination to recur.
_MAX_DAYS = 366 * 29
_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A parsed expression: the set of allowed values of each field (weekdays: 0 = Sunday)."""

    expr: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    #: True when the field starts with ``*`` (Vixie cron's "unrestricted" flag for the day OR rule).
    days_star: bool
    weekdays_star: bool

    @classmethod
    def parse(cls, expr: str) -> CronExpression:
        return parse(expr)

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = day.isoweekday() % 7 in self.weekdays
        if self.days_star or self.weekdays_star:
            return dom and dow
        return dom or dow

    def matches(self, when: datetime, tz: str | tzinfo | None = None) -> bool:
        """True if ``when`` (aware) is a wall-clock minute of this expression in ``tz``."""
        local = _aware(when, "when").astimezone(resolve_tz(tz))
        return (
            local.second == 0 and local.microsecond == 0 and local.minute in self.minutes
            and local.hour in self.hours and self.matches_day(local.date())
        )

    def next_fire(self, after: datetime, tz: str | tzinfo | None = None) -> datetime:
        """The first fire time strictly after ``after``, as an aware UTC datetime."""
        zone = resolve_tz(tz)
        pivot = _aware(after, "after").astimezone(UTC)
        local = pivot.astimezone(zone)
        floor = local.replace(tzinfo=None) - timedelta(hours=3)
        for wall in self._walls(local.date(), forward=True):
            if wall < floor:
                continue
            instant = _instant(wall, zone)
            if instant > pivot:
                return instant
        raise CronError(f"cron expression {self.expr!r} has no fire time within {_MAX_DAYS // 366} years after {after}")

    def prev_fire(self, at_or_before: datetime, tz: str | tzinfo | None = None) -> datetime:
        """The last fire time at or before ``at_or_before``, as an aware UTC datetime."""
        zone = resolve_tz(tz)
        pivot = _aware(at_or_before, "at_or_before").astimezone(UTC)
        local = pivot.astimezone(zone)
        ceiling = local.replace(tzinfo=None) + timedelta(hours=3)
        for wall in self._walls(local.date() + timedelta(days=1), forward=False):
            if wall > ceiling:
                continue
            instant = _instant(wall, zone)
            if instant <= pivot:
                return instant
        raise CronError(
            f"cron expression {self.expr!r} has no fire time within {_MAX_DAYS // 366} years before {at_or_before}"
        )

    def _walls(self, start: date, *, forward: bool) -> Iterator[datetime]:
        """Matching naive wall-clock minutes from ``start`` on (or back), at most ``_MAX_DAYS`` days."""
        step = timedelta(days=1 if forward else -1)
        hours = self.hours if forward else self.hours[::-1]
        minutes = self.minutes if forward else self.minutes[::-1]
        day = start
        for _ in range(_MAX_DAYS):
            if self.matches_day(day):
                for hour in hours:
                    for minute in minutes:
                        yield datetime(day.year, day.month, day.day, hour, minute)
            try:
                day += step
            except OverflowError:
                return

    def __str__(self) -> str:
        return self.expr


def resolve_tz(tz: str | tzinfo | None) -> tzinfo:
    """``None`` and ``"UTC"`` give UTC; other names are looked up with :mod:`zoneinfo`."""
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str) or not tz:
        raise CronError(f"time zone must be an IANA name such as 'Europe/Paris' or a tzinfo, got {tz!r}")
    if tz.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(f"unknown time zone {tz!r} (expected an IANA name such as 'Europe/Paris')") from None


def parse(expr: str) -> CronExpression:
    """Parse ``expr``; raises :class:`~minijobs.errors.CronError` (a ``ValueError``) if it is malformed."""
    if not isinstance(expr, str):
        raise CronError(f"cron expression must be a str, got {type(expr).__name__}")
    return _parse(expr)


@functools.lru_cache(maxsize=512)
def _parse(expr: str) -> CronExpression:
    if len(expr) > _MAX_LENGTH:
        raise CronError(f"cron expression is longer than {_MAX_LENGTH} characters")
    text = expr.strip()
    if text.startswith("@"):
        expanded = MACROS.get(text.lower())
        if expanded is None:
            raise CronError(f"unknown cron macro {text!r}; known: {', '.join(sorted(MACROS))}")
        text = expanded
    parts = text.split()
    if len(parts) != 5:
        raise CronError(
            f"cron expression {expr!r} needs 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    sets = [_parse_field(expr, part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    minutes, hours, days, months, weekdays = sets
    weekdays = {0 if d == 7 else d for d in weekdays}
    cron = CronExpression(
        expr=expr,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(weekdays),
        days_star=parts[2].startswith("*"),
        weekdays_star=parts[4].startswith("*"),
    )
    _check_feasible(cron)
    return cron


def _parse_field(expr: str, text: str, label: str, low: int, high: int, names: dict[str, int] | None) -> set[int]:
    def fail(why: str) -> CronError:
        return CronError(f"cron expression {expr!r}: {label} field {text!r}: {why}")

    def value(token: str) -> int:
        if names is not None and token.lower() in names:
            return names[token.lower()]
        if not _NUMBER.fullmatch(token):
            hint = f" or a name ({', '.join(names)})" if names else ""
            raise fail(f"{token!r} is not a number{hint}")
        number = int(token)
        if not low <= number <= high:
            raise fail(f"{number} is outside {low}-{high}")
        return number

    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise fail("empty list item")
        range_text, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _NUMBER.fullmatch(step_text) or not 1 <= int(step_text) <= high:
                raise fail(f"step {step_text!r} must be a number from 1 to {high}")
            step = int(step_text)
        if range_text == "*":
            first, last = low, (6 if label == "day-of-week" else high)
        elif "-" in range_text:
            first_text, _, last_text = range_text.partition("-")
            first, last = value(first_text), value(last_text)
            if first > last:
                raise fail(f"range {range_text!r} runs backwards")
        else:
            first = value(range_text)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return values


def _check_feasible(cron: CronExpression) -> None:
    """Refuse expressions whose days can never exist (``0 0 30 2 *``), so searches never run dry."""
    if not cron.days_star and not cron.weekdays_star:
        return  # "or": every listed weekday occurs every week
    for month in cron.months:
        longest = calendar.monthrange(2000, month)[1]  # 2000 is a leap year: Feb has 29 days
        if any(day <= longest for day in cron.days):
            return
    raise CronError(f"cron expression {cron.expr!r} can never fire: no selected month has the selected days")


def _aware(when: datetime, label: str) -> datetime:
    if not isinstance(when, datetime):
        raise CronError(f"{label} must be a datetime, got {type(when).__name__}")
    if when.utcoffset() is None:
        raise CronError(f"{label} must be timezone-aware (e.g. datetime.now(UTC)), got naive {when}")
    return when


def _exists(wall: datetime, zone: tzinfo) -> datetime | None:
    instant = wall.replace(tzinfo=zone).astimezone(UTC)
    return instant if instant.astimezone(zone).replace(tzinfo=None) == wall else None


def _instant(wall: datetime, zone: tzinfo) -> datetime:
    """The UTC instant of a wall-clock time: the first occurrence if it repeats, the end of the gap if skipped."""
    if zone is UTC:
        return wall.replace(tzinfo=UTC)
    instant = _exists(wall, zone)  # fold=0: the first of two occurrences
    if instant is not None:
        return instant
    probe = wall
    for _ in range(48 * 60):  # no real-world gap is longer than a day
        probe += _MINUTE
        instant = _exists(probe, zone)
        if instant is not None:
            return instant
    raise CronError(f"{wall} does not exist in {zone} and no valid time follows within two days")


def next_fire(expr: str | CronExpression, after: datetime, tz: str | tzinfo | None = None) -> datetime:
    """The first fire time of ``expr`` strictly after ``after`` (aware), in ``tz`` (default UTC); returns UTC."""
    cron = expr if isinstance(expr, CronExpression) else parse(expr)
    return cron.next_fire(after, tz)


def prev_fire(expr: str | CronExpression, at_or_before: datetime, tz: str | tzinfo | None = None) -> datetime:
    """The last fire time of ``expr`` at or before ``at_or_before`` (aware); returns UTC."""
    cron = expr if isinstance(expr, CronExpression) else parse(expr)
    return cron.prev_fire(at_or_before, tz)
