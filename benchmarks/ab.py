"""``python3 -m benchmarks --ab REV``: revision REV (side A) against this tree (side B).

A is a temporary ``git worktree add --detach`` of REV, removed at the end.
Each round runs A then B, each as a fresh ``python3 -m benchmarks --only ...
--json OUT`` subprocess with its working directory (and ``PYTHONPATH``) at its
own tree, so each side imports its own ``minijobs`` and runs its own
benchmark code.  Alternating the sides spreads the machine's drift over both;
each side's fractions are of the ceilings it measured in the same process.

A revision older than some group or figure simply lacks it: the group is not
asked of that side, and the table shows ``-``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .harness import ROOT, Progress, ceiling_label, fmt_ratio, fmt_value, machine_info, median, text_table

#: Options passed on to both sides as given (all exist since the suite's first version).
_FORWARDED = (
    ("quick", "--quick"), ("scale", "--scale"), ("executors", "--executors"), ("concurrency", "--concurrency"),
    ("jobs", "--jobs"), ("idle_seconds", "--idle-seconds"), ("workload", "--workload"),
    ("workload_jobs", "--workload-jobs"),
)


@dataclass(slots=True)
class Figure:
    """One figure of one side over the rounds."""

    group: str
    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    ceiling: str | None = None


@dataclass(slots=True)
class Side:
    label: str
    tree: Path
    commit: str = ""
    groups: list[str] = field(default_factory=list)
    figures: dict[tuple[str, str], Figure] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _git(*args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _env(tree: Path) -> dict[str, str]:
    """The environment of a side's processes: its own tree first on the path, nothing inherited there."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    return env


