"""Cron: enqueue jobs on schedules, each (schedule, fire time) exactly once across all processes.

Schedules are declared in code or configuration::

    Cron(schedules=[CronSchedule("nightly", "0 3 * * *", job=report, tz="Europe/Paris")])

    [[plugins.cron.schedules]]          # minijobs.toml
    name = "nightly"
    expression = "0 3 * * *"
    job = "myapp.report"                # a name registered with @app.job, never imported
    tz = "Europe/Paris"

Exactly once: firing a slot inserts ``(schedule, slot)`` into
``minijobs_cron_slots`` (primary key) *in the same transaction* as the job,
so whichever process gets there first enqueues it and every other attempt
inserts nothing.  The plugin runs on the leader; the slot table keeps the
guarantee through leadership handovers and concurrent ``app.drain()`` calls.

Time comes from ``app.clock``, so a test's ``FakeClock`` drives schedules,
and ``app.drain()`` fires the slots that are due before running jobs.

Misfires (the process was down when slots fell due), per schedule:

* ``misfire="once"`` (default): one catch-up run for the latest missed slot,
  however many were missed (marked ``meta["catch_up"] = True``).
* ``misfire="skip"``: slots later than ``misfire_grace_s`` are recorded as
  skipped and never run.

A schedule seen for the first time starts from that moment: it does not
catch up slots from before it existed.  See :mod:`minijobs.cron` for the
expression syntax and what happens around daylight-saving changes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .. import payload
from ..cron import CronExpression, parse, resolve_tz
from ..errors import ConfigurationError, CronError, UnknownJobError
from ..plugin import Plugin, PluginScope, check_config
from ..registry import BoundJob, EnqueueRequest, JobFunction
from ..store import SlotKind
from .leadership import IDENTIFIER as LEADERSHIP

if TYPE_CHECKING:
    from ..app import App
    from ..worker import Worker

logger = logging.getLogger(__name__)

IDENTIFIER = "minijobs.cron"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}")

Misfire = Literal["once", "skip"]
_SCHEDULE_SCHEMA = {
    "name": str,
    "expression": str,
    "job": str,
    "args": list[Any],
    "kwargs": dict[str, Any],
    "tz": str,
    "misfire": Literal["once", "skip"],
    "misfire_grace_s": float,
}


@dataclass(frozen=True)
class CronSchedule:
    """One schedule: enqueue ``job(*args, **kwargs)`` at every fire time of ``expression`` in ``tz``.

    ``job`` is a function decorated with ``@app.job``, one with options
    (``fn.options(queue="low")``) or a registered job name.  Arguments are
    checked as JSON now, not at the first firing.
    """

    name: str
    expression: str
    job: JobFunction[..., Any] | BoundJob[..., Any] | str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tz: str | tzinfo = "UTC"
    misfire: Misfire = "once"
    misfire_grace_s: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigurationError(
                f"cron schedule name {self.name!r} is invalid: 1-200 characters from letters, digits, '_.:-'"
            )
        parse(self.expression)
        resolve_tz(self.tz)
        if self.misfire not in ("once", "skip"):
            raise ConfigurationError(f"cron schedule {self.name!r}: misfire must be 'once' or 'skip', got {self.misfire!r}")
        grace = self.misfire_grace_s
        if isinstance(grace, bool) or not isinstance(grace, int | float) or not math.isfinite(grace) or grace < 0:
            raise ConfigurationError(f"cron schedule {self.name!r}: misfire_grace_s must be a number >= 0, got {grace!r}")
        if not isinstance(self.job, str) and not hasattr(self.job, "spec"):
            raise ConfigurationError(
                f"cron schedule {self.name!r}: job must be an @app.job function or a registered name, got {self.job!r}"
            )
        if not isinstance(self.args, list | tuple):
            raise ConfigurationError(f"cron schedule {self.name!r}: args must be a list, got {type(self.args).__name__}")
        if not isinstance(self.kwargs, Mapping):
            raise ConfigurationError(f"cron schedule {self.name!r}: kwargs must be a mapping, got {type(self.kwargs).__name__}")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        payload.encode_call(tuple(self.args), dict(self.kwargs), max_bytes=payload.DEFAULT_MAX_BYTES)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = IDENTIFIER) -> CronSchedule:
        """Build from a plain mapping (a ``[[plugins.cron.schedules]]`` TOML table); ``job`` is a registered name."""
        values = check_config(where, data, _SCHEDULE_SCHEMA)
        missing = [key for key in ("name", "expression", "job") if key not in values]
        if missing:
            raise ConfigurationError(f"{where}: missing option(s) {', '.join(repr(m) for m in missing)}")
        try:
            return cls(**values)
        except (CronError, ConfigurationError) as exc:
            raise ConfigurationError(f"{where}: {exc}") from None

    @property
    def cron(self) -> CronExpression:
        return parse(self.expression)

    @property
    def zone(self) -> tzinfo:
        return resolve_tz(self.tz)

    @property
    def job_name(self) -> str:
        job = self.job
        if isinstance(job, str):
            return job
        function: Any = getattr(job, "function", job)
        return str(function.name)

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (UTC)."""
        return self.cron.next_fire(after, self.zone)


