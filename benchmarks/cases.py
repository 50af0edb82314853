"""The benchmarks themselves.  Each returns :class:`~benchmarks.harness.Result` rows.

Every figure is the median of ``settings.repeat`` runs, each on a fresh
file-backed database in a temporary directory (scale runs reuse one backlog and
top it up between runs).  Whatever must not share a process with the
benchmark (idle cost, another process enqueuing, worker memory) runs in a
subprocess (:mod:`benchmarks.child`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import minijobs

from . import ceilings, jobs
from .harness import CEILINGS, ROOT, Progress, Result, Target, child_env, median, percentile, run_child

# Throughput targets are fractions of a ceiling measured in the same run (benchmarks/ceilings.py),
# next to each sample: absolute rates drift ~2x from day to day on shared machines, the ratio much
# less.  The first three are goals.  The others are what the code got when they were set (commit
# 0a2b3e9, the median of four runs of three repeats, less ~10% for noise), so that --check says whether a
# figure got worse.  The 1m backlog has none: the scale ratio judges it against the 10k one.
FRACTION_TARGETS: dict[tuple[str, str], float] = {
    ("enqueue", "one call at a time"): 0.85,
    ("drain", "async executor, running worker"): 0.30,
    ("drain", "thread executor, running worker"): 0.15,
    # today's figures, less ~10%
    ("enqueue", "one call at a time, durability=full"): 0.74,
    ("enqueue", "enqueue_many"): 0.78,
    ("drain", "async executor, app.drain()"): 0.38,
    ("drain", "thread executor, app.drain()"): 0.22,
    ("drain", "process executor, running worker"): 0.024,
    ("drain", "process executor, app.drain()"): 0.025,
    ("scale", "drain rate, 10k pending"): 0.39,
    ("scale", "drain rate, 100k pending"): 0.37,
    ("scale", "drain rate, 10k delayed jobs ahead"): 0.39,
    ("scale", "drain rate, 100k delayed jobs ahead"): 0.36,
}
# Latency, idle cost, start-up and scale ratios are not throughput: absolute targets.
T_LAT_P50 = Target("<=", 0.5)
T_LAT_P99 = Target("<=", 2.0)
T_LAT_XPROC_P50 = Target("<=", 10.0)
T_IDLE = Target("<=", 1.0)
T_SCALE_RATIO = Target(">=", 0.8)
T_SCALE_MEMORY = Target("<=", 1.2)
T_IMPORT_MS = Target("<=", 40.0)
T_CLI_LIST_MS = Target("<=", 120.0)

SCALE_SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
_CEILING_UNITS = {"commits": "rows/s", "commits_full": "rows/s", "bulk_insert": "rows/s", "claim_complete": "rows/s",
                  "asyncio_tasks": "tasks/s", "thread_pool": "calls/s"}


@dataclass(slots=True)
class Settings:
    repeat: int = 3
    quick: bool = False
    enqueue_jobs: int = 20_000
    full_jobs: int = 2_000
    many_jobs: int = 100_000
    many_batch: int = 10_000
    drain_jobs: int = 20_000
    latency_samples: int = 200
    scale: list[str] = field(default_factory=lambda: ["10k", "100k"])
    scale_sample: int = 20_000
    idle_s: float = 10.0
    executors: list[str] = field(default_factory=lambda: ["async", "thread", "process"])
    concurrency: int | None = None
    workload: str | None = None
    workload_args: list[Any] = field(default_factory=list)
    workload_kwargs: dict[str, Any] = field(default_factory=dict)
    workload_executor: str = "async"
    workload_jobs: int = 2_000
    startup_runs: int = 21
    ceiling_commits: int = 20_000
    ceiling_bulk: int = 30_000
    ceiling_claim: int = 20_000
    ceiling_tasks: int = 50_000
    ceiling_calls: int = 10_000

    @classmethod
    def quick_run(cls) -> Settings:
        return cls(
            repeat=1, quick=True, enqueue_jobs=2_000, full_jobs=300, many_jobs=20_000, many_batch=5_000, drain_jobs=3_000,
            latency_samples=40, scale=["10k"], scale_sample=2_000, idle_s=2.0, workload_jobs=300, startup_runs=5,
            ceiling_commits=3_000, ceiling_bulk=20_000, ceiling_claim=5_000,
            ceiling_tasks=20_000, ceiling_calls=3_000,
        )


class Bench:
    """Holds settings, the temp dir and the progress printer shared by the cases."""

    def __init__(self, settings: Settings, tmp: Path, progress: Progress) -> None:
        self.s = settings
        self.tmp = tmp
        self.progress = progress
        self._n = 0

    def db(self, label: str) -> Path:
        self._n += 1
        return self.tmp / f"{self._n:03d}-{label}.sqlite3"

    def app(self, label: str, *, executor: str = "async", **options: Any) -> minijobs.App:
        app = jobs.build_app(self.db(label), executor=executor, concurrency=self.s.concurrency, **options)
        app.open()
        return app

    # -- ceilings -----------------------------------------------------------------

    def ceilings(self) -> list[Result]:
        """Raw SQLite, asyncio and thread-pool rates with no minijobs code: the yardsticks of this run.

        Runs first whenever a throughput group runs.  Its figures are the ceilings the table
        shows; the fractions of the throughput figures come from ceiling runs paired with each
        of their own runs (:meth:`paired`), and from these only where a figure has no pairs.
        Repeats interleave the ceilings so that a slow moment of the machine does not fall on
        one of them only.
        """
        s = self.s
        notes = {
            "commits": f"{s.ceiling_commits:,} x one INSERT per autocommit statement; jobs-table schema, WAL, "
                       "synchronous=NORMAL",
            "commits_full": f"{s.full_jobs:,} x the same with synchronous=FULL (an fsync per commit; as many as "
                            "the durability=full enqueue run, so the WAL is in the same phase)",
            "bulk_insert": f"{s.ceiling_bulk:,} rows, executemany of {s.many_batch:,} per transaction, rows built "
                           "in the timed loop",
            "claim_complete": f"{s.ceiling_claim:,} pending rows; per transaction: a claim UPDATE ... RETURNING of "
                              "100 by priority, id and 100 fenced finishes (executemany)",
            "asyncio_tasks": f"{s.ceiling_tasks:,} no-op tasks created 100 at a time, each awaited",
            "thread_pool": f"{s.ceiling_calls:,} submit+result of a no-op, 32 in flight on a 32-thread pool "
                           "(the thread executor's default)",
        }
        results = {key: Result("ceilings", CEILINGS[key][0], unit, note=notes[key], extra={"ceiling_key": key})
                   for key, unit in _CEILING_UNITS.items()}
        for rep in range(s.repeat):
            for key, result in results.items():
                rate = self._ceiling(key)
                result.samples.append(rate)
                self.progress("ceiling %s, run %d/%d: %s %s", key, rep + 1, s.repeat, f"{rate:,.0f}", result.unit)
        return [_finish(r) for r in results.values()]

    def _ceiling(self, key: str) -> float:
        """One run of ceiling ``key`` on a fresh file, deleted afterwards."""
        s = self.s
        path = self.db(f"ceiling-{key}")
        try:
            if key == "commits":
                return ceilings.single_row_commits(path, rows=s.ceiling_commits)
            if key == "commits_full":
                return ceilings.single_row_commits(path, rows=s.full_jobs, synchronous="FULL")
            if key == "bulk_insert":
                return ceilings.batched_insert(path, rows=s.ceiling_bulk, batch=s.many_batch)
            if key == "claim_complete":
                return ceilings.claim_complete(path, rows=s.ceiling_claim, batch=100)
            if key == "asyncio_tasks":
                return ceilings.asyncio_tasks(tasks=s.ceiling_tasks, batch=100)
            if key == "thread_pool":
                return ceilings.thread_pool(calls=s.ceiling_calls, threads=32, in_flight=32)
            raise ValueError(f"unknown ceiling {key!r}")
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

    def throughput(self, group: str, name: str, ceiling: str, *, note: str = "") -> Result:
        """A jobs/s figure judged as a fraction of ``ceiling``, with its target from FRACTION_TARGETS.

        A ``--quick`` run shows the fraction but judges none: its small runs are dominated by
        start-up (a process pool, a worker subprocess), which the targets were not set for.
        """
        bound = None if self.s.quick else FRACTION_TARGETS.get((group, name))
        return Result(group, name, "jobs/s", note=note, ceiling=ceiling,
                      fraction_target=Target(">=", bound) if bound is not None else None)

    def paired(self, *results: Result) -> None:
        """Run the ceiling of ``results`` once, right before their next run, and record it with them.

        The machine drifts within a run too (another process starts, the disk flushes), and
        a ceiling measured a minute earlier would turn that into a wrong fraction: each run of
        a throughput figure is divided by the ceiling measured next to it, and the figure's
        fraction is the median of those ratios (:func:`benchmarks.harness.apply_ceilings`).
        """
        key = results[0].ceiling
        assert key is not None and all(r.ceiling == key for r in results)
        rate = self._ceiling(key)
        for r in results:
            r.ceiling_samples.append(rate)

    # -- start-up ----------------------------------------------------------------

    def startup(self) -> list[Result]:
        """Wall time of fresh interpreters: bare, ``import minijobs``, and a CLI listing.

        A producer-only process and every CLI call pay this once.  Each figure is
        the median of ``startup_runs`` interleaved launches (bytecode cached by a
        first launch), and is also shown as a multiple of the bare interpreter's
        start in the same run, which drifts with the machine as much as ours does.
        """
        s = self.s
        with _closing(self.app("startup")) as app:
            db = app.path
            fn = app.registry[jobs.NOOP]
            for i in range(20):
                fn.enqueue(i)
        env = child_env()
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure what an installed package costs: cached bytecode
        commands = {
            "bare": [sys.executable, "-c", "pass"],
            "import": [sys.executable, "-c", "import minijobs"],
            "cli": [sys.executable, "-m", "minijobs", "--db", db, "jobs", "list", "--limit", "5"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():  # first launch writes the bytecode caches
            subprocess.run(command, env=env, check=True, capture_output=True, cwd=self.tmp)
        for _ in range(s.startup_runs):
            for name, command in commands.items():
                t0 = time.perf_counter()
                subprocess.run(command, env=env, check=True, capture_output=True, cwd=self.tmp)
                times[name].append((time.perf_counter() - t0) * 1000)
        bare = median(times["bare"])
        added = [t - bare for t in times["import"]]
        results = [
            Result("startup", "bare interpreter start", "ms", samples=times["bare"],
                   note="python -c pass: the ceiling the other start-up figures are compared with"),
            Result("startup", "import minijobs (added to a bare start)", "ms", samples=added, target=T_IMPORT_MS,
                   note=f"{median(added) / bare:.2f}x a bare start; no asyncio, executors or worker loaded"),
            Result("startup", "minijobs --db F jobs list", "ms", samples=times["cli"], target=T_CLI_LIST_MS,
                   note=f"{median(times['cli']) / bare:.2f}x a bare start; whole command, 20 jobs in the file"),
        ]
        for result in results:
            self.progress("startup %s: %.0f ms", result.name, median(result.samples))
        return [_finish(r) for r in results]

    # -- enqueue ---------------------------------------------------------------

    def enqueue(self) -> list[Result]:
        s = self.s
        single = self.throughput("enqueue", "one call at a time", "commits",
                                 note=f"{s.enqueue_jobs:,} x fn.enqueue(i), durability=normal")
        full = self.throughput("enqueue", "one call at a time, durability=full", "commits_full",
                               note=f"{s.full_jobs:,} x fn.enqueue(i); an fsync per commit, so fewer calls")
        # enqueue_many against batched executemany inserts: the same rows per transaction.  minijobs
        # inserts a run of jobs with one INSERT ... SELECT FROM json_each, which can beat it (> 1).
        many = self.throughput("enqueue", "enqueue_many", "bulk_insert",
                               note=f"{s.many_jobs:,} jobs in calls of {s.many_batch:,} prepare()d requests "
                                    "(preparing included)")
        for rep in range(s.repeat):
            for result, durability in ((single, "normal"), (full, "full")):
                self.paired(result)
                with _closing(self.app("enqueue", durability=durability)) as app:
                    fn = app.registry[jobs.NOOP]
                    for i in range(100):  # warm the statement cache and the file
                        fn.enqueue(i)
                    n = s.enqueue_jobs if durability == "normal" else s.full_jobs
                    t0 = time.perf_counter()
                    for i in range(n):
                        fn.enqueue(i)
                    rate = n / (time.perf_counter() - t0)
                result.samples.append(rate)
                self.progress("enqueue %s, run %d/%d: %s jobs/s", result.name, rep + 1, s.repeat, f"{rate:,.0f}")
            self.paired(many)
            with _closing(self.app("enqueue-many")) as app:
                fn = app.registry[jobs.NOOP]
                app.enqueue_many([fn.prepare(i) for i in range(100)])
                t0 = time.perf_counter()
                done = 0
                while done < s.many_jobs:
                    size = min(s.many_batch, s.many_jobs - done)
                    app.enqueue_many([fn.prepare(i) for i in range(done, done + size)])
                    done += size
                rate = done / (time.perf_counter() - t0)
            many.samples.append(rate)
            self.progress("enqueue_many, run %d/%d: %s jobs/s", rep + 1, s.repeat, f"{rate:,.0f}")
        return [_finish(r) for r in (single, full, many)]

    # -- drain -----------------------------------------------------------------

    def drain(self) -> list[Result]:
        results: list[Result] = []
        for kind in self.s.executors:
            results.extend(self._drain_executor(kind))
        return results

    def _drain_executor(self, kind: str) -> list[Result]:
        s = self.s
        name = jobs.NOOP if kind == "async" else jobs.NOOP_SYNC
        # Process jobs cost a pipe round trip each: a tenth of the jobs keeps the default run short.
        n = max(1, s.drain_jobs // 10) if kind == "process" else s.drain_jobs
        worker_result = self.throughput("drain", f"{kind} executor, running worker", "claim_complete",
                                        note=f"{n:,} pending no-op jobs, worker start to all succeeded")
        burst_result = self.throughput("drain", f"{kind} executor, app.drain()", "claim_complete",
                                       note=f"{n:,} pending no-op jobs, burst worker")
        # Also compared (in the note) with the raw cost of the executor's own machinery.
        compare = {"async": "asyncio_tasks", "thread": "thread_pool"}.get(kind)
        if compare:
            worker_result.extra["compare"] = burst_result.extra["compare"] = [compare]
        try:
            jobs.executor_class(kind)
        except ImportError as exc:
            for r in (worker_result, burst_result):
                r.note = str(exc)
            self.progress("drain %s: skipped (%s)", kind, exc)
            return [worker_result, burst_result]
        for rep in range(s.repeat):
            self.paired(worker_result, burst_result)
            with _closing(self.app(f"drain-{kind}", executor=kind)) as app:
                _fill(app, name, n)
                elapsed, concurrency = asyncio.run(_run_until_finished(app, n))
                _expect_succeeded(app, n, f"drain {kind}")
            worker_result.samples.append(n / elapsed)
            worker_result.extra["concurrency"] = concurrency
            with _closing(self.app(f"drain-burst-{kind}", executor=kind)) as app:
                _fill(app, name, n)
                t0 = time.perf_counter()
                ran = app.drain()
                elapsed_burst = time.perf_counter() - t0
                if ran != n:
                    raise RuntimeError(f"app.drain() ran {ran} jobs, expected {n}")
                _expect_succeeded(app, n, f"drain() {kind}")
            burst_result.samples.append(n / elapsed_burst)
            self.progress("drain %s, run %d/%d: worker %s jobs/s, drain() %s jobs/s", kind, rep + 1, s.repeat,
                          f"{worker_result.samples[-1]:,.0f}", f"{burst_result.samples[-1]:,.0f}")
        worker_result.note += f", concurrency {worker_result.extra.get('concurrency')}"
        return [_finish(worker_result), _finish(burst_result)]

    # -- latency ---------------------------------------------------------------

    def latency(self) -> list[Result]:
        s = self.s
        out: list[Result] = []
        variants: list[tuple[str, Callable[[], list[float]]]] = [
            ("same process, thread worker", self._latency_thread_worker),
            ("same process, async worker", self._latency_async_worker),
            ("another process", self._latency_cross_process),
        ]
        for label, run in variants:
            p50 = Result("latency", f"enqueue-to-start p50, {label}", "ms",
                         target=T_LAT_XPROC_P50 if label == "another process" else T_LAT_P50,
                         note=f"{s.latency_samples} jobs on an idle worker, one at a time")
            p99 = Result("latency", f"enqueue-to-start p99, {label}", "ms",
                         target=None if label == "another process" else T_LAT_P99)
            for rep in range(s.repeat):
                samples = [x * 1000 for x in run()]
                p50.samples.append(percentile(samples, 50))
                p99.samples.append(percentile(samples, 99))
                self.progress("latency %s, run %d/%d: p50 %.3f ms, p99 %.3f ms", label, rep + 1, s.repeat,
                              p50.samples[-1], p99.samples[-1])
            out += [_finish(p50), _finish(p99)]
        return out

    def _latency_thread_worker(self) -> list[float]:
        samples: list[float] = []
        started = threading.Event()

        def record(delta: float) -> None:
            samples.append(delta)
            started.set()

        with _closing(self.app("latency-thread")) as app, _stamping(record), app.running() as worker:
            fn = app.registry[jobs.STAMP]
            total = self.s.latency_samples + 5
            for i in range(total):
                started.clear()
                fn.enqueue(time.time())
                if not started.wait(10):
                    raise RuntimeError("latency job did not start within 10 s")
                _wait_finished(worker, i + 1, 10)
                time.sleep(random.uniform(0.001, 0.003))  # the worker goes back to sleep
        return samples[5:]

    def _latency_async_worker(self) -> list[float]:
        samples: list[float] = []

        async def main(app: minijobs.App) -> None:
            started = asyncio.Event()

            def record(delta: float) -> None:
                samples.append(delta)
                started.set()

            fn = app.registry[jobs.STAMP]
            with _stamping(record):
                async with app.worker() as worker:
                    for i in range(self.s.latency_samples + 5):
                        started.clear()
                        await fn.enqueue_async(time.time())
                        async with asyncio.timeout(10):
                            await started.wait()
                            while worker.jobs_finished <= i:
                                await asyncio.sleep(0.0005)
                        await asyncio.sleep(random.uniform(0.001, 0.003))

        with _closing(self.app("latency-async")) as app:
            asyncio.run(main(app))
        return samples[5:]

    def _latency_cross_process(self) -> list[float]:
        samples: list[float] = []
        warmup = 5
        total = self.s.latency_samples + warmup
        with _closing(self.app("latency-xproc")) as app, _stamping(samples.append), app.running() as worker:
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.child", "enqueue-stamps", "--db", app.path,
                 "--count", str(total), "--min-gap-s", "0.005", "--max-gap-s", "0.015"],
                cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            try:
                _, err = proc.communicate(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if proc.returncode != 0:
                raise RuntimeError(f"enqueuing child failed ({proc.returncode}):\n{err[-4000:]}")
            _wait_for(lambda: worker.jobs_finished >= total, 30)
        return samples[warmup:]

    # -- scale -----------------------------------------------------------------

    def scale(self) -> list[Result]:
        s = self.s
        results: list[Result] = []
        base_rate: float | None = None
        base_rss: float | None = None
        for label in s.scale:
            size = SCALE_SIZES[label]
            path = self.db(f"scale-{label}")
            with _closing(jobs.build_app(path)) as app:
                app.open()
            t0 = time.perf_counter()
            _insert_backlog(path, pending=size, finished=size)
            self.progress("scale %s: built %s pending + %s finished rows in %.1f s", label, f"{size:,}",
                          f"{size:,}", time.perf_counter() - t0)
            rate = self.throughput("scale", f"drain rate, {label} pending", "claim_complete",
                                   note=f"{min(s.scale_sample, size):,} jobs drained by a worker subprocess "
                                        f"(async executor) from {size:,} pending + {size:,} finished rows; "
                                        "rate from the 10% to the 100% mark")
            rss = Result("scale", f"worker RSS after draining, {label} pending", "MiB")
            growth = Result("scale", f"worker RSS growth while draining, {label} pending", "MiB")
            for rep in range(s.repeat):
                _top_up(path, size)
                self.paired(rate)
                sample = min(s.scale_sample, size)
                data = run_child(["scale-drain", "--db", str(path), "--count", str(sample)], timeout_s=600)
                rate.samples.append(data["rate"])
                rss.samples.append(data["rss_end"] / 2**20)
                growth.samples.append((data["rss_end"] - data["rss_start"]) / 2**20)
                self.progress("scale %s, run %d/%d: %s jobs/s, RSS %.1f MiB (+%.1f)", label, rep + 1, s.repeat,
                              f"{data['rate']:,.0f}", rss.samples[-1], growth.samples[-1])
            _finish(rate)
            _finish(rss)
            _finish(growth)
            results += [rate, rss, growth]
            if base_rate is None:
                base_rate, base_rss = rate.value, rss.value
                base_label = label
            else:
                assert rate.value is not None and rss.value is not None and base_rss is not None
                results.append(Result("scale", f"drain rate {label} / {base_label}", "x", value=rate.value / base_rate,
                                      target=T_SCALE_RATIO, note="within 20% of the smallest backlog"))
                results.append(Result("scale", f"worker RSS {label} / {base_label}", "x", value=rss.value / base_rss,
                                      target=T_SCALE_MEMORY, note="memory flat: at most 20% above the smallest"))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            results.append(self._scale_delayed(label, size, base_rate))
        return results

    def _scale_delayed(self, label: str, size: int, base_rate: float | None) -> Result:
        """Drain rate of due jobs queued behind ``size`` jobs scheduled an hour ahead (retries, delays)."""
        s = self.s
        sample = min(max(1, s.scale_sample // 4), size)  # these drains are slow by nature: keep them short
        path = self.db(f"scale-delayed-{label}")
        with _closing(jobs.build_app(path)) as app:
            app.open()
        _insert_backlog(path, pending=0, finished=0, delayed=size)
        result = self.throughput("scale", f"drain rate, {label} delayed jobs ahead", "claim_complete",
                                 note=f"{sample:,} due jobs with higher ids than {size:,} jobs scheduled an hour ahead")
        for rep in range(s.repeat):
            _top_up(path, sample)
            self.paired(result)
            data = run_child(["scale-drain", "--db", str(path), "--count", str(sample)], timeout_s=600)
            result.samples.append(data["rate"])
            self.progress("scale %s delayed ahead, run %d/%d: %s jobs/s", label, rep + 1, s.repeat,
                          f"{data['rate']:,.0f}")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        _finish(result)
        if base_rate and result.value is not None:
            result.note += f"; {result.value / base_rate:.2f}x the rate with only due jobs"
        return result

    # -- idle ------------------------------------------------------------------

    def idle(self) -> list[Result]:
        """CPU of an idle worker in a subprocess: with the default plugins (the target) and without any."""
        s = self.s
        out: list[Result] = []
        delayed = 10_000 if s.quick else 100_000
        for no_plugins, backlog in ((False, 0), (True, 0), (False, delayed)):
            label = "no plugins" if no_plugins else "default plugins"
            if backlog:
                label += f", {backlog:,} jobs scheduled an hour ahead"
            result = Result("idle", f"worker CPU over {s.idle_s:g} s, {label}", "%",
                            target=T_IDLE if label == "default plugins" else None,
                            note=f"idle worker in a subprocess, App(plugins={'[]' if no_plugins else 'None'}); "
                                 "% of one core")
            path = self.db("idle")
            with _closing(jobs.build_app(path)) as app:
                app.open()
            if backlog:
                _insert_backlog(path, pending=0, finished=0, delayed=backlog)
            windows = max(1, s.repeat)
            args = ["idle", "--db", str(path), "--seconds", str(s.idle_s), "--windows", str(windows)]
            data = run_child(args + (["--no-plugins"] if no_plugins else []), timeout_s=s.idle_s + 60)
            # The figure is the whole span (periodic plugin work would make a median of windows flatter).
            result.samples = data["windows"]
            result.value = data["total"]
            self.progress("idle (%s): %.2f %% of a core (windows %s)", label, data["total"],
                          [round(x, 2) for x in data["windows"]])
            out.append(result)
        return out

    # -- the user's workload -----------------------------------------------------

    def workload(self) -> list[Result]:
        s = self.s
        assert s.workload is not None
        func = jobs.load_workload(s.workload)
        label = f"{s.workload} ({s.workload_executor})"
        throughput = self.throughput("workload", f"{label} throughput", "claim_complete",
                                     note=f"{s.workload_jobs:,} pending jobs, worker start to all finished")
        p50 = Result("workload", f"{label} enqueue-to-start p50", "ms",
                     note=f"{s.latency_samples} jobs one at a time, same process")
        p99 = Result("workload", f"{label} enqueue-to-start p99", "ms")
        name = f"{func.__module__}.{func.__qualname__}".replace("<", "_").replace(">", "_")
        for rep in range(s.repeat):
            with _closing(self.app("workload", executor=s.workload_executor)) as app:
                fn = app.job(name=name)(func)
                requests = [fn.prepare(*s.workload_args, **s.workload_kwargs) for _ in range(s.workload_jobs)]
                app.enqueue_many(requests)
                elapsed, _ = asyncio.run(_run_until_finished(app, s.workload_jobs))
                counts = app.store.count_by_state()
                failed = counts[minijobs.JobState.FAILED]
            throughput.samples.append(s.workload_jobs / elapsed)
            if failed:
                throughput.note += f"; {failed} jobs FAILED (see app.jobs(state='failed'))"
            if s.workload_executor == "process":
                self.progress("workload, run %d/%d: %s jobs/s", rep + 1, s.repeat, f"{throughput.samples[-1]:,.0f}")
                continue
            samples = self._workload_latency(func, name)
            p50.samples.append(percentile(samples, 50) * 1000)
            p99.samples.append(percentile(samples, 99) * 1000)
            self.progress("workload, run %d/%d: %s jobs/s, p50 %.3f ms, p99 %.3f ms", rep + 1, s.repeat,
                          f"{throughput.samples[-1]:,.0f}", p50.samples[-1], p99.samples[-1])
        if s.workload_executor == "process":
            p50.note = p99.note = "not measured for the process executor (the timing wrapper cannot cross processes)"
            return [_finish(throughput), p50, p99]
        return [_finish(throughput), _finish(p50), _finish(p99)]

    def _workload_latency(self, func: Callable[..., Any], name: str) -> list[float]:
        """Enqueue-to-start of the user's function, timed by a wrapper registered under its name."""
        s = self.s
        starts: list[float] = []
        started = threading.Event()

        def mark() -> None:
            starts.append(time.time())
            started.set()

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def timed(*args: Any, **kwargs: Any) -> Any:
                mark()
                return await func(*args, **kwargs)
        else:
            @functools.wraps(func)
            def timed(*args: Any, **kwargs: Any) -> Any:
                mark()
                return func(*args, **kwargs)

        samples: list[float] = []
        with _closing(self.app("workload-latency", executor=s.workload_executor)) as app:
            fn = app.job(name=name)(timed)
            with app.running() as worker:
                for i in range(s.latency_samples + 5):
                    started.clear()
                    sent = time.time()
                    fn.enqueue(*s.workload_args, **s.workload_kwargs)
                    if not started.wait(60):
                        raise RuntimeError("workload job did not start within 60 s")
                    samples.append(starts[-1] - sent)
                    _wait_finished(worker, i + 1, 600)
                    time.sleep(random.uniform(0.001, 0.003))
        return samples[5:]


