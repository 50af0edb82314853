"""The store thread: async code never waits for the database on its event loop.

Another process holds SQLite's write lock (``BEGIN IMMEDIATE``) for a while;
a 10 ms ticker in the host loop must keep ticking, for a running worker and
for each ``_async`` call, and running jobs keep their leases.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import minijobs

HOLD_S = 2.0
MAX_LAG_S = 0.05

_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def _hold(db: Path, seconds: float) -> subprocess.Popen[str]:
    """Start a real second process holding the write lock of ``db`` for ``seconds``; return once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@asynccontextmanager
async def write_lock_held(db: Path, seconds: float) -> AsyncIterator[None]:
    """The lock held by another process; starting and reaping it happen off this loop."""
    proc = await asyncio.to_thread(_hold, db, seconds)
    try:
        yield
    finally:
        await asyncio.to_thread(proc.wait, seconds + 30)
        if proc.stdout is not None:
            proc.stdout.close()


async def max_lag_while(work: Awaitable[object]) -> float:
    """The longest a 10 ms ticker in this loop was late while ``work`` ran."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    done = False

    async def tick() -> None:
        nonlocal worst
        while not done:
            started = loop.time()
            await asyncio.sleep(0.01)
            worst = max(worst, loop.time() - started - 0.01)

    ticker = asyncio.create_task(tick())
    try:
        await work
    finally:
        done = True
        await ticker
    return worst


def _app(tmp_path: Path) -> tuple[minijobs.App, minijobs.JobFunction[[int], int]]:
    app = minijobs.App(tmp_path / "jobs.sqlite3", busy_timeout_s=10.0, lease_s=1.5)

    @app.job
    async def double(x: int) -> int:
        return 2 * x

    app.open()
    return app, double


def test_async_calls_do_not_stall_the_loop_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    app, double = _app(tmp_path)
    ref = double.enqueue(1)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: double.enqueue_async(2),
        lambda: app.enqueue_many_async([double.prepare(3)]),
    ]

    async def main() -> list[float]:
        lags = []
        for call in calls:
            async with write_lock_held(tmp_path / "jobs.sqlite3", HOLD_S):
                started = time.monotonic()
                lags.append(await max_lag_while(call()))
                assert time.monotonic() - started >= HOLD_S * 0.5  # it did wait for the lock
        return lags

    try:
        lags = asyncio.run(main())
        assert max(lags) <= MAX_LAG_S, f"loop lag {lags}"
        assert [j.args for j in app.jobs(state="pending")] == [(3,), (2,), (1,)]
        assert ref.get().state is minijobs.JobState.PENDING
    finally:
        app.close()


def test_a_running_worker_does_not_stall_its_host_loop_and_keeps_its_leases(tmp_path: Path) -> None:
    app, _ = _app(tmp_path)
    @app.job
    async def slow() -> str:
        await asyncio.sleep(HOLD_S + 0.5)
        return "done"

    async def main() -> tuple[float, minijobs.Job]:
        async with app.worker() as worker:
            ref = await slow.enqueue_async()
            while not worker.executors["default"].running:
                await asyncio.sleep(0.01)

            async def hold() -> None:
                async with write_lock_held(tmp_path / "jobs.sqlite3", HOLD_S):
                    await asyncio.sleep(HOLD_S)

            lag = await max_lag_while(hold())
            job = await ref.wait_async(timeout_s=30)
        return lag, job

    try:
        lag, job = asyncio.run(main())
        assert lag <= MAX_LAG_S, f"loop lag {lag:.3f} s"
        # The lease (1.5 s) ran out in the database during the hold; the worker kept the job.
        assert (job.state, job.result, job.attempts, job.rescues) == (minijobs.JobState.SUCCEEDED, "done", 1, 0)
    finally:
        app.close()