@dataclass(frozen=True, slots=True)
class Fired:
    """A slot this process handled: enqueued as ``job_id``, or skipped (``job_id`` None)."""

    schedule: str
    slot: datetime
    job_id: int | None
    catch_up: bool = False


class Cron(Plugin):
    """Enqueues the jobs of its schedules when they fall due (on the leader; see the module docstring).

    ``keep_slots_s`` (default 7 days) is how long fired-slot records are kept
    before the Pruner's cleanup removes them (each schedule's latest stays).
    """

    config_schema: ClassVar[Mapping[str, Any]] = {"schedules": list[Any], "keep_slots_s": float}

    keep_slots_s: float

    def __init__(self, schedules: Iterable[CronSchedule | Mapping[str, Any]] = (), *, keep_slots_s: float = 7 * 86400.0) -> None:
        super().__init__()
        self._schedules: tuple[CronSchedule, ...] = ()
        self.keep_slots_s = 7 * 86400.0
        self.configure({"schedules": list(schedules), "keep_slots_s": keep_slots_s})

    @classmethod
    def get_identifier(cls) -> str:
        return IDENTIFIER

    @classmethod
    def get_dependencies(cls) -> tuple[str, ...]:
        return (LEADERSHIP,)

    @classmethod
    def get_scope(cls) -> PluginScope:
        return PluginScope.LEADER

    def apply_config(self, values: dict[str, Any]) -> None:
        if "keep_slots_s" in values and not values["keep_slots_s"] > 0:
            raise ConfigurationError(f"{IDENTIFIER}: option 'keep_slots_s' must be > 0, got {values['keep_slots_s']!r}")
        if "schedules" in values:
            schedules: list[CronSchedule] = []
            for i, item in enumerate(values.pop("schedules")):
                if isinstance(item, CronSchedule):
                    schedules.append(item)
                elif isinstance(item, Mapping):
                    schedules.append(CronSchedule.from_mapping(item, where=f"{IDENTIFIER}: schedules[{i}]"))
                else:
                    raise ConfigurationError(
                        f"{IDENTIFIER}: option 'schedules[{i}]' must be a CronSchedule or a table, got {item!r}"
                    )
            names = [s.name for s in schedules]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ConfigurationError(f"{IDENTIFIER}: schedule names must be unique, repeated: {duplicates}")
            self._schedules = tuple(schedules)
        super().apply_config(values)

    def schedules(self) -> tuple[CronSchedule, ...]:
        return self._schedules

    def next_fire_times(self, schedule: CronSchedule, *, after: datetime, count: int = 1) -> list[datetime]:
        """The next ``count`` fire times of ``schedule`` after ``after`` (UTC), e.g. for a CLI listing."""
        times: list[datetime] = []
        for _ in range(count):
            after = schedule.next_fire(after)
            times.append(after)
        return times

    # -- running ---------------------------------------------------------------

    def check(self, app: App) -> None:
        """Raise :class:`~minijobs.ConfigurationError` for the first schedule ``app`` cannot enqueue.

        That is a job name not registered in ``app`` (in this process), or a
        job function of another App.  Workers call it when they start (before
        any job runs) and ``minijobs cron list`` can call it, so a typo in
        ``minijobs.toml`` is one line at start-up, not a plugin that crashes at
        every restart.
        """
        for schedule in self._schedules:
            try:
                request = self._request(app, schedule, {})
            except UnknownJobError as exc:
                registered = ", ".join(sorted(app.registry)) or "none"
                raise ConfigurationError(f"{exc} (registered: {registered})") from None
            if request.spec.queue not in app.enqueue_queues:
                raise ConfigurationError(
                    f"cron schedule {schedule.name!r}: its job {request.function.name!r} goes to queue "
                    f"{request.spec.queue!r}, which this App does not declare"
                )

    def migrate(self, app: App, to_version: int | None = None) -> int:
        """The slot table is the store's own (a built-in schema), not SQL of this plugin."""
        return app.store.migrate_component(IDENTIFIER, to_version=to_version)

    async def run(self, worker: Worker, app: App) -> None:
        while True:
            await app.call_store(self.fire_due, app)  # several store calls: all on the store thread
            if not self._schedules:
                return
            now = datetime.fromtimestamp(app.clock.now(), UTC)
            wake_at = min(s.next_fire(now) for s in self._schedules)
            if not await self.sleep_until(wake_at.timestamp()):
                return

    async def on_drain(self, worker: Worker, app: App) -> None:
        await app.call_store(self.fire_due, app)

    def fire_due(self, app: App) -> list[Fired]:
        """Enqueue (or skip, per misfire policy) the latest due slot of every schedule; return what this call did."""
        if not self._schedules:
            return []
        now = app.clock.now()
        now_dt = datetime.fromtimestamp(now, UTC)
        last = app.store.cron_last_slots()
        fired: list[Fired] = []
        for schedule in self._schedules:
            previous = last.get(schedule.name)
            if previous is None:
                # First sight: slots from this moment on fire (one due exactly now included); no catch-up.
                previous = math.ceil(now) - 1
                self._record(app, schedule.name, previous, "baseline", now)
            latest = schedule.cron.prev_fire(now_dt, schedule.zone)
            slot = int(latest.timestamp())
            if slot <= previous:
                continue
            if schedule.misfire == "skip" and now - slot > schedule.misfire_grace_s:
                if self._record(app, schedule.name, slot, "skipped", now):
                    logger.warning("cron %s: slot %s missed by %.0f s; skipped (misfire='skip')",
                                   schedule.name, latest.isoformat(), now - slot)
                    fired.append(Fired(schedule.name, latest, None))
                continue
            first_due = schedule.cron.next_fire(datetime.fromtimestamp(previous, UTC), schedule.zone)
            catch_up = first_due < latest
            job_id = self._fire(app, schedule, slot, latest, catch_up, now)
            if job_id is not None:
                fired.append(Fired(schedule.name, latest, job_id, catch_up))
        return fired

    def _fire(self, app: App, schedule: CronSchedule, slot: int, at: datetime, catch_up: bool, now: float) -> int | None:
        meta: dict[str, Any] = {"cron": schedule.name, "slot": at.isoformat()}
        if catch_up:
            meta["catch_up"] = True
        request = self._request(app, schedule, meta)
        refs = app.enqueue_for_cron_slot(schedule.name, slot, request, now=now)
        if not refs:
            return None  # another process (or a drain) fired this slot first
        logger.info("cron %s: enqueued job %d for %s%s", schedule.name, refs[0].id, at.isoformat(),
                    " (catch-up for missed slots)" if catch_up else "")
        return refs[0].id

    def _request(self, app: App, schedule: CronSchedule, meta: dict[str, Any]) -> EnqueueRequest:
        job = schedule.job
        if isinstance(job, str):
            function = app.registry.get(job)
            if function is None:
                raise UnknownJobError(
                    f"cron schedule {schedule.name!r}: no job named {job!r} is registered in this process"
                )
            spec = function.spec
        elif isinstance(job, BoundJob):
            function, spec = job.function, job.spec
        elif isinstance(job, JobFunction):
            function, spec = job, job.spec
        else:  # pragma: no cover - CronSchedule checks this
            raise ConfigurationError(f"cron schedule {schedule.name!r}: unusable job {job!r}")
        if function.app is not app:
            raise ConfigurationError(f"cron schedule {schedule.name!r}: job {function.name!r} is registered on another App")
        if meta:
            spec = dataclasses.replace(spec, meta={**spec.meta, **meta})
        return EnqueueRequest(function, tuple(schedule.args), dict(schedule.kwargs), spec)

    def _record(self, app: App, name: str, slot: int, kind: SlotKind, now: float) -> bool:
        return app.store.record_cron_slot(name, slot, kind=kind, now=now)

    # -- storage ---------------------------------------------------------------

    def get_tables(self) -> Sequence[str]:
        return ("minijobs_cron_slots",)

    def cleanup(self, app: App) -> int:
        """Delete slot records older than ``keep_slots_s`` (each schedule keeps its latest)."""
        before = math.floor(app.clock.now() - self.keep_slots_s)
        return app.store.prune_cron_slots(before=before)
