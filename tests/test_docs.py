"""The documentation runs as written, and prints what it shows.

* every ```python block of README.md and docs/*.md runs in a fresh temporary
  directory, in a subprocess (blocks defining ``test_*`` functions run under
  pytest);
* ```console blocks run their ``$ `` commands in order, in one directory per
  page, after the page's ``<!-- file: NAME -->`` blocks were written there;
  each command must exit with status 0;
* every ``minijobs ...`` line of ```sh blocks must parse with the real CLI parser;
* ```toml blocks must be valid ``minijobs.toml`` files;
* every ``examples/*.py`` runs as ``python3 -m examples.<name>`` from the repository root;
* pyproject.toml ships the LICENSE file.

Every run gets ``TMPDIR`` pointed at an empty directory of its own, which must
still be empty when the run ends: the docs and examples clean up after themselves.

Shown output
------------
The lines under a ``$ `` line of a ```console block, up to the next ``$ `` line
or the end of the block, are what that command prints: its stdout and stderr
as one stream, in the order written (the child runs unbuffered).  A ```output
block is what the nearest ```python block above it on the same page prints, the
same way.  A command that shows no lines must print nothing.  Shown and printed
lines are compared one by one, trailing spaces ignored, with two rules for the
parts that differ from run to run:

* ``...`` inside a line matches any text within that line (a duration, a pid,
  a worker id, an absolute path); a line that is only ``...`` matches any
  number of whole lines, none included;
* a date and time such as ``2030-01-01 09:38:42`` (``T`` or a space between
  the two; optional ``Z``, ``.ffffff`` or ``,fff`` after) matches any date and
  time of exactly that shape, so the docs can show realistic timestamps and a
  change of format still fails.

A mismatch fails with the page and line of the command (or block), the shown
lines with their page line numbers, the printed lines, and the first shown
line that could not be matched.

A block preceded by ``<!-- no-run -->`` is skipped (used sparingly, for
fragments such as a systemd unit).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import minijobs
from minijobs import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if p.name != "__init__.py")

#: Python blocks run with warnings as errors, so an unclosed database (a ResourceWarning on 3.13, printed as
#: an unraisable error the output comparison sees) or a deprecation (3.12) fails the page that shows it.
STRICT = ("-W", "error")
#: Examples also run in development mode.  Blocks do not: its asyncio debug mode logs every loop step
#: slower than 100 ms, which the output comparison would see (the store still runs on the loop; see
#: docs/asyncio.md).
STRICT_DEV = ("-X", "dev", "-W", "error")

README_FIRST_LINES = [
    "# minijobs",
    "",
    "    python3 -m examples.quickstart                                   # run the quickstart (a worker on a demo app)",
    "    python3 -m pip install -q pytest && python3 -m pytest -q         # run the tests",
]


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    marker: str | None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def skipped(self) -> bool:
        return self.marker == "no-run"

    @property
    def file_name(self) -> str | None:
        if self.marker and self.marker.startswith("file:"):
            return self.marker.split(":", 1)[1].strip()
        return None


_MARKER = re.compile(r"^<!--\s*(.*?)\s*-->$")


def blocks_of(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```") and line.strip() != "```":
            lang = line.strip()[3:].strip()
            start = i
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            k = start - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            match = _MARKER.match(lines[k].strip()) if k >= 0 else None
            found.append(Block(page, start + 1, lang, "\n".join(lines[start + 1 : j]) + "\n", match.group(1) if match else None))
            i = j + 1
        else:
            i += 1
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks_of(page)]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "python" and b.file_name is None]
TOML_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "toml"]
SH_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("sh", "bash", "shell")]
CONSOLE_PAGES = sorted({b.page for b in ALL_BLOCKS if b.lang == "console" and not b.skipped})


def _outputs() -> dict[Block, Block]:
    """Each ```output block, keyed by the ```python block above it on its page."""
    shown: dict[Block, Block] = {}
    for page in PAGES:
        above: Block | None = None
        for block in blocks_of(page):
            if block.lang == "output":
                assert above is not None and not above.skipped, f"{block.id}: an output block needs a runnable python block above it"
                assert above not in shown, f"{block.id}: {above.id} already has an output block"
                shown[above] = block
            elif block.lang == "python" and block.file_name is None:
                above = block
    return shown


OUTPUTS = _outputs()


def child_env(tmpdir: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return env


def run(argv: list[str], cwd: Path, what: str, timeout_s: float = 120, *, tmpdir: Path | None = None) -> str:
    """Run ``argv``; it must exit 0.  Returns stdout and stderr as the one stream a terminal shows."""
    proc = subprocess.run(
        argv, cwd=cwd, env=child_env(tmpdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout_s, check=False,
    )
    assert proc.returncode == 0, f"{what} failed (status {proc.returncode})\noutput:\n{proc.stdout}"
    return proc.stdout


@pytest.fixture
def clean_tmpdir(tmp_path: Path) -> Iterator[Path]:
    """A TMPDIR for the runs of one test, which must be left empty."""
    tmpdir = tmp_path / "TMPDIR"
    tmpdir.mkdir()
    yield tmpdir
    left = sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*"))
    assert not left, f"left behind in the temporary directory: {left}"


# -- shown output against printed output (rules in the module docstring) --------

_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?")


def _line_pattern(shown: str) -> re.Pattern[str]:
    parts = []
    for piece in shown.rstrip().split("..."):
        out, last = [], 0
        for m in _TIMESTAMP.finditer(piece):
            out.append(re.escape(piece[last : m.start()]))
            stamp = m.group()
            head, frac = (stamp[:19], stamp[19:]) if len(stamp) > 19 else (stamp, "")
            out.append(re.sub(r"\d", r"\\d", re.escape(head)) + (re.escape(frac[0]) + r"\d+" if frac else ""))
            last = m.end()
        out.append(re.escape(piece[last:]))
        parts.append("".join(out))
    return re.compile(".*".join(parts))


def first_mismatch(shown: list[str], printed: list[str]) -> int | None:
    """None when ``printed`` matches ``shown``; else the index of the first shown line that could not be matched.

    ``len(shown)`` means every shown line matched but more lines were printed.
    """
    patterns = [None if line.strip() == "..." else _line_pattern(line) for line in shown]
    printed = [line.rstrip() for line in printed]
    furthest = 0

    @functools.cache
    def matches(i: int, j: int) -> bool:
        nonlocal furthest
        furthest = max(furthest, i)
        if i == len(patterns):
            return j == len(printed)
        pattern = patterns[i]
        if pattern is None:
            return any(matches(i + 1, k) for k in range(j, len(printed) + 1))
        return j < len(printed) and pattern.fullmatch(printed[j]) is not None and matches(i + 1, j + 1)

    return None if matches(0, 0) else furthest


def assert_prints(where: str, what: str, shown: list[str], first_line: int, printed: str) -> None:
    """Fail, showing both sides, when ``printed`` does not match the ``shown`` lines (page lines from ``first_line``)."""
    __tracebackhide__ = True  # the message says it all
    lines = printed.splitlines()
    bad = first_mismatch(shown, lines)
    if bad is None:
        return
    page = where.rsplit(":", 1)[0]
    if bad < len(shown):
        hint = f"first shown line not matched: {page}:{first_line + bad}: {shown[bad]!r}"
    else:
        hint = "every shown line matched, but more lines were printed"
    shown_text = "\n".join(f"  {first_line + n:4} | {line}" for n, line in enumerate(shown)) or "  (nothing)"
    printed_text = "\n".join(f"       | {line}" for line in lines) or "  (nothing)"
    raise AssertionError(f"{where}: {what} prints something else than the page shows\n{hint}\n"
                         f"shown:\n{shown_text}\nprinted:\n{printed_text}")


def test_readme_starts_with_the_set_up_commands() -> None:
    assert (ROOT / "README.md").read_text().splitlines()[:4] == README_FIRST_LINES


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in readme]
    assert not missing, f"README.md does not link {missing}"


def test_the_docs_have_blocks_to_run() -> None:
    assert len([b for b in PYTHON_BLOCKS if not b.skipped]) >= 8
    assert CONSOLE_PAGES
    assert len(OUTPUTS) >= 5  # python blocks whose printed output is checked


def _is_pytest_file(block: Block) -> bool:
    return bool(re.search(r"^def test_", block.code, re.MULTILINE)) and "pytest" in block.code


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.id)
def test_python_block_runs_and_prints_its_output_block(block: Block, tmp_path: Path, clean_tmpdir: Path) -> None:
    if block.skipped:
        pytest.skip("marked <!-- no-run -->")
    work = tmp_path / "work"
    work.mkdir()
    if _is_pytest_file(block):
        assert block not in OUTPUTS, f"{OUTPUTS[block].id}: pytest's own output is not compared"
        (work / "test_snippet.py").write_text(block.code)
        argv = ["-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'pytest'}", "test_snippet.py"]
        run([sys.executable, *argv], work, block.id, tmpdir=clean_tmpdir)
        return
    (work / "snippet.py").write_text(block.code)
    printed = run([sys.executable, *STRICT, "snippet.py"], work, block.id, tmpdir=clean_tmpdir)
    if block in OUTPUTS:
        output = OUTPUTS[block]
        assert_prints(f"{output.id}", f"the python block at {block.id}", output.code.splitlines(), output.line + 1, printed)


def _console_argv(command: str, where: str) -> list[str]:
    argv = shlex.split(command)
    if argv[0] == "minijobs":
        return [sys.executable, "-m", "minijobs", *argv[1:]]
    if argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    raise AssertionError(f"{where}: runnable console blocks may only call minijobs or python3, not {argv[0]!r}")


@dataclass(frozen=True)
class Command:
    """One ``$ `` line of a console block and the lines shown under it."""

    line: int  # page line of the ``$ `` line
    command: str
    shown: list[str]


def commands_of(block: Block) -> list[Command]:
    found: list[Command] = []
    for offset, line in enumerate(block.code.splitlines(), 1):
        if line.startswith("$ "):
            found.append(Command(block.line + offset, line[2:], []))
        else:
            assert found, f"{block.page.relative_to(ROOT)}:{block.line + offset}: console output before any $ command"
            found[-1].shown.append(line)
    return found


@pytest.mark.parametrize("page", CONSOLE_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_console_session_prints_what_it_shows(page: Path, tmp_path: Path, clean_tmpdir: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    ran = 0
    for block in blocks_of(page):
        if block.skipped:
            continue
        if block.file_name is not None:
            (work / block.file_name).write_text(block.code)
        elif block.lang == "console":
            for command in commands_of(block):
                where = f"{page.relative_to(ROOT)}:{command.line}"
                printed = run(_console_argv(command.command, where), work, f"{where}: $ {command.command}", tmpdir=clean_tmpdir)
                assert_prints(where, f"`$ {command.command}`", command.shown, command.line + 1, printed)
                ran += 1
    assert ran


def _shell_commands(code: str) -> list[str]:
    joined = code.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("block", SH_BLOCKS, ids=lambda b: b.id)
def test_shell_block_commands_parse(block: Block) -> None:
    parser = cli.build_parser()
    for command in _shell_commands(block.code):
        argv = shlex.split(command, comments=True)
        if argv[:1] == ["minijobs"]:
            args = argv[1:]
        elif argv[:3] in (["python3", "-m", "minijobs"], ["python", "-m", "minijobs"]):
            args = argv[3:]
        elif argv[:2] == ["python3", "-m"] and argv[2].startswith("examples."):
            assert (ROOT / "examples" / f"{argv[2].split('.', 1)[1]}.py").is_file(), command
            continue
        else:
            continue
        if "bench" in args:
            args = args[: args.index("bench") + 1]
        try:
            parser.parse_args(args)
        except SystemExit as exc:
            raise AssertionError(f"{block.id}: {command!r} does not parse") from exc


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=lambda b: b.id)
def test_toml_block_is_a_valid_config(block: Block, tmp_path: Path) -> None:
    if block.skipped:
        pytest.skip("marked <!-- no-run -->")
    path = tmp_path / "minijobs.toml"
    path.write_text(block.code)
    config = cli.load_config(path, required=True)
    app = minijobs.App(tmp_path / "unused.sqlite3")  # never opened: only the config is applied
    cli.apply_config(app, config)  # resolves executors, checks concurrency, builds the plugins
    assert not (tmp_path / "unused.sqlite3").exists()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_and_leaves_no_temporary_files(example: Path, clean_tmpdir: Path) -> None:
    printed = run([sys.executable, *STRICT_DEV, "-m", f"examples.{example.stem}"], ROOT,
                  f"python3 -m examples.{example.stem}", tmpdir=clean_tmpdir)
    assert "Warning" not in printed and "Exception ignored" not in printed, printed


def test_the_wheel_and_sdist_ship_the_license() -> None:
    """setuptools (>= 77) puts ``license-files`` into the wheel's .dist-info/licenses and the sdist."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert any(req.replace(" ", "").startswith("setuptools>=") and int(req.split(">=")[1].split(".")[0]) >= 77
               for req in pyproject["build-system"]["requires"]), "license-files under [project] needs setuptools>=77"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the minijobs authors" in text


