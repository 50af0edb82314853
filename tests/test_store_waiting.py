"""Jobs scheduled ahead wait outside the runnable index and are promoted when due (schema v5).

Speed is measured by ``python3 -m benchmarks --only scale,idle``; here the
work a claim does is pinned down by SQLite's own VM step counter and query
plans, and every path that writes a runnable row is checked to leave the
``waiting`` flag right.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import minijobs
from minijobs import Queue
from minijobs.store import MIGRATIONS
from minijobs.store import Outcome
from minijobs.store.sql import CLAIM as _CLAIM
from minijobs.store.sql import DUE_WAITING as _DUE_WAITING
from minijobs.store.sql import PROMOTE as _PROMOTE
from minijobs.store.sql import PROMOTE_LIMIT as _PROMOTE_LIMIT
from minijobs.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(db_path: Path, clock: FakeClock) -> Iterator[minijobs.App]:
    app = minijobs.App(db_path, clock=clock, plugins=[], queues=[Queue("default"), Queue("other")])
    yield app
    app.close()


def _noop(app: minijobs.App) -> Any:
    @app.job(name="noop")
    async def noop(n: int = 0) -> int:
        return n

    return noop


def _flags(app: minijobs.App) -> dict[int, tuple[str, int]]:
    rows = app.store.query("test", "SELECT id, state, waiting FROM minijobs_jobs")
    return {job_id: (state, waiting) for job_id, state, waiting in rows}


def _assert_flags_consistent(app: minijobs.App) -> None:
    """Only runnable rows may wait: anything else in the waiting index would be a stale entry."""
    stale = app.store.query(
        "test", "SELECT id, state FROM minijobs_jobs WHERE waiting=1 AND state NOT IN ('pending', 'retrying')"
    )
    assert stale == []


def _claim_ids(app: minijobs.App, limit: int = 100, owner: str = "w") -> list[int]:
    return [job.id for job in app.store.claim("default", limit, owner=owner, now=app.clock.now(), lease_s=60)]


def _count_steps(app: minijobs.App, action: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``action`` and count the SQLite VM instructions it executed (in hundreds)."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    conn = app.store._conn
    conn.set_progress_handler(tick, 100)
    try:
        result = action()
    finally:
        conn.set_progress_handler(None, 0)
    return result, steps[0]


def test_delayed_job_is_claimed_exactly_when_due_and_not_before(app: minijobs.App, clock: FakeClock) -> None:
    noop = _noop(app)
    later = noop.options(delay_s=10).enqueue(1)
    at = noop.options(run_at=clock.datetime() + timedelta(seconds=20)).enqueue(2)
    past = noop.options(run_at=clock.datetime() - timedelta(seconds=5)).enqueue(3)
    flags = _flags(app)
    assert flags[later.id] == ("pending", 1)
    assert flags[at.id] == ("pending", 1)
    assert flags[past.id] == ("pending", 0)  # due already: straight into the runnable index

    assert _claim_ids(app) == [past.id]
    clock.advance(9.999)
    assert _claim_ids(app) == []
    assert _flags(app)[later.id] == ("pending", 1)
    clock.advance(0.001)  # exactly scheduled_at
    assert _claim_ids(app) == [later.id]
    assert _flags(app)[later.id] == ("running", 0)
    assert _flags(app)[at.id] == ("pending", 1)
    clock.advance(10)
    assert _claim_ids(app) == [at.id]
    _assert_flags_consistent(app)


def test_every_insert_path_flags_jobs_scheduled_ahead(app: minijobs.App) -> None:
    noop = _noop(app)
    single = noop.options(delay_s=5).enqueue(0)
    unique = noop.options(delay_s=5, unique_key="k").enqueue(0)
    few = app.enqueue_many([noop.options(delay_s=5).prepare(i) for i in range(3)])  # executemany
    run = app.enqueue_many([noop.options(delay_s=5).prepare(i) for i in range(50)])  # one json_each insert
    due = app.enqueue_many([noop.prepare(i) for i in range(50)] + [noop.options(unique_key="u").prepare(0)])
    flags = _flags(app)
    for ref in [single, unique, *few, *run]:
        assert flags[ref.id] == ("pending", 1), ref
    for ref in due:
        assert flags[ref.id] == ("pending", 0), ref


def test_priority_order_holds_among_promoted_and_ready_jobs(app: minijobs.App, clock: FakeClock) -> None:
    noop = _noop(app)
    ready_low = noop.options(priority=0).enqueue()
    ready_mid = noop.options(priority=5).enqueue()
    late_high = noop.options(priority=10, delay_s=5).enqueue()
    late_mid = noop.options(priority=5, delay_s=5).enqueue()
    late_low = noop.options(priority=3, delay_s=5).enqueue()
    not_yet = noop.options(priority=99, delay_s=6).enqueue()
    clock.advance(5)
    # One job per claim, so the order is the database's and not the sort of a returned batch.
    order = [_claim_ids(app, limit=1) for _ in range(6)]
    assert order == [[late_high.id], [ready_mid.id], [late_mid.id], [late_low.id], [ready_low.id], []]
    clock.advance(1)
    assert _claim_ids(app) == [not_yet.id]


def test_retry_with_backoff_waits_then_falls_due(app: minijobs.App, clock: FakeClock) -> None:
    calls: list[int] = []

    @app.job(max_attempts=3, retry=minijobs.Backoff(base_s=30, jitter=0))
    async def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first attempt fails")
        if len(calls) == 2:
            raise minijobs.Retry(delay_s=0)  # due at once: must not wait
        return "ok"

    ref = flaky.enqueue()
    assert app.drain() == 3 - 2  # the first attempt only: the retry is 30 s ahead
    job = app.get(ref.id)
    assert job.state is minijobs.JobState.RETRYING
    assert job.scheduled_at.timestamp() == clock.now() + 30
    assert _flags(app)[ref.id] == ("retrying", 1)
    assert app.store.next_due_at(["default"]) == clock.now() + 30
    clock.advance(29.5)
    assert app.drain() == 0
    clock.advance(0.5)
    assert app.drain() == 2  # the zero-delay retry runs in the same drain
    assert app.get(ref.id).result == "ok"
    _assert_flags_consistent(app)


def test_due_job_behind_50k_delayed_jobs_is_claimed_in_bounded_steps(app: minijobs.App, clock: FakeClock) -> None:
    noop = _noop(app)
    app.enqueue_many([noop.options(delay_s=3600).prepare(i) for i in range(50_000)])
    due = noop.enqueue(-1)
    conn = app.store._conn
    params = {"queue": "default", "limit": 10, "owner": "w", "now": clock.now(), "expires": clock.now() + 60,
              "idle": True}
    probe_plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + _DUE_WAITING, params))
    promote_plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + _PROMOTE, params))
    claim_plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + _CLAIM, params))
    assert "minijobs_jobs_waiting (queue=? AND scheduled_at<?)" in probe_plan
    assert "minijobs_jobs_waiting (queue=? AND scheduled_at<?)" in promote_plan
    assert "minijobs_jobs_runnable (queue=?)" in claim_plan

    claimed, steps = _count_steps(app, lambda: _claim_ids(app, limit=10))
    assert claimed == [due.id]
    # Walking 50,000 index entries takes over a million VM steps; a claim of one job a few hundred.
    assert steps < 50, steps
    due_at, steps = _count_steps(app, lambda: app.store.next_due_at(["default", "other"]))
    assert due_at == clock.now() + 3600
    assert steps < 10, steps
    idle, steps = _count_steps(app, lambda: _claim_ids(app, limit=10))
    assert idle == []
    assert steps < 10, steps


def test_a_due_waiting_job_does_not_make_the_claim_walk_the_ready_jobs(app: minijobs.App, clock: FakeClock) -> None:
    noop = _noop(app)
    app.enqueue_many([noop.prepare(i) for i in range(50_000)])
    late = noop.options(priority=1, delay_s=5).enqueue()
    assert _claim_ids(app, limit=1) == [1]
    clock.advance(5)
    # The claim holds back while ``late`` waits past its time; that check must not run per ready row.
    claimed, steps = _count_steps(app, lambda: _claim_ids(app, limit=1))
    assert claimed == [late.id]
    assert steps < 50, steps
    assert _claim_ids(app, limit=2) == [2, 3]


def test_promotion_is_bounded_per_claim_and_drains_earliest_first(app: minijobs.App, clock: FakeClock) -> None:
    noop = _noop(app)
    n = _PROMOTE_LIMIT * 2 + 10
    # Later ids are due sooner, so promotion order (scheduled_at) differs from claim order (id).
    app.enqueue_many([noop.options(delay_s=10 + (n - i) * 0.001).prepare(i) for i in range(n)])
    clock.advance(3600)

    def waiting() -> int:
        return int(app.store.query("test", "SELECT count(*) FROM minijobs_jobs WHERE waiting=1")[0][0])

    first = _claim_ids(app, limit=1)
    assert waiting() == n - _PROMOTE_LIMIT
    # Only the earliest-due thousand were promoted: the job claimed is the lowest id among them.
    assert first == [n - _PROMOTE_LIMIT + 1]
    claimed = first
    while batch := _claim_ids(app, limit=500):
        claimed += batch
    assert sorted(claimed) == list(range(1, n + 1))
    assert waiting() == 0


def test_next_due_at_covers_ready_and_waiting_jobs_and_skips_paused_queues(
    app: minijobs.App, clock: FakeClock
) -> None:
    noop = _noop(app)
    now = clock.now()
    assert app.store.next_due_at(["default"]) is None
    noop.options(delay_s=100).enqueue()
    noop.options(delay_s=70, queue="other").enqueue()
    assert app.store.next_due_at(["default"]) == now + 100
    assert app.store.next_due_at(["default", "other"]) == now + 70
    # A row written without the flag (raw SQL, an older writer) is ready but not due: still seen, never claimed.
    app.store.execute_write(
        "raw insert",
        "INSERT INTO minijobs_jobs (name, queue, payload, state, scheduled_at, created_at) "
        "VALUES ('noop', 'default', '{\"args\":[],\"kwargs\":{}}', 'pending', ?, ?)",
        (now + 50, now),
    )
    assert app.store.next_due_at(["default"]) == now + 50
    assert _claim_ids(app) == []
    app.pause_queue("default")
    assert app.store.next_due_at(["default"]) is None
    assert app.store.next_due_at(["default", "other"]) == now + 70
    app.resume_queue("default")
    clock.advance(50)
    assert len(_claim_ids(app)) == 1
    assert app.store.next_due_at(["default"]) == now + 100
    # The queue-lag figure counts due jobs on both sides.
    assert app.store.oldest_due(now=clock.now()) is None
    clock.advance(60)
    assert app.store.oldest_due(now=clock.now()) == now + 70
    _assert_flags_consistent(app)


def test_cancel_retry_release_recover_and_finish_keep_the_flag_right(app: minijobs.App, clock: FakeClock) -> None:
    noop = _noop(app)
    waiting = noop.options(delay_s=30).enqueue()
    app.cancel(waiting.id)
    assert _flags(app)[waiting.id] == ("cancelled", 0)
    app.retry(waiting.id)  # runs again now
    assert _flags(app)[waiting.id] == ("pending", 0)
    assert _claim_ids(app, owner="A") == [waiting.id]

    assert app.store.release("A", [waiting.id], now=clock.now()) == 1
    assert _flags(app)[waiting.id] == ("pending", 0)
    assert _claim_ids(app, owner="B") == [waiting.id]

    requeued, _ = app.store.recover_expired(now=clock.now() + 61, max_rescues=5)
    assert requeued == [waiting.id]
    assert _flags(app)[waiting.id] == ("retrying", 0)
    clock.advance(61)
    (job,) = app.store.claim("default", 1, owner="C", now=clock.now(), lease_s=60)

    # Back to the queue for later: waiting; and fenced writes that lose change nothing.
    later = Outcome(job.id, "C", job.attempts, minijobs.JobState.RETRYING, None, None, '{"x": 1}', clock.now() + 5)
    assert app.store.finish([later._replace(owner="stale")]) == [False]
    assert _flags(app)[job.id] == ("running", 0)
    assert app.store.finish([later]) == [True]
    assert _flags(app)[job.id] == ("retrying", 1)
    assert _claim_ids(app, owner="D") == []
    clock.advance(5)
    (job,) = app.store.claim("default", 1, owner="D", now=clock.now(), lease_s=60)
    failed = Outcome(job.id, "D", job.attempts, minijobs.JobState.FAILED, clock.now(), None, '{"x": 2}')
    assert app.store.finish([failed]) == [True]
    assert _flags(app)[job.id] == ("failed", 0)
    _assert_flags_consistent(app)


def test_workers_run_delayed_jobs_when_the_clock_reaches_them(app: minijobs.App, clock: FakeClock) -> None:
    noop = _noop(app)
    refs = [noop.options(delay_s=d).enqueue(d) for d in (3, 1, 2)]
    assert app.drain() == 0
    for expected in ([1], [1, 2], [1, 2, 3]):
        clock.advance(1)
        app.drain()
        assert sorted(r.get().result for r in refs if r.get().state is minijobs.JobState.SUCCEEDED) == expected


def test_v4_database_migrates_to_waiting_flags_and_keeps_rows(db_path: Path) -> None:
    from test_store_sqlite import undo_waiting

    app = minijobs.App(db_path, plugins=[])  # the wall clock: the migration flags by it
    noop = _noop(app)
    done = noop.enqueue(1)
    app.drain()
    ahead = noop.options(delay_s=3600).enqueue(2)
    due = noop.enqueue(3)
    app.close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    undo_waiting(conn)
    conn.close()

    app = minijobs.App(db_path, plugins=[])
    noop = _noop(app)
    assert app.store.schema_version("minijobs") == len(MIGRATIONS) == 5
    flags = _flags(app)
    assert flags == {done.id: ("succeeded", 0), ahead.id: ("pending", 1), due.id: ("pending", 0)}
    assert app.get(done.id).result == 1
    assert [job.id for job in app.store.claim("default", 10, owner="w", now=app.clock.now(), lease_s=60)] == [due.id]
    assert app.store.claim("default", 10, owner="w", now=app.clock.now() + 3600, lease_s=60)[0].id == ahead.id
    app.close()


def test_claim_on_a_paused_queue_with_a_backlog_takes_bounded_steps(app: minijobs.App, clock: FakeClock) -> None:
    """A paused queue is checked once per claim, not once per ready row of its backlog."""
    noop = _noop(app)
    app.enqueue_many([noop.prepare(i) for i in range(50_000)])
    app.enqueue_many([noop.options(delay_s=10).prepare(i) for i in range(10)])
    app.pause_queue("default")
    clock.advance(11)  # the delayed ones are due too: promotion must not open the pause either
    claimed, steps = _count_steps(app, lambda: _claim_ids(app, limit=100))
    assert claimed == []
    assert steps < 50, steps  # walking 50,000 index entries takes thousands of hundreds
    app.resume_queue("default")
    assert len(_claim_ids(app, limit=100)) == 100

