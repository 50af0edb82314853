"""``python3 -m benchmarks`` (also ``minijobs bench``): run the benchmark suite and print the table.

Progress goes to stderr, the table to stdout; ``--json PATH`` also writes
every sample.  The exit status is 0 unless a benchmark crashed, or ``--check``
was given and a figure missed its target.  ``--ab REV`` compares another
revision with this tree instead (:mod:`benchmarks.ab`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .cases import SCALE_SIZES, Bench, Settings, parse_json_arg
from .harness import Progress, Result, apply_ceilings, format_markdown, format_table, machine_info, write_json

GROUPS = ("ceilings", "startup", "enqueue", "drain", "latency", "scale", "idle", "workload")
#: Groups whose figures are fractions of a ceiling: whenever one runs, the ceilings run first.
THROUGHPUT_GROUPS = frozenset({"enqueue", "drain", "scale", "workload"})
EXECUTORS = ("async", "thread", "process")


def _csv(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [item.strip().lower() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f"{what}: unknown {unknown or text!r}; choose from {', '.join(allowed)}")
    return items


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks",
        description="Benchmark minijobs on this machine: enqueue, drain, latency, scale, idle cost.",
    )
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure; the median is reported (default 3)")
    parser.add_argument("--quick", action="store_true", help="small sizes and one run: a smoke test in ~15 s")
    parser.add_argument("--only", type=lambda t: _csv(t, GROUPS, "--only"), default=None,
                        help=f"comma-separated groups to run: {','.join(GROUPS)}")
    parser.add_argument("--scale", type=lambda t: _csv(t, tuple(SCALE_SIZES), "--scale"), default=None,
                        help="pending backlog sizes for the scale group (default 10k,100k; 1m is opt-in)")
    parser.add_argument("--executors", type=lambda t: _csv(t, EXECUTORS, "--executors"), default=None,
                        help="executors for the drain group (default async,thread,process)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="queue concurrency (default: the executor's default)")
    parser.add_argument("--jobs", type=int, default=None, help="jobs per drain run (default 20000)")
    parser.add_argument("--idle-seconds", type=float, default=None, help="idle measurement length (default 10)")
    parser.add_argument("--workload", metavar="MODULE:FUNCTION", default=None,
                        help="time your own job function (registered on a benchmark app) for throughput and latency")
    parser.add_argument("--workload-args", default="[]", metavar="JSON", help="JSON list of positional arguments")
    parser.add_argument("--workload-kwargs", default="{}", metavar="JSON", help="JSON object of keyword arguments")
    parser.add_argument("--workload-executor", choices=EXECUTORS, default="async")
    parser.add_argument("--workload-jobs", type=int, default=None, help="jobs per workload throughput run (default 2000)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write results (with all samples) as JSON")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--check", action="store_true", help="exit 1 if any figure misses its target")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--ab", metavar="REV", default=None,
                        help="compare git revision REV (A) with this tree (B): alternating runs in subprocesses")
    parser.add_argument("--rounds", type=int, default=3, help="with --ab: runs of each side (default 3)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    s = Settings.quick_run() if args.quick else Settings()
    if args.repeat is not None:
        if args.repeat < 1:
            raise SystemExit("--repeat must be >= 1")
        s.repeat = args.repeat
    if args.scale is not None:
        s.scale = args.scale
    if args.executors is not None:
        s.executors = args.executors
    if args.concurrency is not None:
        s.concurrency = args.concurrency
    if args.jobs is not None:
        s.drain_jobs = args.jobs
    if args.idle_seconds is not None:
        s.idle_s = args.idle_seconds
    if args.workload_jobs is not None:
        s.workload_jobs = args.workload_jobs
    if args.workload is not None:
        s.workload = args.workload
        s.workload_args = parse_json_arg(args.workload_args, list)
        s.workload_kwargs = parse_json_arg(args.workload_kwargs, dict)
        s.workload_executor = args.workload_executor
    return s


def select_groups(only: Sequence[str] | None, *, workload: bool) -> list[str]:
    """The groups to run in suite order, the ceilings first whenever a throughput group runs."""
    if only is not None:
        chosen = set(only)
    elif workload:
        chosen = {"workload"}  # timing your own function: skip the built-in suite unless asked with --only
    else:
        chosen = set(GROUPS) - {"workload"}
    if chosen & THROUGHPUT_GROUPS:
        chosen.add("ceilings")
    return [g for g in GROUPS if g in chosen]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    settings = settings_from(args)
    groups = select_groups(args.only, workload=settings.workload is not None)
    if args.ab is not None:
        from .ab import run_ab  # only here: the A/B driver runs the suite in subprocesses

        return run_ab(args, groups)
    if "workload" in groups and settings.workload is None:
        raise SystemExit("--only workload needs --workload MODULE:FUNCTION")
    # Warnings from the worker (e.g. a crashing workload) should be seen, not swallowed.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    progress = Progress(quiet=args.quiet)
    info = machine_info()
    progress("minijobs benchmarks: Python %s, SQLite %s, %s CPUs, commit %s; groups %s, %d run(s) each",
             info["python"], info["sqlite"], info["cpus"], info["commit"] or "?", ",".join(groups), settings.repeat)
    if info["load_average"] and info["load_average"][0] > 0.5:
        progress("warning: load average %s before starting; other processes will lower the figures",
                 info["load_average"])
    results: list[Result] = []
    failed = False
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="minijobs-bench-") as tmp:
        bench = Bench(settings, Path(tmp), progress)
        for group in groups:
            try:
                results += getattr(bench, group)()
            except Exception as exc:  # report the crash, keep the other groups' figures
                failed = True
                progress("%s FAILED: %s: %s", group, type(exc).__name__, exc)
                logging.getLogger("benchmarks").exception("benchmark group %s crashed", group)
                results.append(Result(group, "(crashed)", "", note=f"{type(exc).__name__}: {exc}"))
    apply_ceilings(results)
    progress("done in %.0f s (load average now %s)", time.monotonic() - t0, machine_info()["load_average"])
    print(format_markdown(results) if args.markdown else format_table(results))
    if args.json:
        write_json(args.json, results, {k: getattr(settings, k) for k in settings.__slots__} | {"groups": groups})
        progress("wrote %s", args.json)
    if failed:
        return 2
    if args.check and any(r.ok is False for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
