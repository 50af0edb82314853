"""File-system errors on the database are typed minijobs errors naming the path and the cause.

A missing folder or a folder this user may not write raises
:class:`~minijobs.DatabaseFileError` (a ``StoreError`` and an ``OSError``),
from the App and as one line from the CLI.  Permission cases run in a child
process that drops root's privileges first, since root may write anywhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import minijobs


@pytest.mark.parametrize("file_mode", [0o600, None])
def test_a_database_in_a_missing_folder(tmp_path: Path, file_mode: int | None) -> None:
    path = tmp_path / "missing" / "jobs.sqlite3"
    app = minijobs.App(path, file_mode=file_mode, plugins=[])

    @app.job
    def noop() -> None: ...

    with pytest.raises(minijobs.DatabaseFileError) as caught:
        noop.enqueue()  # the first use opens the file
    assert isinstance(caught.value, minijobs.StoreError) and isinstance(caught.value, OSError)
    assert str(path) in str(caught.value)
    assert "does not exist" in str(caught.value) or "folder exists" in str(caught.value)
    assert not (tmp_path / "missing").exists()


def test_the_cli_reports_a_missing_folder_in_one_line(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    path = tmp_path / "missing" / "jobs.sqlite3"
    proc = subprocess.run([sys.executable, "-m", "minijobs", "--db", str(path), "migrate"], env=subprocess_env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"minijobs: error: cannot create the database {path}: its folder {path.parent} does not exist"
    ]


READ_ONLY = textwrap.dedent(
    """
    import os, sys
    import minijobs

    apps = [minijobs.App(sys.argv[1], plugins=[], file_mode=mode) for mode in (0o600, None)]
    if os.geteuid() == 0:  # root may write anywhere: become nobody, with minijobs already imported
        os.setgid(65534)
        os.setuid(65534)
    for app in apps:
        try:
            app.open()
        except minijobs.DatabaseFileError as exc:
            print(f"{type(exc).__name__}: {exc}")
    """
)


def test_a_new_database_in_a_read_only_folder(subprocess_env: dict[str, str]) -> None:
    # Outside pytest's tmp_path, whose parents are private to root: nobody must reach the folder.
    base = Path(tempfile.mkdtemp(prefix="minijobs-ro-"))
    try:
        base.chmod(0o755)
        folder = base / "locked"
        folder.mkdir(mode=0o555)
        folder.chmod(0o555)
        script = base / "ro.py"
        script.write_text(READ_ONLY)
        script.chmod(0o644)
        proc = subprocess.run([sys.executable, str(script), str(folder / "jobs.sqlite3")], env=subprocess_env,
                              capture_output=True, text=True, timeout=60, check=False, cwd="/")
        assert proc.returncode == 0, proc.stderr
        first, second = proc.stdout.splitlines()
        assert first == (f"DatabaseFileError: cannot create the database {folder / 'jobs.sqlite3'}: "
                         f"permission denied in {folder} (Permission denied)")
        assert second.startswith(f"DatabaseFileError: opening {folder / 'jobs.sqlite3'}: SQLite cannot open or write")
        assert os.listdir(folder) == []
    finally:
        (base / "locked").chmod(0o755)
        shutil.rmtree(base)
