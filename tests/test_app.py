"""The App end to end on a real file: store, job API, asyncio worker, retries, cancels, processes."""

from __future__ import annotations

import asyncio
import logging
import json
import os
import signal
import sqlite3
import subprocess
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import minijobs
from minijobs import worker as worker_module
from minijobs.store import Outcome
from minijobs.testing import FakeClock


def make_app(db_path: Path, **kwargs: Any) -> minijobs.App:
    kwargs.setdefault("plugins", [])
    return minijobs.App(db_path, **kwargs)


# -- store settings ----------------------------------------------------------


def test_store_applies_and_reads_back_pragmas(db_path: Path) -> None:
    app = make_app(db_path)
    app.open()
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    store_conn = app.store._conn
    assert store_conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    assert store_conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    app.close()
    full = make_app(db_path, durability="full", busy_timeout_s=1.5)
    assert full.store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert full.store._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1500
    full.close()


def test_bad_durability_is_a_configuration_error(db_path: Path) -> None:
    with pytest.raises(minijobs.ConfigurationError):
        minijobs.App(db_path, durability="fast")  # type: ignore[arg-type]


def test_schema_is_versioned_and_newer_schema_is_refused(db_path: Path) -> None:
    app = make_app(db_path)
    assert app.store.schema_version("minijobs") == len(minijobs.store.MIGRATIONS)
    app.store.execute_write("bump", "UPDATE minijobs_schema SET version=99 WHERE component='minijobs'")
    app.close()
    with pytest.raises(minijobs.SchemaVersionError, match="newer"):
        make_app(db_path).open()


def test_file_is_created_owner_only(db_path: Path) -> None:
    app = make_app(db_path)
    app.open()
    assert (db_path.stat().st_mode & 0o777) == 0o600
    app.close()


def test_memory_database_works(tmp_path: Path) -> None:
    app = minijobs.App(":memory:", plugins=[])

    @app.job
    def double(x: int) -> int:
        return x * 2

    ref = double.enqueue(21)
    assert app.drain() == 1
    assert app.get(ref.id).result == 42


# -- enqueue, run, results -----------------------------------------------------


