"""Plumbing shared by the benchmarks: results with targets, medians, progress, the table and JSON."""

from __future__ import annotations

import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Target:
    """``value op bound`` must hold: ``op`` is ``">="`` or ``"<="``."""

    op: str
    bound: float

    def check(self, value: float) -> bool:
        return value >= self.bound if self.op == ">=" else value <= self.bound


#: Ceilings (see :mod:`benchmarks.ceilings`) by key: the figure name in the ``ceilings`` group and
#: the short label the report prints after a fraction.
CEILINGS: dict[str, tuple[str, str]] = {
    "commits": ("single-row INSERT commits", "single-row commits"),
    "commits_full": ("single-row INSERT commits, synchronous=FULL", "single-row commits, FULL"),
    "bulk_insert": ("batched INSERT, executemany per transaction", "batched inserts"),
    "claim_complete": ("claim+complete, 100 rows per transaction", "claim+complete 100/txn"),
    "asyncio_tasks": ("bare asyncio task create+await", "asyncio tasks"),
    "thread_pool": ("bare ThreadPoolExecutor submit+result, 32 threads", "thread pool calls"),
}


@dataclass(slots=True)
class Result:
    """One figure of the report: the median of ``samples`` (or a note why it was skipped).

    A throughput figure names the ``ceiling`` it is judged against; :func:`apply_ceilings`
    sets its ``fraction`` of that ceiling as measured in the same run (next to each
    sample where ``ceiling_samples`` has one per sample), and
    ``fraction_target`` is checked on that fraction, since absolute rates drift with the
    machine.  ``target`` is checked on the value itself (latency, idle cost, ratios).
    """

    group: str
    name: str
    unit: str
    value: float | None = None
    samples: list[float] = field(default_factory=list)
    target: Target | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    ceiling: str | None = None
    #: The ceiling measured right before each of ``samples`` (see ``Bench.paired``); may be empty.
    ceiling_samples: list[float] = field(default_factory=list)
    fraction: float | None = None
    fraction_target: Target | None = None

    @property
    def ok(self) -> bool | None:
        checks: list[bool] = []
        if self.target is not None and self.value is not None:
            checks.append(self.target.check(self.value))
        if self.fraction_target is not None and self.fraction is not None:
            checks.append(self.fraction_target.check(self.fraction))
        return all(checks) if checks else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def apply_ceilings(results: Sequence[Result]) -> None:
    """Set each throughput figure's ``fraction`` of its ceiling.

    The median of the ratios of each sample to the ceiling run paired with it, where every
    sample has one; otherwise the figure over the ceilings group's median of the same run.
    """
    measured = {r.extra.get("ceiling_key"): r.value for r in results if r.group == "ceilings" and r.value}
    for r in results:
        base = measured.get(r.ceiling) if r.ceiling else None
        if r.ceiling and r.samples and len(r.ceiling_samples) == len(r.samples) and all(r.ceiling_samples):
            r.fraction = median([v / c for v, c in zip(r.samples, r.ceiling_samples, strict=True)])
        elif base and r.value is not None:
            r.fraction = r.value / base
        for key in r.extra.get("compare", ()):  # secondary yardsticks go to the note only
            other = measured.get(key)
            if other and r.value is not None:
                r.note += f"; {r.value / other:.2f} of {ceiling_label(key)}"


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 200 samples is the 198th smallest)."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.4999)))
    return ordered[rank - 1]


class Progress:
    """Progress lines on stderr, so stdout carries only the table."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.started = time.monotonic()

    def __call__(self, message: str, *args: Any) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:7.1f}s] {message % args if args else message}", file=sys.stderr, flush=True)


def rss_bytes() -> int:
    """Current resident set size of this process (VmRSS), or the peak where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_env() -> dict[str, str]:
    """Environment for benchmark subprocesses: the checkout first on the path, no bytecode surprises."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_child(args: Sequence[str], *, timeout_s: float) -> dict[str, Any]:
    """Run ``python -m benchmarks.child ARGS`` and return the JSON object it prints last."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", *args],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {list(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"benchmark child {list(args)} printed no result:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def machine_info() -> dict[str, Any]:
    commit = ""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "minijobs"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        if dirty:
            commit += "+dirty"
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "load_average": load,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "commit": commit,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# -- the report ------------------------------------------------------------


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit.endswith("/s"):
        return f"{value:,.0f} {unit}"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    if unit == "%":
        return f"{value:.2f} %"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:,.3g} {unit}"


def _fmt_target(result: Result) -> str:
    parts = []
    if result.target is not None:
        parts.append(f"{result.target.op} {fmt_value(result.target.bound, result.unit)}")
    if result.fraction_target is not None:
        parts.append(f"{result.fraction_target.op} {fmt_ratio(result.fraction_target.bound)} of ceiling")
    return ", ".join(parts)


def fmt_ratio(value: float) -> str:
    """Two decimals, three below 0.1 (the process executor's fractions are a few hundredths)."""
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"


def ceiling_label(key: str | None) -> str:
    return CEILINGS[key][1] if key in CEILINGS else str(key)


def fmt_fraction(fraction: float | None, ceiling: str | None) -> str:
    """``0.87 of single-row commits``; ``-`` when there is no fraction."""
    if fraction is None:
        return "-" if ceiling else ""
    return f"{fmt_ratio(fraction)} of {ceiling_label(ceiling)}"


def format_table(results: Sequence[Result]) -> str:
    rows: list[tuple[str, ...]] = [("benchmark", "figure", "value", "of ceiling", "target", "")]
    for r in results:
        mark = {True: "PASS", False: "FAIL", None: ""}[r.ok]
        value = fmt_value(r.value, r.unit) if r.value is not None else "skipped"
        rows.append((r.group, r.name, value, fmt_fraction(r.fraction, r.ceiling), _fmt_target(r), mark))
    if not any(r.ceiling for r in results):  # no throughput figure: no "of ceiling" column
        rows = [row[:3] + row[4:] for row in rows]
    return "\n".join(text_table(rows, right=(2,)) + _notes(results))


def text_table(rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> list[str]:
    """Aligned columns, a rule under the header row; columns in ``right`` are right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        cells = [cell.rjust(w) if i and j in right else cell.ljust(w) for j, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * max(w, 4) for w in widths).rstrip())
    return lines


def _notes(results: Sequence[Result]) -> list[str]:
    notes = [f"- {r.group} / {r.name}: {r.note}" for r in results if r.note]
    return ["", "notes:", *notes] if notes else []


def format_markdown(results: Sequence[Result]) -> str:
    lines = ["| benchmark | figure | value | of ceiling | target | |", "|---|---|---:|---|---|---|"]
    for r in results:
        mark = {True: "pass", False: "**FAIL**", None: ""}[r.ok]
        value = fmt_value(r.value, r.unit) if r.value is not None else f"skipped: {r.note}"
        lines.append(f"| {r.group} | {r.name} | {value} | {fmt_fraction(r.fraction, r.ceiling)} | "
                     f"{_fmt_target(r)} | {mark} |")
    return "\n".join(lines)


def write_json(path: str, results: Sequence[Result], settings: dict[str, Any]) -> None:
    data = {"machine": machine_info(), "settings": settings, "results": [r.as_dict() for r in results]}
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