# -- helpers -----------------------------------------------------------------------


class _closing:
    """``with _closing(app) as app:`` closes the app's store at the end."""

    def __init__(self, app: minijobs.App) -> None:
        self.app = app

    def __enter__(self) -> minijobs.App:
        return self.app

    def __exit__(self, *exc: object) -> None:
        self.app.close()


class _stamping:
    """Route the stamp jobs' measurements to ``callback`` for the duration of the block."""

    def __init__(self, callback: Callable[[float], None]) -> None:
        self.callback = callback

    def __enter__(self) -> None:
        jobs.on_stamp = self.callback

    def __exit__(self, *exc: object) -> None:
        jobs.on_stamp = None


def _finish(result: Result) -> Result:
    if result.samples:
        result.value = median(result.samples)
    return result


def _fill(app: minijobs.App, name: str, n: int) -> None:
    fn = app.registry[name]
    for start in range(0, n, 10_000):
        app.enqueue_many([fn.prepare(i) for i in range(start, min(n, start + 10_000))])


async def _run_until_finished(app: minijobs.App, n: int) -> tuple[float, int]:
    """Start a worker, return (seconds until it finished ``n`` attempts, queue concurrency)."""
    t0 = time.perf_counter()
    async with app.worker() as worker:
        while worker.jobs_finished < n:
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - t0
        concurrency = sum(e.concurrency for e in worker.executors.values())
    return elapsed, concurrency