def test_shown_output_matching_rules() -> None:
    """The rules of the module docstring, so a change to them is deliberate."""
    assert first_mismatch(["a ... c"], ["a anything c"]) is None
    assert first_mismatch(["a ... c"], ["a b", "c"]) == 0  # ``...`` in a line stays in that line
    assert first_mismatch(["x", "...", "y"], ["x", "y"]) is None  # a ``...`` line: no lines
    assert first_mismatch(["x", "...", "y"], ["x", "1", "2", "y"]) is None  # or many
    assert first_mismatch(["x", "...", "y"], ["x", "1", "2"]) == 2
    assert first_mismatch(["due 2030-01-01 09:38:42Z"], ["due 2026-12-01 22:38:33Z"]) is None
    assert first_mismatch(["at 2030-01-01T09:38:43.321965Z"], ["at 2026-12-01T22:38:34.7Z"]) is None
    assert first_mismatch(["due 2030-01-01 09:38:42Z"], ["due 2026-12-01T22:38:33Z"]) == 0  # the shape is kept
    assert first_mismatch(["2030-01-01 09:38:43,322 WARNING"], ["2026-12-01 22:38:34.729 WARNING"]) == 0
    assert first_mismatch(["a (b) [c] *"], ["a (b) [c] *   "]) is None  # literal, trailing spaces ignored
    assert first_mismatch(["a"], ["a", "b"]) == 1  # more printed than shown
    assert first_mismatch([], []) is None
    assert first_mismatch([], ["x"]) == 0