def test_async_and_sync_jobs_run_and_store_json_results(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job
    async def add(a: int, b: int) -> int:
        return a + b

    @app.job
    def describe(name: str, *, tags: list[str]) -> dict[str, Any]:
        return {"name": name, "tags": tags, "n": None}

    r1 = add.enqueue(1, 2)
    r2 = describe.enqueue("x", tags=["a", "b"])
    assert app.get(r1.id).state is minijobs.JobState.PENDING
    assert app.drain() == 2
    j1, j2 = app.get(r1.id), app.get(r2.id)
    assert (j1.state, j1.result, j1.attempts) == (minijobs.JobState.SUCCEEDED, 3, 1)
    assert j2.result == {"name": "x", "tags": ["a", "b"], "n": None}
    assert j2.kwargs == {"tags": ["a", "b"]} and j2.args == ("x",)
    assert j1.completed_at is not None and j1.completed_at.tzinfo is UTC
    assert asyncio.run(add(2, 3)) == 5  # still callable as the plain function
    assert describe("y", tags=[]) == {"name": "y", "tags": [], "n": None}


def test_enqueue_async_and_wait_async(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job
    async def echo(x: str) -> str:
        return x

    async def main() -> minijobs.Job:
        async with app.worker():
            ref = await echo.enqueue_async("hi")
            return await ref.wait_async(timeout_s=10)

    job = asyncio.run(main())
    assert job.result == "hi"


def test_job_state_is_a_str_enum() -> None:
    assert minijobs.JobState("pending") is minijobs.JobState.PENDING
    assert [s.value for s in minijobs.JobState] == ["pending", "running", "retrying", "succeeded", "failed", "cancelled"]
    assert minijobs.JobState.FAILED == "failed"


def test_result_that_is_not_json_fails_the_attempt(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job(max_attempts=3)
    def bad() -> object:
        return {1, 2}

    ref = bad.enqueue()
    app.drain()
    job = app.get(ref.id)
    assert job.state is minijobs.JobState.FAILED  # not retried: the same code gives the same result
    assert "PayloadTypeError" in job.errors[0].type and "set" in job.errors[0].message


def test_enqueue_many_is_one_transaction(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job
    def f(x: Any) -> Any:
        return x

    refs = app.enqueue_many([f.prepare(i) for i in range(100)])
    assert [r.id for r in refs] == list(range(1, 101))
    with pytest.raises(minijobs.PayloadTypeError):
        app.enqueue_many([f.prepare(1), f.prepare({1, 2}), f.prepare(3)])
    assert len(app.jobs(limit=1000)) == 100  # nothing of the bad batch was written
    assert app.drain() == 100
    assert [j.result for j in reversed(app.jobs(limit=1000))] == list(range(100))


# -- ordering, scheduling, concurrency ------------------------------------------


def test_priority_then_fifo(db_path: Path) -> None:
    app = make_app(db_path, queues=[minijobs.Queue("default", concurrency=1)])
    seen: list[str] = []

    @app.job
    def record(tag: str) -> None:
        seen.append(tag)

    record.enqueue("low-1")
    record.options(priority=5).enqueue("high-1")
    record.enqueue("low-2")
    record.options(priority=5).enqueue("high-2")
    record.options(priority=-1).enqueue("lowest")
    app.drain()
    assert seen == ["high-1", "high-2", "low-1", "low-2", "lowest"]


def test_delayed_and_run_at_jobs_wait_for_the_clock(db_path: Path) -> None:
    clock = FakeClock()
    app = make_app(db_path, clock=clock)

    @app.job
    def f(x: int) -> int:
        return x

    later = f.options(delay_s=10).enqueue(1)
    at = f.options(run_at=clock.datetime() + timedelta(seconds=30)).enqueue(2)
    assert app.get(later.id).scheduled_at == clock.datetime() + timedelta(seconds=10)
    assert app.drain() == 0
    clock.advance(10)
    assert app.drain() == 1
    assert app.get(later.id).state is minijobs.JobState.SUCCEEDED
    assert app.get(at.id).state is minijobs.JobState.PENDING
    clock.advance(20)
    assert app.drain() == 1
    assert app.get(at.id).result == 2


def test_per_queue_concurrency_is_respected(db_path: Path) -> None:
    app = make_app(db_path, queues=[minijobs.Queue("default", concurrency=3), minijobs.Queue("other", concurrency=1)])
    active = {"default": 0, "other": 0}
    peak = {"default": 0, "other": 0}

    @app.job
    async def work(queue: str) -> None:
        active[queue] += 1
        peak[queue] = max(peak[queue], active[queue])
        await asyncio.sleep(0.002)
        active[queue] -= 1

    app.enqueue_many([work.prepare("default") for _ in range(20)])
    app.enqueue_many([work.options(queue="other").prepare("other") for _ in range(5)])
    assert app.drain() == 25
    assert peak == {"default": 3, "other": 1}


def test_claims_are_batched_to_free_capacity(db_path: Path) -> None:
    app = make_app(db_path, queues=[minijobs.Queue("default", concurrency=4)])
    claims: list[int] = []
    original = app.store.claim

    def spy(queue: str, limit: int, **kw: Any) -> list[minijobs.Job]:
        jobs = original(queue, limit, **kw)
        claims.append(len(jobs))
        assert len(jobs) <= limit
        return jobs

    app.store.claim = spy  # type: ignore[method-assign]

    @app.job
    async def noop() -> None:
        return None

    app.enqueue_many([noop.prepare() for _ in range(10)])
    assert app.drain() == 10
    assert claims[0] == 4 and max(claims) == 4


def test_paused_queue_is_not_claimed_until_resumed(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job
    def f() -> int:
        return 1

    ref = f.enqueue()
    app.pause_queue("default")
    assert app.drain() == 0
    assert app.get(ref.id).state is minijobs.JobState.PENDING
    app.resume_queue("default")
    assert app.drain() == 1


# -- retries, errors, timeouts -------------------------------------------------


def test_retries_follow_backoff_and_keep_one_traceback_per_attempt(db_path: Path) -> None:
    clock = FakeClock()
    app = make_app(db_path, clock=clock)
    calls: list[int] = []

    @app.job(max_attempts=3, retry=minijobs.Backoff(base_s=2, factor=3, max_s=100, jitter=0))
    def flaky() -> str:
        calls.append(minijobs.current_job().attempt)
        if len(calls) < 3:
            raise RuntimeError(f"boom {len(calls)}")
        return "ok"

    ref = flaky.enqueue()
    start = clock.datetime()
    assert app.drain() == 1
    job = app.get(ref.id)
    assert job.state is minijobs.JobState.RETRYING and job.scheduled_at == start + timedelta(seconds=2)
    clock.advance(1.9)
    assert app.drain() == 0
    clock.advance(0.1)
    assert app.drain() == 1
    assert app.get(ref.id).scheduled_at == start + timedelta(seconds=2 + 6)
    clock.advance(6)
    assert app.drain() == 1
    job = app.get(ref.id)
    assert job.state is minijobs.JobState.SUCCEEDED and job.result == "ok" and calls == [1, 2, 3]
    assert [e.attempt for e in job.errors] == [1, 2]
    assert all("RuntimeError: boom" in e.traceback and "flaky" in e.traceback for e in job.errors)
    assert job.errors[0].type == "RuntimeError" and job.errors[0].message == "boom 1"


def test_failure_after_max_attempts(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job(max_attempts=2, retry=minijobs.Backoff(base_s=0, jitter=0))
    def always() -> None:
        raise ValueError("nope")

    ref = always.enqueue()
    assert app.drain() == 2
    job = app.get(ref.id)
    assert job.state is minijobs.JobState.FAILED and job.attempts == 2 and len(job.errors) == 2
    with pytest.raises(minijobs.JobFailedError, match="nope"):
        always.enqueue()
        app.drain(raise_on_failure=True)


def test_job_can_ask_for_retry_with_delay(db_path: Path) -> None:
    clock = FakeClock()
    app = make_app(db_path, clock=clock)

    @app.job(max_attempts=5)
    def poll() -> str:
        if minijobs.current_job().attempt < 3:
            raise minijobs.Retry(delay_s=60)
        return "ready"

    ref = poll.enqueue()
    assert app.drain() == 1
    assert app.get(ref.id).scheduled_at == clock.datetime() + timedelta(seconds=60)
    clock.advance(60)
    app.drain()
    clock.advance(60)
    app.drain()
    job = app.get(ref.id)
    assert job.state is minijobs.JobState.SUCCEEDED and job.attempts == 3


def test_retry_consumes_attempts_so_it_cannot_loop_forever(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job(max_attempts=3)
    def again() -> None:
        raise minijobs.Retry(delay_s=0)

    ref = again.enqueue()
    assert app.drain() == 3
    assert app.get(ref.id).state is minijobs.JobState.FAILED


def test_async_timeout_cancels_the_job_and_counts_as_failed_attempt(db_path: Path) -> None:
    app = make_app(db_path)
    cancelled = threading.Event()

    @app.job(timeout_s=0.05, max_attempts=2, retry=minijobs.Backoff(base_s=0, jitter=0))
    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    ref = hang.enqueue()
    assert app.drain() == 2
    job = app.get(ref.id)
    assert cancelled.is_set()
    assert job.state is minijobs.JobState.FAILED
    assert [e.type for e in job.errors] == ["minijobs.JobTimeoutError"] * 2


# -- unique jobs ----------------------------------------------------------------


def test_unique_key_returns_the_live_job(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job
    def f(x: int) -> int:
        return x

    a = f.options(unique_key="k").enqueue(1)
    b = f.options(unique_key="k").enqueue(2)
    assert a.id == b.id and a.created and not b.created
    refs = app.enqueue_many([f.options(unique_key="k").prepare(3), f.options(unique_key="j").prepare(4)])
    assert refs[0].id == a.id and refs[1].created
    app.drain()
    assert app.get(a.id).result == 1
    c = f.options(unique_key="k").enqueue(5)
    assert c.created and c.id != a.id


def test_unique_key_is_enforced_by_the_database(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job
    def f() -> None:
        return None

    f.options(unique_key="dup").enqueue()
    conn = sqlite3.connect(db_path)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO minijobs_jobs (name, queue, payload, state, scheduled_at, created_at, unique_key) "
                "VALUES ('x', 'default', '{}', 'pending', 0, 0, 'dup')"
            )
    finally:
        conn.close()


# -- cancel, wait, get, jobs, retry ------------------------------------------------


def test_cancelled_pending_job_never_runs(db_path: Path) -> None:
    app = make_app(db_path)
    ran: list[int] = []

    @app.job
    def f() -> None:
        ran.append(1)

    ref = f.enqueue()
    job = app.cancel(ref.id)
    assert job.state is minijobs.JobState.CANCELLED
    assert app.drain() == 0 and ran == []
    assert ref.wait(timeout_s=1).state is minijobs.JobState.CANCELLED


def test_cancel_stops_a_running_async_job(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(db_path)
    started = threading.Event()
    was_cancelled = threading.Event()

    @app.job
    async def long() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            was_cancelled.set()
            raise

    with app.running():
        ref = long.enqueue()
        assert started.wait(10)
        with caplog.at_level(logging.INFO, logger="minijobs.worker"):
            app.cancel(ref.id)
            job = ref.wait(timeout_s=10)
    assert job.state is minijobs.JobState.CANCELLED and was_cancelled.is_set()
    # A cancellation someone asked for is logged, but not as a warning.
    lines = [r for r in caplog.records if r.name == "minijobs.worker" and f"job {ref.id} " in r.getMessage()]
    assert lines and all(r.levelno == logging.INFO for r in lines)


def test_wait_times_out_with_typed_error(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job
    def f() -> None:
        return None

    ref = f.enqueue()
    with pytest.raises(minijobs.WaitTimeoutError):
        ref.wait(timeout_s=0.01)
    with pytest.raises(TimeoutError):
        ref.wait(timeout_s=0)


def test_get_unknown_and_bad_ids(db_path: Path) -> None:
    app = make_app(db_path)
    with pytest.raises(minijobs.JobNotFoundError):
        app.get(12345)
    with pytest.raises(LookupError):
        app.cancel(12345)
    with pytest.raises(TypeError):
        app.get("1")  # type: ignore[arg-type]


def test_jobs_filters_and_manual_retry(db_path: Path) -> None:
    app = make_app(db_path, queues=[minijobs.Queue("default"), minijobs.Queue("other")])

    @app.job
    def fail() -> None:
        raise RuntimeError("x")

    @app.job(queue="other")
    def ok() -> int:
        return 1

    bad = fail.enqueue()
    ok.enqueue()
    ok.enqueue()
    app.drain()
    assert [j.id for j in app.jobs(state="failed")] == [bad.id]
    assert len(app.jobs(queue="other")) == 2
    assert len(app.jobs(state=["failed", minijobs.JobState.SUCCEEDED], limit=2)) == 2
    with pytest.raises(ValueError):
        app.jobs(state="bogus")
    with pytest.raises(minijobs.InvalidStateError):
        app.retry(ok.enqueue().id)
    job = app.retry(bad.id)
    assert job.state is minijobs.JobState.PENDING and job.max_attempts == 2
    app.drain()
    assert len(app.get(bad.id).errors) == 2


# -- validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (({1, 2},), {}, TypeError),
        ((b"bytes",), {}, TypeError),
        ((datetime.now(UTC),), {}, TypeError),
        ((object(),), {}, TypeError),
        (((1, 2),), {}, TypeError),
        (({1: "a"},), {}, TypeError),
        ((float("nan"),), {}, ValueError),
        ((), {"x": float("inf")}, ValueError),
        (("x" * 2000,), {}, ValueError),
    ],
)
def test_bad_payload_is_refused_and_nothing_written(db_path: Path, args: Any, kwargs: Any, error: type) -> None:
    app = make_app(db_path, max_payload_bytes=1000)

    @app.job
    def f(*a: Any, **k: Any) -> None:
        return None

    with pytest.raises(error) as info:
        f.enqueue(*args, **kwargs)
    assert isinstance(info.value, minijobs.MinijobsError)
    assert app.jobs() == []


def test_deeply_nested_payload_is_refused(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job
    def f(x: Any) -> None:
        return None

    deep: Any = []
    for _ in range(3000):
        deep = [deep]
    with pytest.raises(minijobs.PayloadValueError, match="nested"):
        f.enqueue(deep)
    assert app.jobs() == []


@pytest.mark.parametrize("name", ["", "a b", "x'; DROP TABLE minijobs_jobs; --", "q" * 10_000, 5])
def test_bad_queue_names_are_refused(db_path: Path, name: Any) -> None:
    app = make_app(db_path)

    @app.job
    def f() -> None:
        return None

    with pytest.raises(minijobs.InvalidNameError):
        f.options(queue=name).enqueue()
    with pytest.raises(ValueError):
        minijobs.Queue(name)
    assert app.jobs() == []


@pytest.mark.parametrize(
    "options",
    [{"priority": "high"}, {"max_attempts": 0}, {"timeout_s": -1}, {"delay_s": float("nan")}, {"run_at": datetime(2030, 1, 1)}],
)
def test_bad_options_are_configuration_errors(db_path: Path, options: dict[str, Any]) -> None:
    app = make_app(db_path)

    @app.job
    def f() -> None:
        return None

    with pytest.raises(minijobs.ConfigurationError):
        f.options(**options)


def test_unknown_job_name_fails_that_job_and_the_worker_lives(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job
    def known() -> str:
        return "fine"

    app.open()
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute(
            "INSERT INTO minijobs_jobs (name, queue, payload, state, max_attempts, scheduled_at, created_at) "
            "VALUES ('os.system', 'default', '{\"args\":[\"echo pwned\"],\"kwargs\":{}}', 'pending', 5, 0, 0)"
        )
    conn.close()
    good = known.enqueue()
    assert app.drain() == 2
    rogue = app.jobs(name="os.system")[0]
    assert rogue.state is minijobs.JobState.FAILED and rogue.attempts == 1
    assert "UnknownJobError" in rogue.errors[0].type and "is registered in this process" in rogue.errors[0].message
    assert app.get(good.id).result == "fine"


def test_garbage_payload_fails_clearly(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job
    def f() -> None:
        return None

    ref = f.enqueue()
    app.store.execute_write("corrupt", "UPDATE minijobs_jobs SET payload='{not json' WHERE id=?", (ref.id,))
    assert app.drain() == 1
    job = app.get(ref.id)
    assert job.state is minijobs.JobState.FAILED and "payload" in job.errors[0].message


# -- job context ------------------------------------------------------------------


def test_job_context_progress_and_identity(db_path: Path) -> None:
    app = make_app(db_path)
    events: list[minijobs.Event] = []
    app.events.subscribe("job.progress", events.append)

    @app.job
    async def steps(n: int) -> int:
        ctx = minijobs.current_job()
        assert ctx.id == ctx.job.id and ctx.attempt == 1 and not ctx.cancelled
        for i in range(n):
            ctx.set_progress(i + 1, n, f"step {i + 1}")
            await asyncio.sleep(0)
        return ctx.id

    ref = steps.enqueue(3)
    app.drain()
    job = app.get(ref.id)
    assert job.result == ref.id
    assert job.progress == minijobs.Progress(done=3, total=3, message="step 3")
    assert [e.data["progress"].done for e in events] == [1, 2, 3]
    with pytest.raises(minijobs.MinijobsError):
        minijobs.current_job()


# -- leases and fencing ---------------------------------------------------------------


def test_stale_completion_is_refused_by_the_fence(db_path: Path) -> None:
    clock = FakeClock()
    app = make_app(db_path, clock=clock)

    @app.job
    def f() -> None:
        return None

    ref = f.enqueue()
    (first,) = app.store.claim("default", 1, owner="A", now=clock.now(), lease_s=10)
    clock.advance(11)
    requeued, poisoned = app.store.recover_expired(now=clock.now(), max_rescues=3)
    assert requeued == [ref.id] and poisoned == []
    (second,) = app.store.claim("default", 1, owner="B", now=clock.now(), lease_s=10)
    assert second.attempts == 2
    stale = Outcome(job_id=ref.id, owner="A", attempt=1, state=minijobs.JobState.SUCCEEDED, completed_at=clock.now())
    fresh = Outcome(job_id=ref.id, owner="B", attempt=2, state=minijobs.JobState.SUCCEEDED, completed_at=clock.now(),
                    result="2")
    assert app.store.finish([stale]) == [False]
    assert app.get(ref.id).state is minijobs.JobState.RUNNING
    assert app.store.finish([fresh]) == [True]
    assert app.get(ref.id).result == 2


def test_heartbeat_renews_leases_with_the_app_clock(db_path: Path) -> None:
    clock = FakeClock()
    app = make_app(db_path, clock=clock, lease_s=0.4)
    started = threading.Event()
    release = threading.Event()

    @app.job
    async def wait_for_release() -> None:
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)

    with app.running():
        ref = wait_for_release.enqueue()
        assert started.wait(10)
        first = _lease_expiry(app, ref.id)
        clock.advance(5)
        deadline = 200
        while _lease_expiry(app, ref.id) == first and deadline:
            threading.Event().wait(0.02)
            deadline -= 1
        assert _lease_expiry(app, ref.id) == pytest.approx(clock.now() + 0.4)
        release.set()
        assert ref.wait(timeout_s=10).state is minijobs.JobState.SUCCEEDED


def _lease_expiry(app: minijobs.App, job_id: int) -> float:
    return app.store.query("lease", "SELECT lease_expires_at FROM minijobs_jobs WHERE id=?", (job_id,))[0][0]


# -- wake-up ---------------------------------------------------------------------------


def test_same_process_enqueue_wakes_the_worker(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "MAX_IDLE_S", 60.0)
    app = make_app(db_path, poll_interval_s=60.0)

    @app.job
    async def f() -> int:
        return 1

    with app.running():
        # Neither the idle guard nor the cross-process poll fires within the wait: only the direct wake-up can.
        assert f.enqueue().wait(timeout_s=10).result == 1
        assert f.enqueue().wait(timeout_s=10).result == 1


def test_other_process_enqueue_is_noticed_via_data_version(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, subprocess_env: dict[str, str], python: str
) -> None:
    monkeypatch.setattr(worker_module, "MAX_IDLE_S", 60.0)
    app = minijobs.App(db_path, plugins=[])

    @app.job(name="shared.add")
    async def add(a: int, b: int) -> int:
        return a + b

    script = textwrap.dedent(
        f"""
        import minijobs
        app = minijobs.App({str(db_path)!r}, plugins=[])
        @app.job(name="shared.add")
        async def add(a, b): return a + b
        print(add.enqueue(2, 3).id)
        """
    )
    with app.running():
        out = subprocess.run([python, "-c", script], env=subprocess_env, capture_output=True, text=True, check=True)
        job_id = int(out.stdout)
        assert minijobs.JobRef(app, job_id).wait(timeout_s=10).result == 5


# -- workers in threads, loops and processes ----------------------------------------------


def test_worker_inside_an_existing_loop(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job
    async def f(x: int) -> int:
        await asyncio.sleep(0)
        return x

    async def main() -> list[int]:
        async with app.worker() as w:
            assert isinstance(w, minijobs.Worker)
            refs = [await f.enqueue_async(i) for i in range(10)]
            return [(await r.wait_async(timeout_s=10)).result for r in refs]

    assert asyncio.run(main()) == list(range(10))


def test_drain_async_counts_jobs(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job
    async def f() -> None:
        return None

    app.enqueue_many([f.prepare() for _ in range(7)])
    assert asyncio.run(app.drain_async()) == 7
    with pytest.raises(RuntimeError, match="drain_async"):
        asyncio.run(_drain_inside_loop(app))


async def _drain_inside_loop(app: minijobs.App) -> int:
    return app.drain()


def test_graceful_shutdown_finishes_short_jobs_and_releases_long_ones(db_path: Path) -> None:
    app = make_app(db_path, grace_s=0.3)
    short_started = threading.Event()
    long_started = threading.Event()

    @app.job
    async def short() -> str:
        short_started.set()
        await asyncio.sleep(0.05)
        return "done"

    @app.job
    async def long() -> str:
        long_started.set()
        await asyncio.Event().wait()
        return "never"

    with app.running():
        s = short.enqueue()
        l = long.enqueue()
        assert short_started.wait(10) and long_started.wait(10)
    assert app.get(s.id).state is minijobs.JobState.SUCCEEDED
    released = app.get(l.id)
    assert released.state is minijobs.JobState.PENDING and released.attempts == 0 and released.lease_owner is None
    # The released job runs again on the next worker.
    app.close()
    again = make_app(db_path)

    @again.job(name=long.name)
    async def long_fixed() -> str:
        return "second run"

    assert again.drain() == 1 and again.get(l.id).result == "second run"


def test_two_processes_racing_claim_each_job_once(db_path: Path, subprocess_env: dict[str, str], python: str) -> None:
    app = make_app(db_path)

    @app.job(name="race.noop")
    def noop(i: int) -> int:
        return i

    n = 3000
    app.enqueue_many([noop.prepare(i) for i in range(n)])
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from minijobs.store import SQLiteStore
        store = SQLiteStore({str(db_path)!r})
        owner = "p%d" % os.getpid()
        got = []
        print("ready", flush=True)
        sys.stdin.readline()  # both processes start claiming together (3000 claims take only ~20 ms)
        while True:
            jobs = store.claim("default", 7, owner=owner, now=4e9, lease_s=60)
            if not jobs:
                break
            got.extend(j.id for j in jobs)
            # Spread the claims over ~0.4 s so the two processes overlap even when one of them
            # is scheduled late on a loaded machine (the race is in SQLite, not in this pause).
            time.sleep(0.001)
        print(" ".join(map(str, got)))
        """
    )
    procs = [subprocess.Popen([python, "-c", script], env=subprocess_env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    claimed = [[int(x) for x in out.split()] for out in outputs]
    assert all(claimed), "both processes should have won some claims"
    union = claimed[0] + claimed[1]
    assert len(union) == n and set(union) == set(range(1, n + 1))
    assert app.store.count_by_state()[minijobs.JobState.RUNNING] == n


def test_enqueued_job_survives_sigkill(db_path: Path, subprocess_env: dict[str, str], python: str) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import minijobs
        app = minijobs.App({str(db_path)!r}, plugins=[])
        @app.job(name="durable.f")
        def f(x): return x
        ref = f.enqueue(42)
        print(ref.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([python, "-c", script], env=subprocess_env, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    job_id = int(proc.stdout)
    app = make_app(db_path)

    @app.job(name="durable.f")
    def f(x: int) -> int:
        return x

    assert app.get(job_id).args == (42,)
    assert app.drain() == 1 and app.get(job_id).result == 42


def test_run_worker_stops_gracefully_on_sigterm(tmp_path: Path, subprocess_env: dict[str, str], python: str) -> None:
    db = tmp_path / "jobs.sqlite3"
    module = tmp_path / "sigapp.py"
    module.write_text(
        textwrap.dedent(
            f"""
            import asyncio, sys
            import minijobs
            app = minijobs.App({str(db)!r}, plugins=[], grace_s=10)
            @app.job(name="sig.slow")
            async def slow():
                print("started", flush=True)
                await asyncio.sleep(0.5)
                return "finished"
            if __name__ == "__main__":
                if sys.argv[1] == "enqueue":
                    print(slow.enqueue().id)
                else:
                    app.run_worker()
            """
        )
    )
    env = dict(subprocess_env, PYTHONPATH=f"{tmp_path}{os.pathsep}{subprocess_env['PYTHONPATH']}")
    job_id = int(subprocess.run([python, str(module), "enqueue"], env=env, capture_output=True, text=True, check=True).stdout)
    proc = subprocess.Popen([python, str(module), "work"], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    proc.stdout.close()
    app = make_app(db)
    job = app.get(job_id)
    assert job.state is minijobs.JobState.SUCCEEDED and job.result == "finished"


def test_injected_clock_drives_created_and_scheduled_times(db_path: Path) -> None:
    clock = FakeClock(datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC))
    app = make_app(db_path, clock=clock)

    @app.job
    def f() -> None:
        return None

    ref = f.enqueue()
    job = app.get(ref.id)
    assert job.created_at == job.scheduled_at == datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    clock.advance(3)
    app.drain()
    assert app.get(ref.id).completed_at == datetime(2031, 5, 6, 7, 8, 12, tzinfo=UTC)


def test_errors_in_event_subscribers_are_logged_not_raised(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(db_path)

    def broken(event: minijobs.Event) -> None:
        raise RuntimeError("subscriber bug")

    app.events.subscribe("job.*", broken)

    @app.job
    def f() -> int:
        return 1

    ref = f.enqueue()
    assert app.drain() == 1 and app.get(ref.id).result == 1
    assert "subscriber bug" in caplog.text


def test_payload_column_holds_plain_json(db_path: Path) -> None:
    app = make_app(db_path)

    @app.job
    def f(*a: Any, **k: Any) -> None:
        return None

    ref = f.enqueue(1, "two", [3.5, None, True], k={"nested": ["x"]})
    (text,) = app.store.query("raw", "SELECT payload FROM minijobs_jobs WHERE id=?", (ref.id,))[0]
    assert json.loads(text) == {"args": [1, "two", [3.5, None, True]], "kwargs": {"k": {"nested": ["x"]}}}


def test_reconfigure_checks_like_the_constructor_and_changes_nothing_on_error(db_path: Path) -> None:
    app = minijobs.App(db_path, queues=[minijobs.Queue("a")], plugins=[])
    with pytest.raises(minijobs.ConfigurationError, match="unique"):
        app.reconfigure(queues=[minijobs.Queue("b"), minijobs.Queue("b")])
    with pytest.raises(minijobs.ConfigurationError, match="Plugin instances"):
        app.reconfigure(queues=[minijobs.Queue("b")], plugins=[object()])  # type: ignore[list-item]
    assert [q.name for q in app.queues] == ["a"] and app.plugins == ()
    app.reconfigure(queues=[minijobs.Queue("b", concurrency=3)])
    assert [(q.name, q.concurrency) for q in app.queues] == [("b", 3)]
    with app.running():
        with pytest.raises(minijobs.ConfigurationError, match="while one of its workers runs"):
            app.reconfigure(queues=[minijobs.Queue("c")])
    assert [q.name for q in app.queues] == ["b"]
    app.close()
