"""minijobs vendored as ``myapp/_vendor/minijobs`` behaves as the installed package: same recorded names.

A desktop or edge app copies the folder into its own package; error records
must still say ``minijobs.JobTimeoutError`` (the name the docs compare with),
in the worker's process and from process-executor children alike.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

JOBS = textwrap.dedent(
    """
    import asyncio
    from pathlib import Path

    from myapp._vendor import minijobs

    app = minijobs.App(
        Path(__file__).resolve().parent.parent / "jobs.sqlite3",
        queues=[minijobs.Queue("default"), minijobs.Queue("cpu", executor=minijobs.ProcessExecutor, concurrency=1)],
        plugins=[],
    )


    @app.job(name="slow", timeout_s=0.05)
    async def slow() -> None:
        await asyncio.sleep(30)


    @app.job(name="bad_payload", queue="cpu")
    def bad_payload() -> None:
        raise minijobs.PayloadValueError("refused in the child")


    @app.job(name="gone")
    def gone() -> None:
        raise minijobs.Cancelled("stopped by itself")
    """
)

MAIN = textwrap.dedent(
    """
    import json
    import sys

    from myapp.jobs import app, bad_payload, gone, slow

    if __name__ == "__main__":  # process-executor children import this script again
        refs = [slow.enqueue(), bad_payload.enqueue(), gone.enqueue()]
        app.drain()
        print(json.dumps([[e.type for e in ref.get().errors] for ref in refs]))
        print(json.dumps(sorted(m for m in sys.modules if m == "minijobs" or m.startswith("minijobs."))))
        app.close()
    """
)


@pytest.mark.slow
def test_a_vendored_copy_records_the_public_error_names(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    vendor = tmp_path / "myapp" / "_vendor"
    shutil.copytree(ROOT / "minijobs", vendor / "minijobs", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (vendor / "__init__.py").write_text("")
    (tmp_path / "myapp" / "jobs.py").write_text(JOBS)
    (tmp_path / "main.py").write_text(MAIN)
    env = {**subprocess_env, "PYTHONPATH": str(tmp_path)}  # the vendored copy only, not the repository
    proc = subprocess.run([sys.executable, "main.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    errors, top_level = (json.loads(line) for line in proc.stdout.splitlines())
    assert errors == [["minijobs.JobTimeoutError"], ["minijobs.PayloadValueError"], ["minijobs.Cancelled"]]
    assert top_level == []  # nothing imported an installed minijobs beside the copy
