"""Correctness of the store's fast paths (schema v2 index, batched finish, bulk enqueue, claim decoding).

The speed itself is measured by ``python3 -m benchmarks``, never here; these
tests pin down that the faster code paths keep the same observable behaviour.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import minijobs
from minijobs.store import MIGRATIONS, Outcome
from minijobs.testing import FakeClock


def undo_waiting(conn: sqlite3.Connection) -> None:
    """Take a file's jobs table back from before the ``waiting`` column (schema v5)."""
    conn.execute("DROP INDEX minijobs_jobs_waiting")
    conn.execute("DROP INDEX minijobs_jobs_runnable")
    conn.execute("ALTER TABLE minijobs_jobs DROP COLUMN waiting")
    conn.execute(
        "CREATE INDEX minijobs_jobs_runnable ON minijobs_jobs (queue, priority DESC, id, scheduled_at) "
        "WHERE state IN ('pending', 'retrying')"
    )
    conn.execute("UPDATE minijobs_schema SET version=4 WHERE component='minijobs'")


def _index_sql(path: Path, name: str) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT sql FROM sqlite_master WHERE name=?", (name,)).fetchone()[0]
    finally:
        conn.close()


def test_v1_database_migrates_finished_index_and_keeps_rows(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    app = minijobs.App(db)

    @app.job
    async def work(n: int) -> int:
        return n

    refs = [work.enqueue(i) for i in range(3)]
    assert app.drain() == 3
    app.close()
    # Put the file back to schema v1 as an older minijobs left it (v3 undone first).
    conn = sqlite3.connect(db, isolation_level=None)
    undo_waiting(conn)  # the waiting flag (schema v5)
    conn.execute("DROP INDEX minijobs_jobs_suspects")  # v3
    conn.execute("DROP INDEX minijobs_jobs_finished")
    conn.execute(
        "CREATE INDEX minijobs_jobs_finished ON minijobs_jobs (completed_at) "
        "WHERE state IN ('succeeded', 'failed', 'cancelled')"
    )
    conn.execute("UPDATE minijobs_schema SET version=1 WHERE component='minijobs'")
    conn.close()

    app = minijobs.App(db)
    assert app.store.schema_version("minijobs") == len(MIGRATIONS) >= 2
    assert "completed_at IS NOT NULL" in _index_sql(db, "minijobs_jobs_finished")
    assert "rescues > 0" in _index_sql(db, "minijobs_jobs_suspects")
    assert [app.get(r.id).result for r in refs] == [0, 1, 2]
    plan = app.store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM minijobs_jobs "
        "WHERE state IN ('succeeded', 'failed', 'cancelled') AND completed_at < ?",
        (1e12,),
    ).fetchall()
    assert any("minijobs_jobs_finished" in row[-1] for row in plan)
    assert app.store.prune(before=1e12) == 2  # the newest job stays: it holds the highest id
    assert [job.id for job in app.jobs()] == [refs[-1].id]
    app.close()


def test_finished_index_holds_exactly_the_terminal_rows(tmp_path: Path) -> None:
    app = minijobs.App(tmp_path / "jobs.sqlite3")

    @app.job(max_attempts=2)
    async def flaky() -> None:
        raise ValueError("boom")

    @app.job
    async def fine() -> None:
        return None

    ok = fine.enqueue()
    retried = flaky.enqueue()
    cancelled = fine.options(delay_s=3600).enqueue()
    app.cancel(cancelled.id)
    app.drain()  # flaky fails once and waits for its backoff: retrying, completed_at cleared
    rows = dict(app.store._conn.execute("SELECT id, completed_at IS NOT NULL FROM minijobs_jobs").fetchall())
    states = {ref.id: app.get(ref.id).state for ref in (ok, retried, cancelled)}
    assert states[retried.id] is minijobs.JobState.RETRYING
    for job_id, state in states.items():
        assert bool(rows[job_id]) == state.is_terminal, (job_id, state)
    app.retry(ok.id)
    assert app.store._conn.execute("SELECT completed_at FROM minijobs_jobs WHERE id=?", (ok.id,)).fetchone() == (None,)
    app.close()


def test_batched_finish_reports_exactly_the_refused_rows(tmp_path: Path) -> None:
    clock = FakeClock()
    app = minijobs.App(tmp_path / "jobs.sqlite3", clock=clock)

    @app.job
    async def f(n: int) -> int:
        return n

    refs = [f.enqueue(i) for i in range(4)]
    claimed = app.store.claim("default", 4, owner="A", now=clock.now(), lease_s=10)
    assert [j.id for j in claimed] == [r.id for r in refs]
    # Job 2's lease goes to another worker: A's outcome for it must be refused, the others written.
    clock.advance(11)
    app.store.execute_write("steal", "UPDATE minijobs_jobs SET lease_owner='B' WHERE id=?", (refs[2].id,))
    outcomes = [
        Outcome(job_id=j.id, owner="A", attempt=1, state=minijobs.JobState.SUCCEEDED, completed_at=clock.now(),
                result=str(i))
        for i, j in enumerate(claimed)
    ]
    assert app.store.finish(outcomes) == [True, True, False, True]
    states = [app.get(r.id).state for r in refs]
    assert states == [minijobs.JobState.SUCCEEDED] * 2 + [minijobs.JobState.RUNNING, minijobs.JobState.SUCCEEDED]
    assert app.get(refs[3].id).result == 3
    # A whole batch accepted in one go.
    clock.advance(1)
    again = app.store.finish([
        Outcome(job_id=refs[2].id, owner="B", attempt=1, state=minijobs.JobState.FAILED, completed_at=clock.now(),
                error='{"attempt":1,"type":"E","message":"m","traceback":"","at":0}'),
    ])
    assert again == [True]
    assert app.get(refs[2].id).errors[0].message == "m"
    app.close()


def test_bulk_enqueue_maps_ids_to_payloads_in_order_across_runs(tmp_path: Path) -> None:
    app = minijobs.App(tmp_path / "jobs.sqlite3", queues=[minijobs.Queue("default"), minijobs.Queue("other")])

    @app.job
    async def f(*args: object, **kwargs: object) -> None:
        return None

    @app.job(queue="other")
    async def g(n: int) -> None:
        return None

    requests = (
        [f.prepare(i, text="é\u2028\"\\", nested={"a": [1.5, None, True]}) for i in range(50)]  # one long run
        + [g.prepare(i) for i in range(3)]  # a short run of another function and queue
        + [f.options(priority=5).prepare(i) for i in range(20)]  # same function, other options
        + [f.prepare(i) for i in range(30)]
        + [f.prepare(i, big="x" * 1000) for i in range(10)]
    )
    refs = app.enqueue_many(requests)
    requests.append(f.options(unique_key="u").prepare(-1))  # a unique key: the row-by-row path
    refs += app.enqueue_many([requests[-1]])
    assert len(refs) == len(requests) and all(r.created for r in refs)
    assert [r.id for r in refs] == list(range(refs[0].id, refs[0].id + len(refs)))
    for ref, request in zip(refs, requests, strict=True):
        job = app.get(ref.id)
        assert (job.name, job.args, job.kwargs, job.priority, job.queue) == (
            request.function.name, tuple(request.args), request.kwargs, request.spec.priority, request.spec.queue,
        )
    # A second unique enqueue returns the live job, the others are still inserted.
    more = app.enqueue_many([f.options(unique_key="u").prepare(-2), *[f.prepare(i) for i in range(10)]])
    assert not more[0].created and more[0].id == refs[-1].id
    assert all(r.created for r in more[1:])
    app.close()


def test_bulk_enqueue_is_all_or_nothing(tmp_path: Path) -> None:
    app = minijobs.App(tmp_path / "jobs.sqlite3")

    @app.job
    async def f(n: object) -> None:
        return None

    with pytest.raises(minijobs.PayloadTypeError):
        app.enqueue_many([*[f.prepare(i) for i in range(100)], f.prepare((1, 2))])
    assert sum(app.store.count_by_state().values()) == 0
    app.close()


def test_cancel_flag_of_a_context_is_created_on_demand() -> None:
    from minijobs.context import JobContext

    app = minijobs.App(":memory:")

    @app.job
    async def f() -> None:
        return None

    job = app.get(f.enqueue().id)
    ctx = JobContext(job)
    assert not ctx.cancelled
    ctx.check_cancelled()
    ctx._request_cancel()
    assert ctx.cancelled
    with pytest.raises(minijobs.Cancelled):
        ctx.check_cancelled()
    app.close()


