"""Subprocess side of the benchmarks: ``python -m benchmarks.child COMMAND ...``; prints one JSON line.

* ``enqueue-stamps``: enqueue stamp jobs into a file another process's worker serves (cross-process latency);
* ``scale-drain``: run a fresh worker until it finished ``--count`` jobs; report rate and memory;
* ``idle``: run an idle worker and report the CPU it used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

from . import jobs
from .harness import cpu_seconds, peak_rss_bytes, rss_bytes


def enqueue_stamps(args: argparse.Namespace) -> dict[str, object]:
    app = jobs.build_app(args.db)
    try:
        fn = app.registry[jobs.STAMP]
        app.open()
        for _ in range(args.count):
            fn.enqueue(time.time())
            time.sleep(random.uniform(args.min_gap_s, args.max_gap_s))
    finally:
        app.close()
    return {"enqueued": args.count}


def scale_drain(args: argparse.Namespace) -> dict[str, object]:
    app = jobs.build_app(args.db)
    app.open()
    rss_start = rss_bytes()

    # The rate is taken between the 10% and the 100% marks: steady-state draining, without the
    # worker's start-up (plugins, first claims) that weighs differently on small and big files.
    mark = max(1, args.count // 10)

    async def main() -> tuple[float, float, int]:
        t0 = time.perf_counter()
        t_mark = None
        async with app.worker() as worker:
            while worker.jobs_finished < args.count:
                if t_mark is None and worker.jobs_finished >= mark:
                    t_mark = time.perf_counter()
                await asyncio.sleep(0.001)
            t_end = time.perf_counter()
            rss_end = rss_bytes()
        return t_end - t0, t_end - (t_mark or t0), rss_end

    try:
        elapsed, steady, rss_end = asyncio.run(main())
    finally:
        app.close()
    return {"rate": (args.count - mark) / steady, "rate_from_start": args.count / elapsed, "seconds": elapsed,
            "rss_start": rss_start, "rss_end": rss_end, "rss_peak": peak_rss_bytes()}


def idle(args: argparse.Namespace) -> dict[str, object]:
    app = jobs.build_app(args.db, plugins=[] if args.no_plugins else None)
    windows: list[float] = []
    try:
        with app.running():
            time.sleep(1.0)  # start-up work is not idle cost
            total_cpu0, total_wall0 = cpu_seconds(), time.monotonic()
            for _ in range(args.windows):
                cpu0, wall0 = cpu_seconds(), time.monotonic()
                time.sleep(args.seconds / args.windows)
                windows.append(100 * (cpu_seconds() - cpu0) / (time.monotonic() - wall0))
            total = 100 * (cpu_seconds() - total_cpu0) / (time.monotonic() - total_wall0)
    finally:
        app.close()
    return {"windows": windows, "total": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.child")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("enqueue-stamps")
    p.add_argument("--db", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--min-gap-s", type=float, default=0.005)
    p.add_argument("--max-gap-s", type=float, default=0.015)
    p = sub.add_parser("scale-drain")
    p.add_argument("--db", required=True)
    p.add_argument("--count", type=int, required=True)
    p = sub.add_parser("idle")
    p.add_argument("--db", required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--windows", type=int, default=1)
    p.add_argument("--no-plugins", action="store_true", help="App(plugins=[]) instead of the default plugins")
    args = parser.parse_args(argv)
    command = {"enqueue-stamps": enqueue_stamps, "scale-drain": scale_drain, "idle": idle}[args.command]
    print(json.dumps(command(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
