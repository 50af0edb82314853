"""Cron: the pure expression parser (minijobs.cron) and the Cron plugin (minijobs.plugins.cron)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import minijobs
from minijobs.cron import CronError, next_fire, parse, prev_fire
from minijobs.plugins import Cron, CronSchedule, Leadership, from_config
from minijobs.testing import FakeClock

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def fires(expr: str, after: datetime, n: int, tz: Any = None) -> list[datetime]:
    out = []
    for _ in range(n):
        after = next_fire(expr, after, tz)
        out.append(after)
    return out


# -- parser -------------------------------------------------------------------------


def test_fields_ranges_steps_lists() -> None:
    cron = parse("*/15 9-17 1,15 * *")
    assert cron.minutes == (0, 15, 30, 45)
    assert cron.hours == tuple(range(9, 18))
    assert cron.days == {1, 15}
    assert cron.months == set(range(1, 13))
    assert parse("5-20/5 * * * *").minutes == (5, 10, 15, 20)
    assert parse("50/5 * * * *").minutes == (50, 55)  # a/n: from a to the field's maximum
    assert parse("1,2,3-5,30-59/10 * * * *").minutes == (1, 2, 3, 4, 5, 30, 40, 50)


def test_names_are_case_insensitive_and_sunday_is_0_or_7() -> None:
    assert parse("0 0 * jan-mar,DEC *").months == {1, 2, 3, 12}
    assert parse("0 0 * * Mon-FRI").weekdays == {1, 2, 3, 4, 5}
    assert parse("0 0 * * 7").weekdays == {0}
    assert parse("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert parse("0 0 * * sun").weekdays == {0}


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
    ],
)
def test_macros_match_their_expansion(macro: str, expanded: str) -> None:
    start = utc(2024, 2, 27, 13, 7)
    assert fires(macro, start, 5) == fires(expanded, start, 5)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "needs 5 fields"),
        ("* * * * * *", "needs 5 fields"),
        ("", "needs 5 fields"),
        ("60 * * * *", "outside 0-59"),
        ("* 24 * * *", "outside 0-23"),
        ("* * 0 * *", "outside 1-31"),
        ("* * * 13 *", "outside 1-12"),
        ("* * * * 8", "outside 0-7"),
        ("*/0 * * * *", "step"),
        ("*/x * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("1,,2 * * * *", "empty list item"),
        ("-1 * * * *", "not a number"),
        ("+1 * * * *", "not a number"),
        ("mon * * * *", "not a number"),  # names only in month and weekday fields
        ("* * * foo *", "not a number or a name"),
        ("@reboot", "unknown cron macro"),
        ("0 0 31 2 *", "can never fire"),
        ("0 0 30,31 2 *", "can never fire"),
        ("0 0 31 4,6,9,11 *", "can never fire"),
    ],
)
def test_malformed_expressions_raise_cron_error(expr: str, message: str) -> None:
    with pytest.raises(CronError, match=message) as info:
        parse(expr)
    assert isinstance(info.value, ValueError) and isinstance(info.value, minijobs.MinijobsError)


def test_non_string_expression_and_bad_arguments() -> None:
    with pytest.raises(CronError):
        parse(["* * * * *"])  # type: ignore[arg-type]
    with pytest.raises(CronError, match="timezone-aware"):
        next_fire("* * * * *", datetime(2024, 1, 1))
    with pytest.raises(CronError, match="unknown time zone"):
        next_fire("* * * * *", utc(2024, 1, 1), "Mars/Olympus_Mons")
    with pytest.raises(CronError, match="longer than"):
        parse("1," * 600 + "1 * * * *")


def test_next_fire_basics() -> None:
    assert next_fire("0 3 * * *", utc(2024, 1, 1, 2, 59, 59)) == utc(2024, 1, 1, 3)
    assert next_fire("0 3 * * *", utc(2024, 1, 1, 3)) == utc(2024, 1, 2, 3)  # strictly after
    assert next_fire("* * * * *", utc(2024, 1, 1, 0, 0, 30)) == utc(2024, 1, 1, 0, 1)
    assert next_fire("59 23 31 12 *", utc(2024, 1, 1)) == utc(2024, 12, 31, 23, 59)
    assert fires("*/20 * * * *", utc(2024, 1, 1, 23, 30), 3) == [
        utc(2024, 1, 1, 23, 40), utc(2024, 1, 2, 0, 0), utc(2024, 1, 2, 0, 20)
    ]
    assert next_fire("0 0 1 * *", utc(2024, 1, 31, 12)) == utc(2024, 2, 1)
    # Results are UTC whatever the zone of the input.
    result = next_fire("0 12 * * *", datetime(2024, 1, 1, 13, tzinfo=PARIS))
    assert result.tzinfo is UTC and result == utc(2024, 1, 2, 12)


def test_prev_fire_is_inclusive() -> None:
    assert prev_fire("*/15 * * * *", utc(2024, 1, 1, 0, 7)) == utc(2024, 1, 1, 0, 0)
    assert prev_fire("*/15 * * * *", utc(2024, 1, 1, 0, 15)) == utc(2024, 1, 1, 0, 15)
    assert prev_fire("0 3 * * *", utc(2024, 3, 1, 2)) == utc(2024, 2, 29, 3)


def test_feb_29_waits_for_a_leap_year_without_hanging() -> None:
    started = time.perf_counter()
    assert next_fire("0 0 29 2 *", utc(2024, 3, 1)) == utc(2028, 2, 29)
    assert next_fire("0 0 29 2 *", utc(2096, 3, 1)) == utc(2104, 2, 29)  # 2100 is not a leap year
    assert time.perf_counter() - started < 2.0  # bounded search, not a hang (generous for slow CI)


def test_day_of_month_and_weekday_or_semantics() -> None:
    # Both restricted: the 13th OR any Friday.
    got = fires("0 0 13 * fri", utc(2024, 9, 1), 4)
    assert got == [utc(2024, 9, 6), utc(2024, 9, 13), utc(2024, 9, 20), utc(2024, 9, 27)]
    assert next_fire("0 0 13 * fri", utc(2024, 10, 12)) == utc(2024, 10, 13)  # a Sunday, but the 13th
    # Only weekday restricted: Fridays only.
    assert fires("0 0 * * fri", utc(2024, 9, 1), 2) == [utc(2024, 9, 6), utc(2024, 9, 13)]
    # Only day restricted: the 13th only.
    assert fires("0 0 13 * *", utc(2024, 9, 1), 2) == [utc(2024, 9, 13), utc(2024, 10, 13)]
    # Vixie: a field starting with "*" counts as unrestricted, so */2 means AND: odd days that are Mondays.
    assert fires("0 0 */2 * mon", utc(2023, 12, 31), 3) == [utc(2024, 1, 1), utc(2024, 1, 15), utc(2024, 1, 29)]


def test_time_zone_shifts_fire_times() -> None:
    assert next_fire("0 3 * * *", utc(2024, 1, 10), "Europe/Paris") == utc(2024, 1, 10, 2)  # CET = UTC+1
    assert next_fire("0 3 * * *", utc(2024, 7, 10), "Europe/Paris") == utc(2024, 7, 10, 1)  # CEST = UTC+2
    assert next_fire("0 9 * * *", utc(2024, 1, 10), NEW_YORK) == utc(2024, 1, 10, 14)


def test_fall_back_never_fires_twice() -> None:
    # Europe/Paris, 2024-10-27: 03:00 CEST -> 02:00 CET, so 02:00-02:59 happens twice.
    daily = fires("30 2 * * *", utc(2024, 10, 26, 12), 2, PARIS)
    assert daily == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]  # first occurrence only
    # From inside the repeated hour (second pass), the same wall time does not fire again.
    assert next_fire("30 2 * * *", utc(2024, 10, 27, 1, 10), PARIS) == utc(2024, 10, 28, 1, 30)
    # A frequent schedule fires each wall-clock minute once: the second pass of the hour is skipped.
    quarter = fires("*/15 * * * *", utc(2024, 10, 27, 0, 40), 5, PARIS)
    assert quarter == [
        utc(2024, 10, 27, 0, 45),  # 02:45 CEST (first pass)
        utc(2024, 10, 27, 2, 0),  # 03:00 CET: 02:00-02:45 CET are not repeated
        utc(2024, 10, 27, 2, 15),
        utc(2024, 10, 27, 2, 30),
        utc(2024, 10, 27, 2, 45),
    ]
    assert len(set(quarter)) == len(quarter)


def test_spring_forward_fires_once_at_end_of_gap() -> None:
    # Europe/Paris, 2024-03-31: 02:00 CET -> 03:00 CEST; 02:00-02:59 do not exist.
    assert next_fire("30 2 * * *", utc(2024, 3, 30, 12), PARIS) == utc(2024, 3, 31, 1)  # 03:00 CEST
    assert next_fire("30 2 * * *", utc(2024, 3, 31, 1), PARIS) == utc(2024, 4, 1, 0, 30)  # next day as usual
    # Skipped times coalesce with 03:00 into one firing.
    got = fires("*/20 * * * *", utc(2024, 3, 31, 0, 30), 4, PARIS)
    assert got == [utc(2024, 3, 31, 0, 40), utc(2024, 3, 31, 1, 0), utc(2024, 3, 31, 1, 20), utc(2024, 3, 31, 1, 40)]
    # New York, 2024-03-10: 02:30 does not exist -> 03:00 EDT = 07:00 UTC.
    assert next_fire("30 2 * * *", utc(2024, 3, 10), NEW_YORK) == utc(2024, 3, 10, 7)


def test_matches() -> None:
    cron = parse("0 3 * * *")
    assert cron.matches(utc(2024, 1, 1, 2), "Europe/Paris")
    assert not cron.matches(utc(2024, 1, 1, 3), "Europe/Paris")
    assert not cron.matches(utc(2024, 1, 1, 2, 0, 1), "Europe/Paris")


# -- plugin -------------------------------------------------------------------------


def make_cron_app(db_path: Path, clock: FakeClock, schedules: list[CronSchedule] | None = None,
                  **kwargs: Any) -> tuple[minijobs.App, Cron]:
    cron = Cron(schedules or [])
    app = minijobs.App(db_path, clock=clock, plugins=[Leadership(), cron], **kwargs)
    return app, cron


def test_drain_fires_due_slots_with_a_fake_clock(db_path: Path) -> None:
    clock = FakeClock(datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC))
    app, cron = make_cron_app(db_path, clock)
    ran: list[str] = []

    @app.job
    def tick(label: str) -> str:
        ran.append(label)
        return label

    cron.configure({"schedules": [CronSchedule("every-5", "*/5 * * * *", job=tick, args=["five"])]})
    assert app.drain() == 0  # first sight: starts now, no catch-up of earlier slots
    clock.advance(4 * 60)  # 00:04:30
    assert app.drain() == 0
    clock.advance(60)  # 00:05:30
    assert app.drain() == 1 and ran == ["five"]
    assert app.drain() == 0  # the slot fires once
    clock.advance(5 * 60)
    assert app.drain() == 1 and ran == ["five", "five"]
    jobs = app.jobs(name=tick.name)
    assert [j.meta for j in reversed(jobs)] == [
        {"cron": "every-5", "slot": "2030-01-01T00:05:00+00:00"},
        {"cron": "every-5", "slot": "2030-01-01T00:10:00+00:00"},
    ]


def test_misfire_once_runs_one_catch_up_not_hundreds(db_path: Path) -> None:
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    app, cron = make_cron_app(db_path, clock)

    @app.job
    def tick() -> None:
        return None

    cron.configure({"schedules": [CronSchedule("minutely", "* * * * *", job=tick)]})
    app.drain()
    clock.advance(3 * 86400 + 30)  # three days down: 4320 missed slots
    fired = cron.fire_due(app)
    assert len(fired) == 1 and fired[0].catch_up
    assert fired[0].slot == datetime(2030, 1, 4, 0, 0, tzinfo=UTC)  # the latest missed slot
    job = app.get(fired[0].job_id)  # type: ignore[arg-type]
    assert job.meta["catch_up"] is True
    assert cron.fire_due(app) == []
    clock.advance(60)
    fired = cron.fire_due(app)
    assert len(fired) == 1 and not fired[0].catch_up


def test_misfire_skip_drops_late_slots(db_path: Path) -> None:
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    app, cron = make_cron_app(db_path, clock)

    @app.job
    def tick() -> None:
        return None

    cron.configure({"schedules": [CronSchedule("hourly", "@hourly", job=tick, misfire="skip", misfire_grace_s=120)]})
    assert len(cron.fire_due(app)) == 1  # first sight at exactly 00:00: that slot is due now
    clock.advance(3600 + 60)  # 01:01: one minute late, within grace
    (fired,) = cron.fire_due(app)
    assert fired.job_id is not None
    clock.advance(3600 + 600)  # 02:11: ten minutes late
    (skipped,) = cron.fire_due(app)
    assert skipped.job_id is None and skipped.slot == datetime(2030, 1, 1, 2, tzinfo=UTC)
    assert cron.fire_due(app) == []  # recorded: not reconsidered
    assert len(app.jobs(name=tick.name)) == 2


def test_each_slot_enqueued_once_by_racing_apps(db_path: Path) -> None:
    """Two apps (own connections) firing the same slots concurrently: the slot table lets one win each."""
    clock = FakeClock(datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC))
    apps = []
    for _ in range(2):
        app, cron = make_cron_app(db_path, clock)

        @app.job(name="race.tick")
        def tick() -> None:
            return None

        cron.configure({"schedules": [CronSchedule("race", "* * * * *", job="race.tick")]})
        apps.append((app, cron))
    assert apps[0][1].fire_due(apps[0][0]) == []  # common baseline at 00:00:30
    barrier = threading.Barrier(2)
    fired: list[list[Any]] = [[], []]
    errors: list[BaseException] = []
    steps = 150

    def fire(i: int) -> None:
        app, cron = apps[i]
        try:
            for step in range(steps):
                barrier.wait(timeout=10)
                if i == 0:
                    clock.set(datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=step + 1))
                barrier.wait(timeout=10)
                fired[i].extend(cron.fire_due(app))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    jobs = apps[0][0].jobs(name="race.tick", limit=1000)
    slots = [job.meta["slot"] for job in jobs]
    assert len(slots) == steps and len(set(slots)) == steps
    assert len(fired[0]) + len(fired[1]) == steps
    for app, _ in apps:
        app.close()


@pytest.mark.slow
def test_each_slot_enqueued_once_across_processes(
    db_path: Path, subprocess_env: dict[str, str], python: str
) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from datetime import UTC, datetime
        import minijobs
        from minijobs.plugins import Cron, CronSchedule, Leadership
        from minijobs.testing import FakeClock
        start = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
        clock = FakeClock(start)
        cron = Cron([CronSchedule("race", "* * * * *", job="race.tick")])
        app = minijobs.App({str(db_path)!r}, clock=clock, plugins=[Leadership(), cron])

        @app.job(name="race.tick")
        def tick():
            return None

        app.open()
        print("ready", flush=True)
        sys.stdin.readline()  # start together, so the processes really race for each slot
        won = 0
        for minute in range(1, 301):
            clock.set(start + minute * 60)
            won += len(cron.fire_due(app))
        print(won)
        """
    )
    clock = FakeClock(datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC))
    app, cron = make_cron_app(db_path, clock, [CronSchedule("race", "* * * * *", job="race.tick")])

    @app.job(name="race.tick")
    def tick() -> None:
        return None

    assert cron.fire_due(app) == []  # baseline at 00:00:30, before the children start
    procs = [subprocess.Popen([python, "-c", script], env=subprocess_env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.close()
    wins = [int(p.stdout.read()) for p in procs]  # type: ignore[union-attr]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    for p in procs:
        p.stdout.close()  # type: ignore[union-attr]
    slots = [job.meta["slot"] for job in app.jobs(name="race.tick", limit=1000)]
    assert len(slots) == 300 and len(set(slots)) == 300
    assert sum(wins) == 300


def test_cron_runs_on_the_leader_and_follows_the_fake_clock(db_path: Path) -> None:
    clock = FakeClock(datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC))
    app, cron = make_cron_app(db_path, clock)
    done = threading.Event()
    ran: list[int] = []

    @app.job
    def tick(n: int) -> None:
        ran.append(n)
        done.set()

    cron.configure({"schedules": [CronSchedule("minutely", "* * * * *", job=tick, args=[7])]})
    with app.running() as worker:
        deadline = time.monotonic() + 10
        while not done.wait(0.05):  # until the leader's cron has started and seen the clock move
            assert time.monotonic() < deadline, "cron never fired"
            clock.advance(60)
        assert worker.is_leader
    assert ran and set(ran) == {7}


def test_schedule_validation() -> None:
    with pytest.raises(CronError):
        CronSchedule("bad", "61 * * * *", job="x")
    with pytest.raises(CronError, match="unknown time zone"):
        CronSchedule("bad", "* * * * *", job="x", tz="Nowhere/Town")
    with pytest.raises(minijobs.ConfigurationError, match="name"):
        CronSchedule("has space", "* * * * *", job="x")
    with pytest.raises(minijobs.ConfigurationError, match="misfire"):
        CronSchedule("m", "* * * * *", job="x", misfire="all")  # type: ignore[arg-type]
    with pytest.raises(minijobs.PayloadTypeError):
        CronSchedule("p", "* * * * *", job="x", args=[{1, 2}])
    with pytest.raises(minijobs.ConfigurationError, match="unique"):
        Cron([CronSchedule("a", "* * * * *", job="x"), CronSchedule("a", "@daily", job="y")])


UNKNOWN_JOB = r"cron schedule 'ghost': no job named 'not\.registered' is registered in this process \(registered: real\)"


def test_a_schedule_naming_an_unregistered_job_stops_the_worker_before_any_job_runs(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    app, cron = make_cron_app(db_path, clock, [CronSchedule("ghost", "* * * * *", job="not.registered")])

    @app.job(name="real")
    def real() -> None:
        return None

    ref = real.enqueue()
    with pytest.raises(minijobs.ConfigurationError, match=UNKNOWN_JOB):
        cron.check(app)
    with pytest.raises(minijobs.ConfigurationError, match=UNKNOWN_JOB):
        app.drain()
    with (caplog.at_level(logging.INFO, logger="minijobs"),
          pytest.raises(minijobs.ConfigurationError, match=UNKNOWN_JOB),
          app.running()):
        pytest.fail("the worker started")
    assert app.get(ref.id).state is minijobs.JobState.PENDING  # no job ran
    assert not any("restarting" in r.getMessage() for r in caplog.records)  # no crash-restart loop of the plugin
    app.close()


CLI_APP = textwrap.dedent(
    """
    from pathlib import Path

    import minijobs

    app = minijobs.App(Path(__file__).resolve().parent / "jobs.sqlite3")


    @app.job(name="real")
    def real() -> None:
        return None
    """
)
CLI_CONFIG = textwrap.dedent(
    """
    app = "cronapp:app"

    [plugins.cron]
    [[plugins.cron.schedules]]
    name = "ghost"
    expression = "* * * * *"
    job = "not.registered"
    """
)


def test_the_cli_worker_refuses_a_schedule_naming_an_unregistered_job_in_one_line(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    (tmp_path / "cronapp.py").write_text(CLI_APP)
    (tmp_path / "minijobs.toml").write_text(CLI_CONFIG)
    env = {**subprocess_env, "PYTHONPATH": f"{tmp_path}:{subprocess_env['PYTHONPATH']}"}
    proc = subprocess.run([sys.executable, "-m", "minijobs", "worker"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert re.fullmatch(f"minijobs: error: {UNKNOWN_JOB}", lines[-1]), proc.stderr
    assert "Traceback" not in proc.stderr and "restarting" not in proc.stderr
    listed = subprocess.run([sys.executable, "-m", "minijobs", "cron", "list"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 1 and listed.stdout == "", listed
    assert re.fullmatch(f"minijobs: error: {UNKNOWN_JOB}\n", listed.stderr), listed.stderr


def test_a_schedule_whose_job_goes_to_an_undeclared_queue_is_refused_at_start(db_path: Path) -> None:
    app, cron = make_cron_app(db_path, FakeClock(), [CronSchedule("typo", "* * * * *", job="mailer")])

    @app.job(name="mailer", queue="emial")
    def mailer() -> None:
        return None

    expected = "cron schedule 'typo': its job 'mailer' goes to queue 'emial', which this App does not declare"
    with pytest.raises(minijobs.ConfigurationError, match=re.escape(expected)):
        app.drain()
    app.close()


def test_configured_from_toml_with_job_names(db_path: Path) -> None:
    text = textwrap.dedent(
        """
        [plugins.leadership]
        lease_s = 5

        [plugins.cron]
        keep_slots_s = 3600

        [[plugins.cron.schedules]]
        name = "nightly"
        expression = "0 3 * * *"
        job = "reports.nightly"
        tz = "Europe/Paris"
        kwargs = { full = true }
        """
    )
    plugins = from_config(tomllib.loads(text)["plugins"])
    leadership, cron = plugins
    assert isinstance(cron, Cron) and isinstance(leadership, Leadership) and leadership.lease_s == 5.0
    (schedule,) = cron.schedules()
    assert (schedule.name, schedule.expression, schedule.job_name, schedule.tz) == (
        "nightly", "0 3 * * *", "reports.nightly", "Europe/Paris"
    )
    assert cron.next_fire_times(schedule, after=utc(2030, 1, 1), count=2) == [utc(2030, 1, 1, 2), utc(2030, 1, 2, 2)]
    clock = FakeClock(datetime(2030, 1, 1, tzinfo=UTC))
    app = minijobs.App(db_path, clock=clock, plugins=plugins)
    seen: list[bool] = []

    @app.job(name="reports.nightly")
    def nightly(*, full: bool) -> None:
        seen.append(full)

    app.drain()
    clock.set(datetime(2030, 1, 1, 2, 0, 1, tzinfo=UTC))
    assert app.drain() == 1 and seen == [True]


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"name": "x", "expression": "* * * * *"}, "missing option.*'job'"),
        ({"name": "x", "expression": "* * * * *", "job": "j", "when": 1}, "unknown option 'when'"),
        ({"name": "x", "expression": "* * * * *", "job": 3}, "'job' must be a string"),
        ({"name": "x", "expression": "* * *", "job": "j"}, "needs 5 fields"),
        ({"name": "x", "expression": "* * * * *", "job": "j", "misfire_grace_s": "1m"}, "misfire_grace_s"),
    ],
)
def test_bad_schedule_configuration_names_the_problem(schedule: dict[str, Any], message: str) -> None:
    with pytest.raises(minijobs.ConfigurationError, match=message) as info:
        from_config({"cron": {"schedules": [schedule]}})
    assert "schedules[0]" in str(info.value)


def test_cleanup_removes_old_slots_but_keeps_each_schedules_latest(db_path: Path) -> None:
    clock = FakeClock(datetime(2030, 1, 1, 0, 0, 30, tzinfo=UTC))
    app, cron = make_cron_app(db_path, clock)

    @app.job
    def tick() -> None:
        return None

    cron.configure({"keep_slots_s": 3600.0, "schedules": [
        CronSchedule("a", "*/10 * * * *", job=tick), CronSchedule("b", "@daily", job=tick),
    ]})
    for _ in range(12 * 6):  # 00:00:30 to 11:50:30 in 10-minute steps
        cron.fire_due(app)
        clock.advance(600)
    rows = app.store.query("t", "SELECT schedule, count(*) FROM minijobs_cron_slots GROUP BY schedule")
    assert dict(rows) == {"a": 72, "b": 1}  # a: baseline + 00:10 ... 11:50; b: baseline only
    removed = cron.cleanup(app)  # now 12:00:30: keeps slots after 11:00:30
    rows = app.store.query("t", "SELECT schedule, count(*) FROM minijobs_cron_slots GROUP BY schedule")
    assert dict(rows) == {"a": 5, "b": 1}  # b's only (latest) row stays even though it is old
    assert removed == 67
    # Schedules resume where they were: only the new 12:00 slot of "a" fires.
    (fired,) = cron.fire_due(app)
    assert (fired.schedule, fired.slot) == ("a", datetime(2030, 1, 1, 12, tzinfo=UTC))
