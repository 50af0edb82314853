"""Nothing is stored that cannot be read back (minijobs/limits.py), and a damaged row hides only itself.

Every value that reaches the database is checked where it is given: a typed
minijobs error at that call and the file left exactly as it was.  Rows damaged
anyway (written by another program) make only their own job unreadable.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from damaged_files import dump

import minijobs
from minijobs import App, ConfigurationError, CorruptDatabaseError, JobNotFoundError, JobState, Queue
from minijobs.testing import FakeClock


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    app = App(tmp_path / "jobs.sqlite3", plugins=[], clock=FakeClock())
    app.open()
    yield app
    app.close()


@pytest.fixture
def fn(app: App) -> minijobs.JobFunction[..., Any]:
    @app.job(name="limits.fn")
    def f(*args: Any, **kwargs: Any) -> str:
        return "ran"

    return f


FAR_ZONE = timezone(-timedelta(hours=23))

BAD_OPTIONS: list[dict[str, Any]] = [
    {"delay_s": 1e12},
    {"delay_s": 1e300},
    {"delay_s": 2**70},
    {"delay_s": float("inf")},
    {"timeout_s": 2**70},
    {"timeout_s": 1e300},
    {"max_attempts": 2**63},
    {"max_attempts": 2**31},
    {"priority": 2**63},
    {"unique_key": "key-\udc80"},
    {"unique_key": ""},
    {"meta": [1]},
    {"meta": "text"},
    {"run_at": datetime.max.replace(tzinfo=FAR_ZONE)},
    {"run_at": datetime.min.replace(tzinfo=timezone(timedelta(hours=23)))},
]


@pytest.mark.parametrize("options", BAD_OPTIONS, ids=lambda o: f"{next(iter(o))}={next(iter(o.values()))!r}"[:40])
def test_values_that_could_not_be_read_back_are_refused_where_given(app: App, fn: Any, options: dict[str, Any]) -> None:
    before = dump(Path(app.path))
    with pytest.raises(ConfigurationError):
        fn.options(**options).enqueue()
    assert dump(Path(app.path)) == before


def test_the_last_storable_time_is_accepted_and_reads_back(app: App, fn: Any) -> None:
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    ref = fn.options(run_at=last).enqueue()
    assert app.get(ref.id).scheduled_at == last
    century = fn.options(delay_s=99 * 365 * 86400, timeout_s=86400 * 365).enqueue()
    assert app.get(century.id).timeout_s == 86400 * 365
    assert [j.id for j in app.jobs()] == [century.id, ref.id]


@pytest.mark.parametrize("job_id", [2**63, 2**64, -(2**63) - 1, 10**30])
def test_ids_beyond_sqlite_integers_name_no_job(app: App, job_id: int) -> None:
    for call in (app.get, app.cancel, app.retry):
        with pytest.raises(JobNotFoundError, match=f"no job with id {job_id}"):
            call(job_id)


@pytest.mark.parametrize("delay_s", [float("inf"), float("nan"), 1e12, -1, True, "5"])
def test_retry_refuses_delays_that_cannot_be_stored(delay_s: Any) -> None:
    with pytest.raises(ConfigurationError):
        minijobs.Retry(delay_s=delay_s)


def test_a_job_raising_an_unstorable_retry_fails_with_that_error_and_the_listing_works(app: App) -> None:
    @app.job(name="limits.forever")
    def forever() -> None:
        raise minijobs.Retry(delay_s=float("inf"))

    ref = forever.enqueue()
    app.drain()
    job = app.get(ref.id)
    assert job.state is JobState.FAILED and job.errors[-1].type == "minijobs.ConfigurationError"
    assert [j.id for j in app.jobs()] == [ref.id]


@pytest.mark.parametrize("options", [{"base_s": 1e300}, {"max_s": 1e12}])
def test_backoff_refuses_delays_beyond_a_century(options: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        minijobs.Backoff(**options)


@pytest.mark.parametrize("option", ["lease_s", "grace_s", "busy_timeout_s", "poll_interval_s"])
def test_app_durations_beyond_a_century_are_refused(tmp_path: Path, option: str) -> None:
    with pytest.raises(ConfigurationError, match=option):
        App(tmp_path / "x.sqlite3", **{option: 2**70})
    assert not (tmp_path / "x.sqlite3").exists()


# -- damaged rows ----------------------------------------------------------------------------------------------

DAMAGE = [
    ("scheduled_at", 1e12),   # year 33658
    ("created_at", 1e300),    # beyond the platform's time_t
    ("completed_at", -1e15),
    ("state", "bogus"),
    ("meta", "{not json"),
    ("errors", '[{"at": 1e300}]'),
]


@pytest.mark.parametrize(("column", "value"), DAMAGE, ids=[c for c, _ in DAMAGE])
def test_a_damaged_row_hides_only_itself(
    app: App, fn: Any, column: str, value: Any, caplog: pytest.LogCaptureFixture, subprocess_env: dict[str, str]
) -> None:
    refs = [fn.enqueue(i) for i in range(3)]
    bad = refs[1].id
    app.store.execute_write("tamper", f"UPDATE minijobs_jobs SET {column}=? WHERE id=?", (value, bad))
    with pytest.raises(CorruptDatabaseError, match=f"job {bad}"):
        app.get(bad)
    assert [j.id for j in app.jobs()] == [refs[2].id, refs[0].id]
    assert any(f"job {bad}" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    counts = app.store.count_by_state()
    assert counts[JobState.PENDING] == (2 if column == "state" else 3)
    # The CLI lists the readable jobs and says on stderr which one it left out.
    listed = subprocess.run([sys.executable, "-m", "minijobs", "--db", app.path, "jobs", "list"], env=subprocess_env,
                            capture_output=True, text=True, timeout=60, check=True)
    ids = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert ids == [str(refs[2].id), str(refs[0].id)]
    assert f"job {bad}: its stored row is damaged" in listed.stderr and "Traceback" not in listed.stderr
    stats = subprocess.run([sys.executable, "-m", "minijobs", "--db", app.path, "stats"], env=subprocess_env,
                           capture_output=True, text=True, timeout=60, check=True)
    assert stats.stdout.startswith("jobs by state:")
    # The worker goes on: the readable jobs run.
    app.drain()
    assert {app.get(r.id).state for r in (refs[0], refs[2])} == {JobState.SUCCEEDED}


def test_a_row_written_with_an_undeclared_queue_by_another_app_is_still_listed(tmp_path: Path) -> None:
    other = App(tmp_path / "jobs.sqlite3", queues=[Queue("elsewhere")], plugins=[])
    other.job(name="limits.x", queue="elsewhere")(lambda: None).enqueue()
    other.close()
    app = App(tmp_path / "jobs.sqlite3", plugins=[])
    assert [j.queue for j in app.jobs()] == ["elsewhere"]
    app.close()


@pytest.mark.parametrize(("option", "value"), [("lease_s", 1e20), ("grace_s", -1), ("poll_interval_s", 0)])
def test_worker_durations_are_checked_like_the_apps(app: App, option: str, value: float) -> None:
    with pytest.raises(ConfigurationError, match=option), app.running(**{option: value}):
        pytest.fail("the worker started")
