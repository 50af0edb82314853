"""The App's read-only counts and statistics (what ``minijobs queues list``, ``stats`` and ``migrate`` show).

Every test writes real jobs to a SQLite file under ``tmp_path`` and moves a
:class:`~minijobs.testing.FakeClock`, so each count and time is known exactly.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from minijobs import App, Backoff, ConfigurationError, InvalidNameError, JobState, Queue
from minijobs.plugins import Cron, Leadership
from minijobs.testing import FakeClock

START = datetime(2030, 1, 1, tzinfo=UTC)
S, F, C = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def app(db_path: Path, clock: FakeClock) -> Iterator[App]:
    app = App(db_path, clock=clock, plugins=[], queues=[Queue("default"), Queue("mail")], remote_queues=["far"])

    @app.job(name="ok")
    def ok() -> int:
        return 1

    @app.job(name="bad")
    def bad() -> None:
        raise ValueError("no")

    yield app
    app.close()


def by_state(**counts: int) -> dict[JobState, int]:
    """Every state a key: the ones given, the others zero."""
    return {state: counts.get(state.value, 0) for state in JobState}


def finished(succeeded: int = 0, failed: int = 0, cancelled: int = 0) -> dict[JobState, int]:
    return {S: succeeded, F: failed, C: cancelled}


def test_counts_by_state_overall_per_queue_and_of_one_queue(app: App) -> None:
    ok, bad = app.registry["ok"], app.registry["bad"]
    assert app.counts() == by_state() and app.queue_counts() == {}
    ok.enqueue()
    ok.enqueue()
    app.cancel(ok.enqueue().id)
    bad.options(queue="mail").enqueue()
    ok.options(queue="mail", delay_s=100).enqueue()
    ok.options(queue="far").enqueue()  # another process's queue: counted, never run here
    app.drain()
    assert app.counts() == by_state(pending=2, succeeded=2, failed=1, cancelled=1)
    assert app.queue_counts() == {
        "default": by_state(succeeded=2, cancelled=1),
        "mail": by_state(pending=1, failed=1),
        "far": by_state(pending=1),
    }
    assert app.counts(queue="mail") == by_state(pending=1, failed=1)
    assert app.counts(queue="unused") == by_state()  # a valid name that has no jobs
    with pytest.raises(InvalidNameError):
        app.counts(queue="bad name")


def test_paused_queues_are_read_from_the_database(app: App, db_path: Path) -> None:
    assert app.paused_queues() == frozenset()
    app.pause_queue("mail")
    app.pause_queue("elsewhere")  # a queue this app does not declare
    app.resume_queue("mail")
    assert app.paused_queues() == frozenset({"elsewhere"})
    other = App(db_path, plugins=[])  # another App on the file (as another process would be)
    try:
        assert other.paused_queues() == frozenset({"elsewhere"})
        other.pause_queue("default")
    finally:
        other.close()
    assert app.paused_queues() == frozenset({"default", "elsewhere"})


def test_finished_counts_per_interval_by_state(app: App, clock: FakeClock) -> None:
    ok, bad = app.registry["ok"], app.registry["bad"]
    ok.enqueue()
    app.drain()  # succeeded at 0 s
    clock.advance(30)
    bad.enqueue()
    app.drain()  # failed at 30 s
    clock.advance(60)
    app.enqueue_many([ok.prepare(), ok.prepare()])
    app.cancel(ok.options(delay_s=10).enqueue().id)
    app.drain()  # two succeeded and one cancelled at 90 s
    clock.advance(200)
    ok.enqueue()
    app.drain()  # succeeded at 290 s

    assert app.finished_counts(since=START, intervals=3) == [finished(1, 1), finished(2, 0, 1), finished()]
    assert app.finished_counts(since=START, interval_s=120, intervals=3) == [
        finished(3, 1, 1), finished(), finished(1)]
    assert app.finished_counts(since=START) == [finished(1, 1)]  # one interval of 60 s by default
    # Intervals are half-open: the jobs of 90 s are not in [30 s, 90 s).
    assert app.finished_counts(since=START + timedelta(seconds=30)) == [finished(failed=1)]
    assert app.finished_counts(since=START + timedelta(seconds=29.5), interval_s=0.5) == [finished()]
    # The same instant in another time zone is the same window.
    tokyo = START.astimezone(timezone(timedelta(hours=9)))
    assert app.finished_counts(since=tokyo, intervals=2) == app.finished_counts(since=START, intervals=2)
    assert app.finished_counts(since=START + timedelta(days=1), intervals=2) == [finished(), finished()]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"since": datetime(2030, 1, 1)}, "since must be a timezone-aware datetime"),  # naive
        ({"since": 0.0}, "since must be a timezone-aware datetime"),
        ({"since": START, "interval_s": 0}, "interval_s must be a number of seconds > 0"),
        ({"since": START, "intervals": 0}, "intervals must be an int from 1"),
        ({"since": START, "intervals": 2.0}, "intervals must be an int from 1"),
    ],
)
def test_finished_counts_refuses_bad_windows(app: App, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        app.finished_counts(**options)


def test_oldest_due_at_is_when_the_longest_waiting_due_job_became_due(app: App, clock: FakeClock) -> None:
    ok = app.registry["ok"]
    assert app.oldest_due_at() is None
    ok.enqueue()
    clock.advance(10)
    ok.enqueue()
    ok.options(delay_s=100).enqueue()  # due at 110 s
    oldest = app.oldest_due_at()
    assert oldest == START and oldest is not None and oldest.tzinfo is UTC
    app.drain()  # runs the two due jobs; the delayed one is not due yet
    assert app.oldest_due_at() is None
    clock.advance(200)
    assert app.oldest_due_at() == START + timedelta(seconds=110)
    app.drain()
    assert app.oldest_due_at() is None


def test_oldest_due_at_counts_a_retry_from_when_it_fell_due(app: App, clock: FakeClock) -> None:
    @app.job(name="flaky", max_attempts=2, retry=Backoff(base_s=5, factor=1, jitter=0))
    def flaky() -> None:
        raise ValueError("again")

    ref = flaky.enqueue()
    app.drain()  # the first attempt fails; the retry is due at 5 s
    assert ref.get().state is JobState.RETRYING and app.oldest_due_at() is None
    clock.advance(20)
    assert app.oldest_due_at() == START + timedelta(seconds=5)


def test_schema_versions_are_the_ones_in_the_file(db_path: Path) -> None:
    app = App(db_path, plugins=[Leadership(), Cron()])
    try:
        versions = app.schema_versions()  # opens the app, which migrates
    finally:
        app.close()
    conn = sqlite3.connect(db_path)
    try:
        in_file = dict(conn.execute("SELECT component, version FROM minijobs_schema").fetchall())
    finally:
        conn.close()
    assert set(versions) == {"minijobs", "minijobs.leadership", "minijobs.cron"}
    assert versions == in_file and all(v >= 1 for v in versions.values())
    bare = App(db_path, plugins=[])  # a plugin not configured is not reported, though its tables exist
    try:
        assert bare.schema_versions() == {"minijobs": in_file["minijobs"]}
    finally:
        bare.close()