def _groups_of(tree: Path) -> list[str]:
    """The groups the benchmark suite of ``tree`` knows (read from its own ``GROUPS``)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import json; from benchmarks.__main__ import GROUPS; print(json.dumps(list(GROUPS)))"],
        cwd=tree, env=_env(tree), capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: cannot read the benchmark groups:\n{proc.stderr[-2000:]}")
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def _options(args: argparse.Namespace) -> list[str]:
    out = ["--repeat", str(args.repeat if args.repeat is not None else 1)]
    for attr, flag in _FORWARDED:
        value = getattr(args, attr)
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        else:
            out += [flag, ",".join(value) if isinstance(value, list) else str(value)]
    if args.workload is not None:
        out += ["--workload-args", args.workload_args, "--workload-kwargs", args.workload_kwargs,
                "--workload-executor", args.workload_executor]
    return out


def _run_side(side: Side, wanted: list[str], options: list[str], out: Path, progress: Progress, what: str) -> None:
    groups = [g for g in wanted if g in side.groups]
    if not groups:
        side.problems.append(f"{what}: none of {','.join(wanted)} exists in this revision's suite")
        return
    command = [sys.executable, "-m", "benchmarks", *options, "--only", ",".join(groups), "--json", str(out), "--quiet"]
    proc = subprocess.run(command, cwd=side.tree, env=_env(side.tree), capture_output=True, text=True, check=False)
    if not out.exists():
        side.problems.append(f"{what}: exited {proc.returncode} without results: {proc.stderr.strip()[-400:]}")
        progress("%s: FAILED (exit %d)", what, proc.returncode)
        return
    data = json.loads(out.read_text(encoding="utf-8"))
    out.unlink()
    side.runs.append(data)
    side.commit = data.get("machine", {}).get("commit", "") or side.commit
    for r in data.get("results", []):
        if r.get("name") == "(crashed)":
            side.problems.append(f"{what}: group {r.get('group')} crashed: {r.get('note')}")
            continue
        key = (r["group"], r["name"])
        fig = side.figures.setdefault(key, Figure(r["group"], r["name"], r.get("unit", "")))
        if r.get("value") is not None:
            fig.values.append(float(r["value"]))
        if r.get("fraction") is not None:
            fig.fractions.append(float(r["fraction"]))
        fig.ceiling = r.get("ceiling") or fig.ceiling
    progress("%s: done (exit %d)", what, proc.returncode)


def _med(values: list[float]) -> float | None:
    return median(values) if values else None


def _rows(a: Side, b: Side) -> list[tuple[str, ...]]:
    keys = list(b.figures) + [k for k in a.figures if k not in b.figures]
    rows: list[tuple[str, ...]] = []
    for key in keys:
        fa, fb = a.figures.get(key), b.figures.get(key)
        either = fb or fa
        unit = either.unit if either else ""
        va = _med(fa.values) if fa else None
        vb = _med(fb.values) if fb else None
        ratio = f"{vb / va:.2f}x" if va and vb is not None else "-"
        fra = _med(fa.fractions) if fa else None
        frb = _med(fb.fractions) if fb else None
        ceiling = (fb.ceiling if fb else None) or (fa.ceiling if fa else None)
        blank = "-" if ceiling else ""  # figures that are not judged against a ceiling show nothing
        rows.append((key[0], key[1], fmt_value(va, unit), fmt_value(vb, unit), ratio,
                     blank if fra is None else fmt_ratio(fra), blank if frb is None else fmt_ratio(frb),
                     ceiling_label(ceiling) if ceiling else ""))
    return rows


HEADER = ("benchmark", "figure", "A median", "B median", "B/A", "A of ceiling", "B of ceiling", "ceiling")


def format_ab(a: Side, b: Side, rounds: int, *, markdown: bool) -> str:
    intro = (f"A = {a.label} ({a.commit or '?'}), B = {b.label} ({b.commit or '?'}); {rounds} round(s), "
             "run alternately A, B in fresh processes; medians over the rounds.  B/A > 1: B is higher "
             "(better for rates, worse for ms and %).  Fractions are of each side's own ceilings.")
    rows = _rows(a, b)
    problems = [f"- A: {p}" for p in a.problems] + [f"- B: {p}" for p in b.problems]
    if markdown:
        lines = [intro, "", "| " + " | ".join(HEADER) + " |", "|---|---|---:|---:|---:|---:|---:|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        lines = [intro, "", *text_table([HEADER, *rows], right=(2, 3, 4, 5, 6))]
    if problems:
        lines += ["", "problems:", *problems]
    return "\n".join(lines)


def run_ab(args: argparse.Namespace, wanted: list[str]) -> int:
    """Run the ``wanted`` groups (those each side has) for REV and this tree; print the comparison."""
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    if args.check:
        raise SystemExit("--check does not apply to --ab (it compares two sides, it judges neither)")
    progress = Progress(quiet=args.quiet)
    sha = _git("rev-parse", "--verify", f"{args.ab}^{{commit}}")
    options = _options(args)
    info = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="minijobs-ab-"))
    tree_a = tmp / "a"
    a = Side(f"{args.ab}", tree_a)
    b = Side("this tree", ROOT, commit=info["commit"])
    try:
        _git("worktree", "add", "--detach", str(tree_a), sha)
        a.groups = _groups_of(tree_a)
        b.groups = _groups_of(ROOT)
        progress("A/B: A = %s (%s) at %s, B = this tree (%s); groups %s; %d round(s), options %s",
                 args.ab, sha[:10], tree_a, info["commit"], ",".join(wanted), args.rounds, " ".join(options))
        for n in range(args.rounds):
            for name, side in (("A", a), ("B", b)):
                _run_side(side, wanted, options, tmp / f"{name}-{n}.json", progress,
                          f"{name} round {n + 1}/{args.rounds}")
    finally:
        proc = subprocess.run(["git", "worktree", "remove", "--force", str(tree_a)], cwd=ROOT,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0 and tree_a.exists():
            shutil.rmtree(tree_a, ignore_errors=True)
            subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print(format_ab(a, b, args.rounds, markdown=args.markdown))
    if args.json:
        data = {"machine": info, "rev": args.ab, "sha": sha, "rounds": args.rounds, "options": options,
                "header": HEADER, "table": _rows(a, b), "a": {"commit": a.commit, "runs": a.runs},
                "b": {"commit": b.commit, "runs": b.runs}}
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        progress("wrote %s", args.json)
    return 2 if a.problems or b.problems else 0
