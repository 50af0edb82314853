"""minijobs inside an asyncio application: the worker is a task in your own event loop.

    python3 -m examples.asyncio_app

A stand-in for a web service: "request handlers" enqueue jobs and return at
once, jobs fan out into child jobs, a flaky job retries, a slow job hits its
time limit and a running job is cancelled.  Everything runs in one process and
one event loop, and the program ends by itself.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import minijobs

# A throwaway folder, removed when the script ends (a finalizer removes it even if the module is only imported).
DATA_DIR = tempfile.TemporaryDirectory(prefix="minijobs-asyncio-")
app = minijobs.App(Path(DATA_DIR.name) / "jobs.sqlite3")

PRICES = {"ACME": 12.5, "GLOBEX": 99.0, "INITECH": 7.25}


@app.job(name="fetch_price", max_attempts=3)
async def fetch_price(symbol: str) -> float:
    """Pretend to call a quote service that fails the first time it is asked."""
    job = minijobs.current_job()
    await asyncio.sleep(0.01)
    if job.attempt == 1:
        raise minijobs.Retry(delay_s=0.05, message=f"quote service busy for {symbol}")
    return PRICES[symbol]


@app.job(name="portfolio_report")
async def portfolio_report(holdings: dict[str, int]) -> dict[str, float]:
    """Fan out one child job per symbol and combine their results."""
    refs = [await fetch_price.enqueue_async(symbol) for symbol in holdings]
    children = await asyncio.gather(*(ref.wait_async(timeout_s=10) for ref in refs))
    values = {job.args[0]: job.result * holdings[job.args[0]] for job in children}
    return {**values, "total": sum(values.values())}


@app.job(name="slow_import", timeout_s=0.2)
async def slow_import() -> None:
    await asyncio.sleep(60)  # cut off after 0.2 s: async jobs are cancelled at their next await


@app.job(name="long_poll")
async def long_poll() -> None:
    minijobs.current_job().set_progress(0, 1, "waiting for the upstream")
    await asyncio.sleep(60)


async def handle_report_request(holdings: dict[str, int]) -> int:
    """What a web handler would do: enqueue, answer with the job id, let the worker do the rest."""
    ref = await portfolio_report.enqueue_async(holdings)
    return ref.id


async def main() -> None:
    async with app.worker():
        report_id = await handle_report_request({"ACME": 10, "GLOBEX": 2, "INITECH": 100})
        slow = await slow_import.enqueue_async()
        poll = await long_poll.enqueue_async()

        print(f"handler answered at once: job {report_id} is {app.get(report_id).state}")
        report = await minijobs.JobRef(app, report_id).wait_async(timeout_s=10)  # a status endpoint would poll
        print(f"report job {report.id}: {report.state}, result={report.result}")
        for job in reversed(app.jobs(name="fetch_price")):
            print(f"  child job {job.id} {job.args[0]}: {job.state} after {job.attempts} attempts")

        timed_out = await slow.wait_async(timeout_s=10)
        print(f"slow_import: {timed_out.state} ({timed_out.errors[-1].type}: {timed_out.errors[-1].message})")

        while poll.get().state is not minijobs.JobState.RUNNING:
            await asyncio.sleep(0.01)
        app.cancel(poll.id)  # a running async job is cancelled at once
        cancelled = await poll.wait_async(timeout_s=10)
        print(f"long_poll: {cancelled.state}")
    # Leaving the block stopped the worker gracefully.


if __name__ == "__main__":
    with DATA_DIR:
        try:
            asyncio.run(main())
        finally:
            app.close()  # before the folder goes