def _expect_succeeded(app: minijobs.App, n: int, what: str) -> None:
    counts = app.store.count_by_state()
    if counts[minijobs.JobState.SUCCEEDED] != n:
        raise RuntimeError(f"{what}: expected {n} succeeded jobs, found {dict(counts)}")


def _wait_finished(worker: minijobs.Worker, n: int, timeout_s: float) -> None:
    _wait_for(lambda: worker.jobs_finished >= n, timeout_s)


def _wait_for(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s} s")
        time.sleep(0.0002)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


_BACKLOG_SQL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO minijobs_jobs (name, queue, payload, state, priority, attempts, max_attempts, scheduled_at, created_at,
                           started_at, completed_at, waiting)
SELECT :name, 'default', '{"args":[' || i || '],"kwargs":{}}', :state, 0, :attempts, 1, :due, :now,
       CASE WHEN :state = 'succeeded' THEN :now END, CASE WHEN :state = 'succeeded' THEN :now END,
       :state = 'pending' AND :due > :now
FROM n
"""


def _insert_backlog(path: Path, *, pending: int, finished: int, delayed: int = 0) -> None:
    """Raw SQL set-up: ``finished`` succeeded rows (history), ``delayed`` jobs due in an hour, then
    ``pending`` runnable no-op jobs (so delayed jobs sit ahead of the due ones in id order)."""
    now = time.time()
    conn = _connect(path)
    try:
        for count, state, attempts, due in (
            (finished, "succeeded", 1, now), (delayed, "pending", 0, now + 3600), (pending, "pending", 0, now)
        ):
            if count:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_BACKLOG_SQL, {"count": count, "name": jobs.NOOP, "state": state,
                                            "attempts": attempts, "now": now, "due": due})
                conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _top_up(path: Path, size: int) -> None:
    conn = _connect(path)
    try:
        (pending,) = conn.execute(
            "SELECT count(*) FROM minijobs_jobs WHERE state IN ('pending', 'retrying') AND scheduled_at <= ?",
            (time.time(),)).fetchone()
    finally:
        conn.close()
    if pending < size:
        _insert_backlog(path, pending=size - pending, finished=0)


def parse_json_arg(text: str, kind: type) -> Any:
    """A command-line JSON argument of type ``kind`` (exits with a message otherwise)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"not valid JSON: {text!r} ({exc})") from None
    if not isinstance(value, kind):
        raise SystemExit(f"expected a JSON {'array' if kind is list else 'object'}, got {text!r}")
    return value
