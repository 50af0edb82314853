"""What ``import minijobs`` and a CLI listing load: no event loop, worker or executor machinery.

A producer-only process and every CLI call pay for what they import; the cost
itself is measured by ``python3 -m benchmarks --only startup``, this checks
the modules that must stay out, which no machine's speed changes.
"""

from __future__ import annotations

import ast
import graphlib
import json
import subprocess
import sys
from pathlib import Path

import minijobs

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


def module_imports() -> dict[str, set[str]]:
    """Each minijobs module and the minijobs modules it imports when it is imported (no TYPE_CHECKING)."""
    root = Path(minijobs.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:  # module level: what runs at import
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for item in _run_at_import(node):
                if isinstance(item, ast.ImportFrom) and item.level:
                    base = package
                    for _ in range(item.level - 1):
                        base = base.rpartition(".")[0]
                    target = f"{base}.{item.module}" if item.module else base
                    found.update(f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target
                                 for a in item.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _run_at_import(node: ast.AST) -> list[ast.AST]:
    """``node`` and what it contains, except function bodies (they import when called, not at import)."""
    found = [node]
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            found.extend(_run_at_import(child))
    return found


def test_no_import_cycles_at_run_time() -> None:
    """Modules import each other in one direction only (type-only imports aside): no cycle to dodge."""
    graph = module_imports()
    assert {"minijobs.store", "minijobs.registry"} <= graph["minijobs.app"]  # the graph is read right
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle
