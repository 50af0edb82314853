"""The invariant checker must catch what it claims to catch (fast, synthetic ledgers)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from minijobs import App

from . import ledger
from .jobs import TASK, build_app

A, B = 1001, 1002  # made-up worker pids


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[App, ledger.Ledger, Path]]:
    directory = tmp_path / "ledger"
    directory.mkdir()
    app = build_app(tmp_path / "jobs.sqlite3")
    book = ledger.Ledger(directory)
    yield app, book, directory
    book.close()
    app.close()


def make_job(app: App, book: ledger.Ledger, **columns: object) -> int:
    ref = app.registry[TASK].enqueue({})
    book.ack([ref.id])
    if columns:
        sets = ", ".join(f"{name}=?" for name in columns)
        app.store.execute_write("test", f"UPDATE minijobs_jobs SET {sets} WHERE id=?", (*columns.values(), ref.id))
    return ref.id


def run(book: ledger.Ledger, job_id: int, attempt: int, pid: int, outcome: str | None = "ok") -> None:
    token = f"{job_id}-{attempt}-{pid}-{outcome}"
    book.record("start", job_id=job_id, attempt=attempt, pid=pid, token=token)
    if outcome is not None:
        book.record("end", job_id=job_id, attempt=attempt, pid=pid, token=token, info=outcome)


def done(attempt: int, pid: int) -> dict[str, object]:
    return {"state": "succeeded", "attempts": attempt, "result": json.dumps({"pid": pid, "attempt": attempt})}


def violations(app: App, directory: Path, **kw: object) -> str:
    with pytest.raises(AssertionError) as info:
        ledger.check(app.path, directory, **kw)  # type: ignore[arg-type]
    return str(info.value)


def test_clean_history_passes(world: tuple[App, ledger.Ledger, Path]) -> None:
    app, book, directory = world
    job = make_job(app, book, **done(2, B))
    run(book, job, 1, A, "error")
    run(book, job, 2, B)
    report = ledger.check(app.path, directory)
    assert [e.pid for e in report.executions(job)] == [A, B]


def test_lost_acknowledged_job(world: tuple[App, ledger.Ledger, Path]) -> None:
    app, book, directory = world
    job = make_job(app, book, **done(1, A))
    run(book, job, 1, A)
    app.store.execute_write("test", "DELETE FROM minijobs_jobs WHERE id=?", (job,))
    assert "acknowledged but is not in the database" in violations(app, directory)


def test_unsettled_and_wrong_state(world: tuple[App, ledger.Ledger, Path]) -> None:
    app, book, directory = world
    make_job(app, book)
    assert "is pending, expected succeeded" in violations(app, directory)


def test_duplicate_without_fault(world: tuple[App, ledger.Ledger, Path]) -> None:
    app, book, directory = world
    job = make_job(app, book, **done(2, B))
    run(book, job, 1, A)  # succeeded, nobody hurt A, and yet it ran again
    run(book, job, 2, B)
    assert "ran again" in violations(app, directory)


def test_duplicate_explained_by_a_kill(world: tuple[App, ledger.Ledger, Path]) -> None:
    app, book, directory = world
    job = make_job(app, book, **done(2, B))
    run(book, job, 1, A, outcome=None)
    book.fault(A, "SIGKILL")
    run(book, job, 2, B)
    ledger.check(app.path, directory)


def test_overlap_is_caught(world: tuple[App, ledger.Ledger, Path]) -> None:
    app, book, directory = world
    job = make_job(app, book, **done(2, B))
    book.record("start", job_id=job, attempt=1, pid=A, token="a")
    run(book, job, 2, B)
    book.record("end", job_id=job, attempt=1, pid=A, token="a", info="error")
    assert "overlapped" in violations(app, directory)


def test_overlap_explained_by_sigstop(world: tuple[App, ledger.Ledger, Path]) -> None:
    app, book, directory = world
    job = make_job(app, book, **done(2, B))
    book.record("start", job_id=job, attempt=1, pid=A, token="a")
    book.fault(A, "SIGSTOP")
    run(book, job, 2, B)
    book.record("end", job_id=job, attempt=1, pid=A, token="a", info="ok")
    ledger.check(app.path, directory)


def test_stale_completion_accepted(world: tuple[App, ledger.Ledger, Path]) -> None:
    app, book, directory = world
    job = make_job(app, book, **done(1, A))  # the row carries attempt 1's result...
    app.store.execute_write("test", "UPDATE minijobs_jobs SET attempts=2 WHERE id=?", (job,))
    run(book, job, 1, A, outcome=None)
    book.fault(A, "SIGSTOP")
    run(book, job, 2, B)  # ...although attempt 2 ran last
    text = violations(app, directory)
    assert "stored result comes from pid" in text and "stale completion" in text


def test_same_attempt_twice(world: tuple[App, ledger.Ledger, Path]) -> None:
    app, book, directory = world
    job = make_job(app, book, **done(1, B))
    run(book, job, 1, A, "error")
    run(book, job, 1, B)
    assert "attempt 1 started twice" in violations(app, directory)


def test_running_without_owner_and_finished_with_owner(world: tuple[App, ledger.Ledger, Path]) -> None:
    app, book, directory = world
    make_job(app, book, state="running", attempts=1)
    make_job(app, book, **done(1, A), lease_owner="w", lease_expires_at=1.0)
    text = violations(app, directory, settled=False)
    assert "running without an owner" in text and "still has lease owner" in text


def test_doubled_unique_key_and_slot(world: tuple[App, ledger.Ledger, Path]) -> None:
    app, book, directory = world
    # The partial unique index forbids this; drop it to prove the checker looks for itself.
    app.store.execute_write("test", "DROP INDEX minijobs_jobs_unique_live")
    make_job(app, book, unique_key="k", meta=json.dumps({"slot": "s"}))
    make_job(app, book, unique_key="k", meta=json.dumps({"slot": "s"}))
    text = violations(app, directory, settled=False, slot_of=lambda row: row.meta.get("slot"))
    assert "unique key 'k' has 2 live jobs" in text and "slot 's' has 2 jobs" in text


def test_damaged_database_is_reported(world: tuple[App, ledger.Ledger, Path], tmp_path: Path) -> None:
    app, book, directory = world
    make_job(app, book)
    app.close()
    conn = sqlite3.connect(app.path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    path = Path(app.path)
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    for offset in range(page_size * 2 + 8, page_size * 3, 7):  # scribble over page 3's cells
        data[offset] = 0xA5
    path.write_bytes(bytes(data))
    text = violations(app, directory, settled=False)
    assert "integrity_check" in text
