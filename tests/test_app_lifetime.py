"""An App that is never closed releases its connections quietly, when collected or at interpreter exit.

Python 3.13 reports a connection left to interpreter teardown as
``ResourceWarning: unclosed database``; scripts and tests routinely never
close their App, so minijobs closes it for them (run here under ``-X dev -W
error``, where any such warning is printed).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import gc, sys
    import minijobs

    collected = minijobs.App(sys.argv[1] + "/a.sqlite3")
    collected.job(name="j")(lambda: None).enqueue()
    del collected
    gc.collect()

    left_open = minijobs.App(sys.argv[1] + "/b.sqlite3")
    job = left_open.job(name="j")(lambda x: x)
    with left_open.running():
        print(job.enqueue(7).wait(timeout_s=30).result)
    """
)


def test_unclosed_apps_close_without_a_warning(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    (tmp_path / "lifetime.py").write_text(SCRIPT)
    proc = subprocess.run([sys.executable, "-X", "dev", "-W", "error", "lifetime.py", str(tmp_path)], cwd=tmp_path,
                          env=subprocess_env, capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "7\n", "")
