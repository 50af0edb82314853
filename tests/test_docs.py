"""The documentation runs as written.

* every ```python block of README.md and docs/*.md runs in a fresh temporary
  directory, in a subprocess (blocks defining ``test_*`` functions run under
  pytest);
* ```console blocks run their ``$ `` commands in order, in one directory per
  page, after the page's ``<!-- file: NAME -->`` blocks were written there;
* every ``minijobs ...`` line of ```sh blocks must parse with the real CLI parser;
* ```toml blocks must be valid ``minijobs.toml`` files;
* every ``examples/*.py`` runs as ``python3 -m examples.<name>`` from the repository root.

A block preceded by ``<!-- no-run -->`` is skipped (used sparingly, for
fragments such as a systemd unit).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import minijobs
from minijobs import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if p.name != "__init__.py")

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


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(argv: list[str], cwd: Path, what: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout_s, check=False)
    assert proc.returncode == 0, f"{what} failed (status {proc.returncode})\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def test_readme_starts_with_the_set_up_commands() -> None:
    assert (ROOT / "README.md").read_text().splitlines()[:4] == README_FIRST_LINES


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in readme]
    assert not missing, f"README.md does not link {missing}"


def test_the_docs_have_blocks_to_run() -> None:
    assert len([b for b in PYTHON_BLOCKS if not b.skipped]) >= 8
    assert CONSOLE_PAGES


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.id)
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    if block.skipped:
        pytest.skip("marked <!-- no-run -->")
    if re.search(r"^def test_", block.code, re.MULTILINE) and "pytest" in block.code:
        (tmp_path / "test_snippet.py").write_text(block.code)
        run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_snippet.py"], tmp_path, block.id)
    else:
        (tmp_path / "snippet.py").write_text(block.code)
        run([sys.executable, "snippet.py"], tmp_path, block.id)


def _console_argv(command: str, where: str) -> list[str]:
    argv = shlex.split(command)
    if argv[0] == "minijobs":
        return [sys.executable, "-m", "minijobs", *argv[1:]]
    if argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    raise AssertionError(f"{where}: runnable console blocks may only call minijobs or python3, not {argv[0]!r}")


@pytest.mark.parametrize("page", CONSOLE_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_console_session_runs(page: Path, tmp_path: Path) -> None:
    ran = 0
    for block in blocks_of(page):
        if block.skipped:
            continue
        if block.file_name is not None:
            (tmp_path / block.file_name).write_text(block.code)
        elif block.lang == "console":
            for offset, line in enumerate(block.code.splitlines(), 1):
                if line.startswith("$ "):
                    where = f"{block.id}+{offset}"
                    run(_console_argv(line[2:], where), tmp_path, f"{where}: {line}")
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
def test_example_runs(example: Path) -> None:
    run([sys.executable, "-m", f"examples.{example.stem}"], ROOT, f"python3 -m examples.{example.stem}")