def test_enqueue_many_batched_payloads_round_trip_and_fall_back(tmp_path: Path) -> None:
    app = minijobs.App(tmp_path / "jobs.sqlite3", max_payload_bytes=4096)

    @app.job
    async def f(*args: object, **kwargs: object) -> None:
        return None

    requests = (
        [f.prepare(i, "é", 1.5, None, True, k="ü\u2028") for i in range(5000)]  # several encoded chunks
        + [f.prepare({"nested": [i]}) for i in range(20)]  # not plain: encoded call by call
        + [f.prepare("x" * 300) for _ in range(40)]  # each fits, the chunk (12 KB) does not: call by call
        + [f.options(unique_key="k").prepare(i) for i in range(10)]  # one unique key: one job
        + [f.prepare(i) for i in range(30)]  # a run after unique rows (the row-by-row store path)
    )
    refs = app.enqueue_many(requests)
    assert len(refs) == len(requests)
    unique_ids = {r.id for r, q in zip(refs, requests, strict=True) if q.spec.unique_key}
    assert len(unique_ids) == 1
    jobs = {j.id: j for j in app.jobs(limit=10_000)}
    for ref, request in zip(refs, requests, strict=True):
        if request.spec.unique_key:
            continue
        assert ref.created
        assert (jobs[ref.id].args, jobs[ref.id].kwargs) == (tuple(request.args), request.kwargs)
    app.close()


def test_enqueue_many_batched_payloads_keep_the_typed_errors(tmp_path: Path) -> None:
    app = minijobs.App(tmp_path / "jobs.sqlite3", max_payload_bytes=100)

    @app.job
    async def f(*args: object, **kwargs: object) -> None:
        return None

    plain = [f.prepare(i) for i in range(50)]
    with pytest.raises(minijobs.PayloadValueError, match="nan"):
        app.enqueue_many([*plain, f.prepare(float("nan")), *plain])
    bad_key = minijobs.EnqueueRequest(f, (), {1: "x"}, f.spec)  # type: ignore[dict-item]
    with pytest.raises(minijobs.PayloadTypeError, match="key 1"):
        app.enqueue_many([*plain, bad_key, *plain])
    with pytest.raises(minijobs.PayloadValueError, match="100-byte limit"):
        app.enqueue_many([*plain, f.prepare("é" * 60), *plain])  # 120 bytes in 60 characters
    assert sum(app.store.count_by_state().values()) == 0
    assert len(app.enqueue_many([*plain, f.prepare("é" * 30), *plain])) == 101
    app.close()


def test_finish_batch_mixing_plain_and_general_outcomes(tmp_path: Path) -> None:
    clock = FakeClock()
    app = minijobs.App(tmp_path / "jobs.sqlite3", clock=clock)

    @app.job(max_attempts=3)
    async def f(n: int) -> int:
        return n

    refs = [f.enqueue(i) for i in range(4)]
    claimed = app.store.claim("default", 4, owner="A", now=clock.now(), lease_s=10)
    error = '{"attempt":1,"type":"E","message":"boom","traceback":"","at":0}'
    S = minijobs.JobState
    outcomes = [
        Outcome(job_id=claimed[0].id, owner="A", attempt=1, state=S.SUCCEEDED, completed_at=clock.now(), result="7"),
        Outcome(job_id=claimed[1].id, owner="A", attempt=1, state=S.RETRYING, completed_at=None, error=error,
                scheduled_at=clock.now() + 60),
        Outcome(job_id=claimed[2].id, owner="A", attempt=1, state=S.SUCCEEDED, completed_at=clock.now(),
                progress='{"done":1,"total":2,"message":null}'),
        Outcome(job_id=claimed[3].id, owner="A", attempt=1, state=S.FAILED, completed_at=clock.now(), error=error),
    ]
    for batch in (outcomes, list(reversed(outcomes))):  # the second time every write is refused
        accepted = app.store.finish(batch)
        assert accepted == ([True] * 4 if batch is outcomes else [False] * 4)
    jobs = [app.get(r.id) for r in refs]
    assert [j.state for j in jobs] == [S.SUCCEEDED, S.RETRYING, S.SUCCEEDED, S.FAILED]
    assert jobs[0].result == 7 and jobs[0].errors == ()
    assert jobs[1].scheduled_at.timestamp() == clock.now() + 60 and jobs[1].errors[0].message == "boom"
    assert jobs[1].completed_at is None
    assert jobs[2].progress is not None and jobs[2].progress.total == 2
    assert jobs[3].errors[0].message == "boom" and jobs[3].completed_at is not None
    app.close()


