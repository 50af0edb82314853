"""Races between processes: many workers claiming one queue, many clients enqueueing one unique key."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from minijobs import App

from . import ledger
from .harness import Fleet, wait_until
from .jobs import TASK, build_app

pytestmark = pytest.mark.slow

_BUSY = re.compile(r"locked|busy|DatabaseBusyError", re.IGNORECASE)


@pytest.fixture
def app(fleet: Fleet) -> Iterator[App]:
    app = build_app(fleet.db)
    yield app
    app.close()


def test_four_processes_with_threads_claim_20k_jobs_each_started_once(fleet: Fleet, app: App) -> None:
    total, batch = 20_000, 500
    app.open()
    workers = [fleet.worker("--queue", "default:8:thread", "--lease-s", "30") for _ in range(4)]
    task = app.registry[TASK]
    for _ in range(total // batch):
        # Enqueued while the workers claim: the enqueuer contends for the write lock too.
        refs = app.enqueue_many([task.prepare({}) for _ in range(batch)])
        fleet.ledger.ack(ref.id for ref in refs)
    wait_until(lambda: app.store.count_by_state()["succeeded"] == total, timeout_s=150, interval_s=0.2,
               what="20k jobs to succeed")

    report = ledger.check(fleet.db, fleet.ledger_dir)
    assert len(report.rows) == total
    assert all(row.attempts == 1 for row in report.rows.values())
    assert all(len(runs) == 1 for runs in report.history.executions.values())
    assert len(report.history.executions) == total
    pids = {runs[0].pid for runs in report.history.executions.values()}
    assert pids == {w.pid for w in workers}, "every process should have claimed a share"
    for proc in workers:
        assert not _BUSY.search(proc.stderr), proc.stderr[-2000:]
        assert proc.alive()


def _race(fleet: Fleet, n: int, spec: dict[str, object]) -> list[str]:
    clients = [fleet.client() for _ in range(n)]
    line = "enqueue " + json.dumps(spec)
    for client in clients:  # all commands go out before any answer is read
        client.send(line)
    return [client.read_line() for client in clients]


def test_twenty_processes_enqueue_one_unique_key_on_a_fresh_file(fleet: Fleet) -> None:
    # The file does not exist yet: the processes also race to create and migrate it.
    assert not fleet.db.exists()
    answers = _race(fleet, 20, {"plan": {}, "options": {"unique_key": "nightly-report"}})
    assert all(a.startswith("OK ") for a in answers), (answers, [p.stderr for p in fleet.procs if p.stderr])
    pairs = [a.split()[1].split(":") for a in answers]
    assert len({job_id for job_id, _ in pairs}) == 1, answers
    assert sorted(created for _, created in pairs) == ["0"] * 19 + ["1"]
    report = ledger.check(fleet.db, fleet.ledger_dir, settled=False)
    assert [r.unique_key for r in report.rows.values()] == ["nightly-report"]
    assert oct(Path(fleet.db).stat().st_mode & 0o777) == "0o600"


def test_unique_key_frees_up_once_the_job_finished(fleet: Fleet, app: App) -> None:
    first = _race(fleet, 10, {"plan": {}, "options": {"unique_key": "k"}})
    (job_id,) = {a.split()[1].split(":")[0] for a in first}
    worker = fleet.worker("--queue", "default:4")
    wait_until(lambda: app.store.state_of(int(job_id)).is_terminal, what="the unique job to finish")
    worker.signal(signal.SIGTERM)  # else the next job may finish and free the key again mid-race
    assert worker.wait() == 0
    second = _race(fleet, 10, {"plan": {}, "options": {"unique_key": "k"}})
    created = [a for a in second if a.endswith(":1")]
    assert len(created) == 1 and created[0].split()[1].split(":")[0] != job_id, second
    ledger.check(fleet.db, fleet.ledger_dir, settled=False)
