"""What ``import minijobs`` and a CLI listing load: no event loop, worker or executor machinery.

A producer-only process and every CLI call pay for what they import; the cost
itself is measured by ``python3 -m benchmarks --only startup``, this checks
the modules that must stay out, which no machine's speed changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("asyncio", "multiprocessing", "concurrent.futures", "minijobs.worker", "minijobs.executors",
         "minijobs.plugins.cron", "zoneinfo", "subprocess", "tomllib", "ctypes")

PROBE = f"""
import json, sys
{{setup}}
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def loaded(setup: str, env: dict[str, str]) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(proc.stdout.splitlines()[-1])


def test_import_minijobs_loads_no_worker_machinery(subprocess_env: dict[str, str]) -> None:
    assert loaded("import minijobs", subprocess_env) == []


def test_a_producer_enqueues_without_worker_machinery(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    setup = (f"import minijobs\napp = minijobs.App({str(tmp_path / 'j.sqlite3')!r})\n"
             "app.job(name='p')(lambda: None).enqueue()\napp.close()")
    assert loaded(setup, subprocess_env) == []


def test_a_cli_listing_loads_no_worker_machinery(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    db = tmp_path / "j.sqlite3"
    setup = (f"import minijobs\nminijobs.App({str(db)!r}).open()\nfrom minijobs import cli\n"
             f"assert cli.main(['--db', {str(db)!r}, 'jobs', 'list']) == 0")
    assert loaded(setup, subprocess_env) == []


def test_lazy_names_resolve_on_first_use(subprocess_env: dict[str, str]) -> None:
    setup = "import minijobs\nassert minijobs.ThreadExecutor.__name__ == 'ThreadExecutor' and minijobs.Worker"
    assert "minijobs.worker" in loaded(setup, subprocess_env)