def test_job_rows_read_back_equal_to_the_dataclass_constructor(tmp_path: Path) -> None:
    """The store builds Job by setting slots directly: the result must equal the normal constructor's."""
    import dataclasses

    from minijobs.job import job_from_fields

    app = minijobs.App(tmp_path / "jobs.sqlite3")

    @app.job(max_attempts=2, timeout_s=5)
    async def f(n: int, *, tag: str) -> None:
        return None

    job = app.get(f.options(meta={"k": [1]}, unique_key="u", priority=3).enqueue(1, tag="x").id)
    fields = {field.name: getattr(job, field.name) for field in dataclasses.fields(minijobs.Job)}
    assert minijobs.Job(**fields) == job
    assert job.replace(attempts=2).attempts == 2 and job.attempts == 0
    with pytest.raises(RuntimeError, match="fields of Job"):
        job_from_fields(tuple(fields.values())[:-1])
    app.close()


def test_lone_surrogates_are_typed_payload_errors(tmp_path: Path) -> None:
    """A str may hold a lone surrogate; UTF-8 (and so SQLite) cannot: refused at the boundary, typed."""
    app = minijobs.App(tmp_path / "jobs.sqlite3")

    @app.job
    async def f(*args: object) -> str:
        return "\udc80"

    with pytest.raises(minijobs.PayloadValueError, match="lone surrogate"):
        f.enqueue("ok", "\ud800")
    with pytest.raises(minijobs.PayloadValueError, match="lone surrogate"):
        app.enqueue_many([*[f.prepare(i) for i in range(20)], f.prepare("\udfff")])
    assert sum(app.store.count_by_state().values()) == 0
    ref = f.enqueue("é")  # non-ASCII that is valid UTF-8 goes through
    app.drain()
    job = app.get(ref.id)
    assert job.args == ("é",)
    assert job.state is minijobs.JobState.FAILED  # its result cannot be stored
    assert "lone surrogate" in job.errors[0].message
    app.close()


def test_claimed_jobs_equal_a_fresh_read_of_their_rows(tmp_path: Path) -> None:
    """A claim reads back only the columns it did not set itself; the snapshot must still be exact."""
    clock = FakeClock()
    app = minijobs.App(tmp_path / "jobs.sqlite3", clock=clock)

    @app.job(max_attempts=3, timeout_s=7)
    async def f(n: int, *, tag: str = "") -> None:
        return None

    plain = f.enqueue(1)
    rich = f.options(meta={"k": [1, "x"]}, unique_key="u-1", priority=5).enqueue(2, tag="é")
    clock.advance(3)
    first = app.store.claim("default", 1, owner="A", now=clock.now(), lease_s=10)
    assert [j.id for j in first] == [rich.id]  # priority first
    error = '{"attempt":1,"type":"E","message":"boom","traceback":"","at":0}'
    app.store.finish([Outcome(job_id=rich.id, owner="A", attempt=1, state=minijobs.JobState.RETRYING,
                              completed_at=None, error=error, scheduled_at=clock.now(),
                              progress='{"done":1,"total":4,"message":"a"}')])
    clock.advance(2)
    claimed = app.store.claim("default", 5, owner="B", now=clock.now(), lease_s=10)
    assert [j.id for j in claimed] == [rich.id, plain.id]
    for job in claimed:
        assert job == app.get(job.id)
        assert job.state is minijobs.JobState.RUNNING and job.lease_owner == "B" and job.queue == "default"
        assert job.started_at is not None and job.started_at.timestamp() == clock.now()
    again = claimed[0]
    assert again.attempts == 2 and again.errors[0].message == "boom" and again.progress is not None
    assert again.meta == {"k": [1, "x"]} and again.kwargs == {"tag": "é"} and again.unique_key == "u-1"
    assert again.timeout_s == 7 and again.completed_at is None and again.result is None
    app.close()
