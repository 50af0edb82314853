"""Regression tests for core bugs the reliability suite found (fast, single process)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from minijobs import App, Plugin, StoreError, current_job
from minijobs.testing import FakeClock


class _TablePlugin(Plugin):
    migrations = ("CREATE TABLE reliability_plugin_table (x INTEGER)",)

    @classmethod
    def get_identifier(cls) -> str:
        return "reliability.table_plugin"


def test_open_with_a_plugin_that_migrates_does_not_deadlock(tmp_path: Path) -> None:
    # Plugin.migrate reaches the store through app.store; App.open used to hold its
    # (non-reentrant) lock while migrating plugins, so the first open hung forever.
    app = App(tmp_path / "jobs.sqlite3", plugins=[_TablePlugin()])
    opened = threading.Event()

    def target() -> None:
        app.open()
        opened.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert opened.wait(10), "App.open() deadlocked while migrating a plugin"
    thread.join()
    assert app.store.schema_version("reliability.table_plugin") == 1
    assert app.store.query("t", "SELECT count(*) FROM reliability_plugin_table") == [(0,)]
    app.close()


def test_failed_plugin_migration_leaves_the_app_closed(tmp_path: Path) -> None:
    class Broken(Plugin):
        migrations = ("CREATE TABLE broken (",)

    app = App(tmp_path / "jobs.sqlite3", plugins=[Broken()])
    for _ in range(2):  # the second open must retry, not return a half-open store
        with pytest.raises(StoreError, match="incomplete input"):
            app.open()
    assert app._store is None


def test_reclaiming_a_job_whose_stale_attempt_still_runs_here_runs_it_once_more(tmp_path: Path) -> None:
    # A worker frozen past its lease (suspend, SIGSTOP, starved loop) can find its own job
    # recovered and claim it again while the stale attempt still runs locally.  Both used
    # to share one executor slot keyed by job id: the new attempt's outcome was dropped and
    # the job stayed running.  Now the stale attempt is cancelled as lost first.
    clock = FakeClock()
    # No plugins: the test plays the Recovery plugin itself (a running Recovery could see the
    # advanced clock first and requeue the job before the test's own call).
    app = App(tmp_path / "jobs.sqlite3", lease_s=30.0, clock=clock, plugins=[])
    gates = {1: threading.Event(), 2: threading.Event()}
    runs: list[int] = []
    ended: list[int] = []

    @app.job
    async def slow() -> int:
        attempt = current_job().attempt
        runs.append(attempt)
        try:
            while not gates[attempt].is_set():
                await asyncio.sleep(0.005)
        finally:
            ended.append(attempt)
        return attempt

    ref = slow.enqueue()
    with app.running() as worker:
        deadline = time.monotonic() + 10
        while not runs:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        # What the Recovery plugin does once the lease looks expired.
        clock.advance(60)
        requeued, _ = app.store.recover_expired(now=clock.now(), max_rescues=5)
        assert requeued == [ref.id]
        worker.wake()
        while len(runs) < 2:
            assert time.monotonic() < deadline, f"the re-claimed attempt never started (runs={runs})"
            time.sleep(0.005)
        gates[1].set()  # the stale attempt (if still running) ends first...
        while 1 not in ended:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        gates[2].set()  # ...then the current one, whose outcome must be written
        job = ref.wait(timeout_s=5)
    assert (job.state, job.attempts, job.result, runs) == ("succeeded", 2, 2, [1, 2])
