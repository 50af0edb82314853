"""The command line, run as real subprocesses (``python -m minijobs``) against a temporary app module."""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from damaged_files import damage_deep_page, make_db

import minijobs
from minijobs import cli
from minijobs.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent

TASKS = '''
import asyncio
import time
from pathlib import Path

import minijobs

HERE = Path(__file__).resolve().parent
app = minijobs.App(HERE / "jobs.sqlite3", queues=[minijobs.Queue("default"), minijobs.Queue("mail", concurrency=2)])


@app.job(name="add")
def add(a: int, b: int) -> int:
    return a + b


@app.job(name="send", queue="mail")
def send(to: str, subject: str = "hi") -> None:
    raise RuntimeError(f"smtp down for {to}")


@app.job(name="slow")
def slow() -> str:
    (HERE / "started").write_text("1")
    while not (HERE / "release").exists():
        time.sleep(0.01)
    return "done"


@app.job(name="stuck")
async def stuck() -> None:
    (HERE / "started").write_text("1")
    await asyncio.sleep(3600)


not_an_app = 42
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "tasks.py").write_text(TASKS)
    return tmp_path


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), e.get("PYTHONPATH")]))
    e["PYTHONUNBUFFERED"] = "1"
    return e


def mj(cwd: Path, *args: str, rc: int = 0, app: str | None = "tasks:app") -> subprocess.CompletedProcess[str]:
    """Run ``python -m minijobs [--app tasks:app] ARGS`` in ``cwd`` and check its exit status."""
    argv = [sys.executable, "-m", "minijobs", *(["--app", app] if app else []), *args]
    proc = subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == rc, f"{args}: rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def mj_json(cwd: Path, *args: str, app: str | None = "tasks:app") -> object:
    return json.loads(mj(cwd, *args, "--json", app=app).stdout)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("minijobs: error: "), proc.stderr
    assert fragment in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


# -- end to end ----------------------------------------------------------------


def test_enqueue_run_and_inspect(project: Path) -> None:
    out = mj(project, "enqueue", "add", "--args", "[2, 3]").stdout
    assert out.startswith("enqueued job 1 (add) on queue default")
    created = mj_json(project, "enqueue", "send", "--args", '["ann@example.com"]', "--kwargs", '{"subject": "x"}')
    assert created["id"] == 2 and created["created"] is True and created["job"]["queue"] == "mail"

    listed = mj(project, "jobs", "list").stdout.splitlines()
    assert listed[0].split()[:4] == ["ID", "STATE", "QUEUE", "NAME"]
    assert [line.split()[:3] for line in listed[1:]] == [["2", "pending", "mail"], ["1", "pending", "default"]]

    worker = mj(project, "worker", "--burst")
    assert "started" in worker.stderr and "stopped after 2 job attempt(s)" in worker.stderr

    jobs = mj_json(project, "jobs", "list")
    assert [(j["id"], j["state"]) for j in jobs] == [(2, "failed"), (1, "succeeded")]
    assert mj_json(project, "jobs", "list", "--state", "succeeded") == [jobs[1]]
    assert [j["id"] for j in mj_json(project, "jobs", "list", "--queue", "mail")] == [2]
    add_job = mj_json(project, "jobs", "show", "1")
    assert add_job["result"] == 5 and add_job["args"] == [2, 3] and add_job["completed_at"].endswith("Z")
    shown = mj(project, "jobs", "show", "2").stdout
    assert "state:            failed" in shown
    assert "RuntimeError: smtp down for ann@example.com" in shown and "last traceback:" in shown


def test_enqueue_refuses_bad_input_with_one_line_and_writes_nothing(project: Path) -> None:
    assert_one_line_error(mj(project, "enqueue", "nope", rc=1), "no job named 'nope' is registered by this app (registered: add, send, slow, stuck)")
    assert_one_line_error(mj(project, "enqueue", "add", "--args", "[1", rc=1), "--args is not valid JSON")
    assert_one_line_error(mj(project, "enqueue", "add", "--args", "[NaN, 1]", rc=1), "NaN is not valid JSON")
    assert_one_line_error(mj(project, "enqueue", "add", "--args", '{"a": 1}', rc=1), "--args must be a JSON array")
    assert_one_line_error(mj(project, "enqueue", "add", "--kwargs", "[]", rc=1), "--kwargs must be a JSON object")
    assert_one_line_error(mj(project, "enqueue", "add", "--args", "[1]", rc=1), "missing a required argument: 'b'")
    assert_one_line_error(mj(project, "enqueue", "add", "--args", "[1, 2]", "--queue", "bad name", rc=1), "queue name")
    assert not (project / "jobs.sqlite3").exists()  # refused before the database was even opened


def test_enqueue_options_and_unique_key(project: Path) -> None:
    first = mj_json(project, "enqueue", "add", "--args", "[1, 1]", "--priority", "7", "--delay-s", "3600",
                    "--max-attempts", "4", "--unique-key", "k1")
    job = first["job"]
    assert (job["priority"], job["max_attempts"], job["unique_key"]) == (7, 4, "k1")
    assert job["scheduled_at"] > job["created_at"]
    again = mj(project, "enqueue", "add", "--args", "[1, 1]", "--unique-key", "k1").stdout
    assert again.startswith(f"job {first['id']} with unique key 'k1' is already pending; nothing enqueued")
    stats = mj_json(project, "stats")
    assert stats["counts"]["pending"] == 1 and stats["oldest_due_age_s"] is None  # not due for an hour


def test_retry_and_cancel(project: Path) -> None:
    for to in ("a", "b"):
        mj(project, "enqueue", "send", "--args", json.dumps([to]))
    mj(project, "enqueue", "add", "--args", "[1, 1]")
    cancelled = mj_json(project, "jobs", "cancel", "3")
    assert [j["state"] for j in cancelled] == ["cancelled"]
    mj(project, "worker", "--burst")
    assert [j["id"] for j in mj_json(project, "jobs", "list", "--state", "failed")] == [2, 1]
    out = mj(project, "jobs", "retry", "--failed").stdout
    assert out.splitlines() == ["job 2 (send): pending", "job 1 (send): pending"]
    assert_one_line_error(mj(project, "jobs", "retry", "3", "1", rc=1), "job 1 is pending; only finished jobs can be retried")
    assert_one_line_error(mj(project, "jobs", "show", "99", rc=1), "no job with id 99")
    assert_one_line_error(mj(project, "jobs", "retry", rc=1), "nothing to retry")
    proc = mj(project, "jobs", "show", "x", rc=2)
    assert "job id must be a whole number" in proc.stderr


def test_queues_pause_resume_and_list(project: Path) -> None:
    mj(project, "enqueue", "add", "--args", "[1, 1]")
    assert "paused queue default" in mj(project, "queues", "pause", "default").stdout
    mj(project, "--db", "jobs.sqlite3", "queues", "pause", "reports", app=None)  # no registry to check it against
    mj(project, "worker", "--burst")
    rows = {r["name"]: r for r in mj_json(project, "queues", "list")}
    assert list(rows) == ["default", "mail", "reports"]
    assert rows["default"]["paused"] and rows["default"]["counts"]["pending"] == 1
    assert rows["mail"] == {"name": "mail", "declared": True, "executor": "AsyncExecutor", "concurrency": 2,
                            "paused": False, "counts": {s.value: 0 for s in minijobs.JobState}}
    assert rows["reports"]["declared"] is False and rows["reports"]["paused"] is True
    mj(project, "queues", "resume", "default")
    mj(project, "worker", "--burst")
    assert mj_json(project, "jobs", "show", "1")["state"] == "succeeded"
    table = mj(project, "queues", "list").stdout.splitlines()
    assert table[0].split()[:4] == ["QUEUE", "EXECUTOR", "CONCURRENCY", "PAUSED"]


def test_stats_prune_and_migrate(project: Path) -> None:
    for i in range(3):
        mj(project, "enqueue", "add", "--args", json.dumps([i, i]))
    mj(project, "worker", "--burst")
    mj(project, "enqueue", "add", "--args", "[9, 9]")
    stats = mj_json(project, "stats", "--minutes", "2")
    assert stats["counts"]["succeeded"] == 3 and stats["counts"]["pending"] == 1
    assert stats["finished"] == {"succeeded": 3, "failed": 0, "cancelled": 0}
    assert sum(stats["finished_per_minute"]) == 3 and len(stats["finished_per_minute"]) == 2
    assert stats["throughput_per_minute"] == 1.5
    assert stats["oldest_due_age_s"] >= 0
    human = mj(project, "stats").stdout
    assert "jobs by state:  pending 1, running 0, retrying 0, succeeded 3" in human
    assert "oldest due job: waiting" in human

    assert mj_json(project, "prune")["jobs"] == 0  # default: older than 7 days
    assert mj_json(project, "prune", "--older-than", "0s")["jobs"] == 3
    assert [j["state"] for j in mj_json(project, "jobs", "list")] == ["pending"]
    bad = mj(project, "prune", "--older-than", "soon", rc=2)
    assert "invalid duration 'soon'" in bad.stderr

    migrated = mj_json(project, "migrate")
    assert migrated["versions"]["minijobs"] >= 1


def test_db_option_inspects_without_importing_the_app(project: Path) -> None:
    new = project / "fresh.sqlite3"
    assert_one_line_error(mj(project, "--db", str(new), "jobs", "list", app=None, rc=1), "no database at")
    assert not new.exists()
    mj(project, "--db", str(new), "migrate", app=None)
    assert new.exists()
    mj(project, "enqueue", "add", "--args", "[1, 2]")
    jobs = mj_json(project, "jobs", "list", "--db", "jobs.sqlite3", app=None)  # options also after the command
    assert [j["name"] for j in jobs] == ["add"]
    assert_one_line_error(mj(project, "--db", "jobs.sqlite3", "enqueue", "add", app=None, rc=1), "enqueue needs --app")
    assert_one_line_error(mj(project, "--db", "jobs.sqlite3", "jobs", "list", rc=1), "give --app or --db, not both")


def test_check_reads_the_whole_file_and_names_the_damage(project: Path) -> None:
    db = project / "big.sqlite3"
    make_db(db, jobs=2000)
    assert mj(project, "--db", str(db), "check", app=None).stdout.startswith(f"{db}: ok (PRAGMA quick_check")
    report = mj_json(project, "--db", str(db), "check", "--full", app=None)
    assert isinstance(report, dict) and (report["check"], report["ok"]) == ("full", True)
    damage_deep_page(db, "minijobs_jobs_runnable")
    mj(project, "--db", str(db), "jobs", "list", app=None)  # opening alone does not read that page
    for extra in ((), ("--full",)):
        failed = mj(project, "--db", str(db), "check", *extra, app=None, rc=1)
        assert_one_line_error(failed, f"{db} is damaged: PRAGMA {'integrity_check' if extra else 'quick_check'}")
    assert_one_line_error(mj(project, "check", rc=1), f"no database at {project / 'jobs.sqlite3'}")
    mj(project, "migrate")
    mj(project, "check")  # through --app too: the project's own database is sound


def test_app_loading_errors_are_one_line(project: Path) -> None:
    assert_one_line_error(mj(project, "jobs", "list", app="tasks", rc=1), "expected module:attribute")
    assert_one_line_error(mj(project, "jobs", "list", app="nowhere:app", rc=1), "cannot import module 'nowhere'")
    assert_one_line_error(mj(project, "jobs", "list", app="tasks:missing", rc=1), "has no attribute 'missing'")
    assert_one_line_error(mj(project, "jobs", "list", app="tasks:not_an_app", rc=1), "is a int, not a minijobs.App")
    assert_one_line_error(mj(project, "jobs", "list", app=None, rc=1), "no app given")
    (project / "notadb.sqlite3").write_text("hello")
    assert_one_line_error(mj(project, "--db", "notadb.sqlite3", "jobs", "list", app=None, rc=1), "not a SQLite database")
    usage = mj(project, app=None, rc=2)
    assert "usage: minijobs" in usage.stderr


# -- configuration file ----------------------------------------------------------


def test_config_file_supplies_app_queues_and_worker_options(project: Path) -> None:
    (project / "minijobs.toml").write_text(textwrap.dedent('''
        app = "tasks:app"

        [worker]
        queues = ["default"]
        concurrency = 3

        [queues.mail]
        concurrency = 5

        [queues.reports]
        executor = "async"
        options = { sync_threads = 2 }
    '''))
    mj(project, "enqueue", "add", "--args", "[1, 1]", app=None)
    mj(project, "enqueue", "send", "--args", '["x"]', app=None)
    rows = {r["name"]: r for r in mj_json(project, "queues", "list", app=None)}
    assert {n: r["concurrency"] for n, r in rows.items()} == {"default": 3, "mail": 5, "reports": 3}
    mj(project, "worker", "--burst", app=None)  # [worker] queues = ["default"]: mail is not served
    assert [j["state"] for j in mj_json(project, "jobs", "list", app=None)] == ["pending", "succeeded"]
    mj(project, "worker", "--burst", "--queue", "mail", "--concurrency", "1", app=None)
    assert [j["state"] for j in mj_json(project, "jobs", "list", app=None)] == ["failed", "succeeded"]


def test_config_errors_are_one_line(project: Path) -> None:
    config = project / "minijobs.toml"
    config.write_text('app = "tasks:app"\nworkers = 2\n')
    assert_one_line_error(mj(project, "jobs", "list", app=None, rc=1), "unknown keys ['workers']")
    config.write_text('app = "tasks:app"\n[queues.default]\nexecutor = "os.system"\n')
    assert_one_line_error(mj(project, "jobs", "list", app=None, rc=1), "unknown executor 'os.system'")
    config.write_text("app = \n")
    assert_one_line_error(mj(project, "jobs", "list", app=None, rc=1), "invalid TOML")
    assert_one_line_error(mj(project, "--config", "other.toml", "jobs", "list", app=None, rc=1), "does not exist")


def test_plugins_from_config_cron_list_and_retention(project: Path) -> None:
    assert_one_line_error(mj(project, "cron", "list", rc=1), "no Cron plugin")
    (project / "minijobs.toml").write_text(textwrap.dedent('''
        app = "tasks:app"

        [plugins.pruner]
        keep_by_state = { succeeded = 0.001 }

        [[plugins.cron.schedules]]
        name = "nightly"
        expression = "0 3 * * *"
        job = "add"
        args = [1, 2]
    '''))
    (schedule,) = mj_json(project, "cron", "list", "--count", "2", app=None)
    assert {k: schedule[k] for k in ("name", "expression", "tz", "job")} == {
        "name": "nightly", "expression": "0 3 * * *", "tz": "UTC", "job": "add"}
    assert [t[10:] for t in schedule["next"]] == ["T03:00:00Z", "T03:00:00Z"]
    assert schedule["next"][0] < schedule["next"][1]
    assert "nightly  0 3 * * *  UTC" in mj(project, "cron", "list", app=None).stdout

    mj(project, "enqueue", "add", "--args", "[1, 1]", app=None)
    mj(project, "enqueue", "send", "--args", '["x"]', app=None)
    mj(project, "worker", "--burst", app=None)
    pruned = mj_json(project, "prune", app=None)  # the configured retention: succeeded jobs after 1 ms
    assert pruned["jobs"] == 1 and "minijobs.cron" in pruned["plugins"]
    assert [j["state"] for j in mj_json(project, "jobs", "list", app=None)] == ["failed"]
    assert_one_line_error(mj(project, "prune", "--state", "failed", app=None, rc=1), "need --older-than")

    (project / "minijobs.toml").write_text('app = "tasks:app"\n[plugins.cron]\nenabled = false\n[plugins.pruner]\nkeep_s = 1e-9\n')
    assert_one_line_error(mj(project, "cron", "list", app=None, rc=1), "no Cron plugin")
    (project / "minijobs.toml").write_text('app = "tasks:app"\n[plugins.pruner]\nkeep_days = 1\n')
    assert_one_line_error(mj(project, "jobs", "list", app=None, rc=1), "keep_days")


def test_apply_config_precedence_in_process(tmp_path: Path) -> None:
    app = minijobs.App(tmp_path / "a.sqlite3", queues=[minijobs.Queue("a", concurrency=9), minijobs.Queue("b")])
    config = cli.Config(worker={"concurrency": 4}, queues={"b": {"concurrency": 2}, "c": {}})
    cli.apply_config(app, config)
    assert {q.name: q.concurrency for q in app.queues} == {"a": 4, "b": 2, "c": 4}
    cli.apply_config(app, config, concurrency=1)
    assert {q.name: q.concurrency for q in app.queues} == {"a": 1, "b": 1, "c": 1}
    with pytest.raises(ConfigurationError):
        cli.apply_config(app, cli.Config(queues={"a": {"concurrency": 0}}))
    assert app.store.count_by_state()  # never opened by apply_config, opens fine now
    app.close()


def test_apply_config_plugins_replace_add_and_disable(tmp_path: Path) -> None:
    from minijobs.plugins import Cron, Pruner

    app = minijobs.App(tmp_path / "p.sqlite3")
    defaults = [p.get_identifier() for p in app.plugins]
    assert "minijobs.pruner" in defaults
    cli.apply_config(app, cli.Config(plugins={"pruner": {"keep_s": 60.0}}))
    (pruner,) = [p for p in app.plugins if isinstance(p, Pruner)]
    assert pruner.keep_s == 60.0 and len(app.plugins) == len(defaults)
    cli.apply_config(app, cli.Config(plugins={"pruner": {"enabled": False}, "cron": {}}))
    ids = [p.get_identifier() for p in app.plugins]
    assert "minijobs.pruner" not in ids and any(isinstance(p, Cron) for p in app.plugins)
    with pytest.raises(ConfigurationError, match="unknown plugin"):
        cli.apply_config(app, cli.Config(plugins={"nope": {}}))
    app.close()


def test_progress_is_shown_only_on_a_terminal() -> None:
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        progress = cli.TTYProgress(stream, "pruned jobs")
        progress.update(500)
        progress.update(1000, 1200)
        progress.close()
    assert tty.getvalue() == "\rpruned jobs: 500\rpruned jobs: 1000/1200\n"
    assert pipe.getvalue() == ""


def test_parse_duration() -> None:
    assert [cli.parse_duration(t) for t in ("90", "90s", "1.5m", "2h", "7d", "1w")] == [
        90, 90, 90, 7200, 604800, 604800]
    for bad in ("", "-1s", "1y", "s"):
        with pytest.raises(Exception, match="invalid duration"):
            cli.parse_duration(bad)


def test_console_script_points_at_main() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["minijobs"].partition(":")
    assert (module, attr) == ("minijobs.cli", "main")


# -- bench ---------------------------------------------------------------------------


def test_bench_passes_arguments_through(tmp_path: Path) -> None:
    fake = tmp_path / "benchmarks"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text("import sys\nprint('bench args', sys.argv[1:])\nraise SystemExit(3)\n")
    proc = mj(tmp_path, "bench", "--quick", "--only", "enqueue", app=None, rc=3)
    assert proc.stdout.strip() == "bench args ['--quick', '--only', 'enqueue']"


# -- worker and signals -----------------------------------------------------------------


class Worker:
    """A ``minijobs worker`` subprocess whose stderr is read line by line in a thread."""

    def __init__(self, cwd: Path, *args: str, command: Sequence[str] = ("--app", "tasks:app", "worker"),
                 environ: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "minijobs", *command, *args],
            cwd=cwd, env=environ or env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, fragment: str, timeout_s: float = 20) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"worker never printed {fragment!r}; got:\n{''.join(self.seen)}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            if fragment in line:
                return line

    def finish(self, timeout_s: float = 20) -> int:
        try:
            rc = self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=5)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            assert self.proc.stderr is not None
            self.proc.stderr.close()
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return rc


def wait_for_file(path: Path, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.slow
def test_worker_sigterm_lets_the_running_job_finish(project: Path) -> None:
    mj(project, "enqueue", "slow")
    worker = Worker(project)
    try:
        worker.wait_for("started")
        wait_for_file(project / "started")
        worker.proc.send_signal(signal.SIGTERM)
        worker.wait_for("stopping gracefully")
        assert worker.proc.poll() is None  # still finishing the job
        (project / "release").write_text("1")
    finally:
        rc = worker.finish()
    assert rc == 0, "".join(worker.seen)
    assert any("stopped after 1 job attempt(s)" in line for line in worker.seen)
    job = mj_json(project, "jobs", "show", "1")
    assert (job["state"], job["result"], job["attempts"]) == ("succeeded", "done", 1)


@pytest.mark.slow
def test_worker_sigterm_releases_a_job_that_outlives_the_grace_period(project: Path) -> None:
    mj(project, "enqueue", "stuck")
    worker = Worker(project, "--grace-s", "0.2")
    try:
        worker.wait_for("started")
        wait_for_file(project / "started")
        worker.proc.send_signal(signal.SIGTERM)
    finally:
        rc = worker.finish()
    assert rc == 0, "".join(worker.seen)
    job = mj_json(project, "jobs", "show", "1")
    assert (job["state"], job["attempts"], job["lease_owner"]) == ("pending", 0, None)  # back in its queue, unharmed


def test_worker_takes_the_app_as_a_positional_and_stops_on_sigterm(
    project: Path, subprocess_env: dict[str, str]
) -> None:
    mj(project, "enqueue", "add", "--args", "[2, 3]")
    worker = Worker(project, command=("worker", "tasks:app"), environ=subprocess_env)  # as with huey, celery, rq
    try:
        worker.wait_for("started")
        with minijobs.App(project / "jobs.sqlite3") as app:
            job = minijobs.JobRef(app, 1).wait(timeout_s=20)
        assert (job.state, job.result) == (minijobs.JobState.SUCCEEDED, 5)
        worker.proc.send_signal(signal.SIGTERM)
    finally:
        rc = worker.finish()
    assert rc == 0, "".join(worker.seen)
    assert any("stopped after 1 job attempt(s)" in line for line in worker.seen)


# -- one line for every failure ----------------------------------------------------------


def run_cli(cwd: Path, environ: dict[str, str], *args: str, rc: int) -> subprocess.CompletedProcess[str]:
    """``python3 -m minijobs ARGS`` in ``cwd``, checking its exit status."""
    proc = subprocess.run([sys.executable, "-m", "minijobs", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == rc, f"{args}: rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.mark.parametrize(("code", "shown"), [
    ("import minijobs\nx\napp = minijobs.App('shop.sqlite3')\n", "NameError: name 'x' is not defined"),
    ("import minijobs\napp = minijobs.App('shop.sqlite3'\n", "SyntaxError: '(' was never closed (shop.py, line 2)"),
    ("import no_such_dependency_of_shop\n", "ModuleNotFoundError: No module named 'no_such_dependency_of_shop'"),
    ("raise RuntimeError('settings missing')\n", "RuntimeError: settings missing"),
], ids=["NameError", "SyntaxError", "missing-dependency", "RuntimeError"])
def test_app_module_failing_to_import_is_one_line_naming_the_original_error(
    tmp_path: Path, subprocess_env: dict[str, str], code: str, shown: str
) -> None:
    (tmp_path / "shop.py").write_text(code)
    proc = run_cli(tmp_path, subprocess_env, "--app", "shop:app", "jobs", "list", rc=1)
    assert proc.stderr == f"minijobs: error: --app 'shop:app': importing shop failed: {shown}\n"
    assert proc.stdout == ""


def test_app_import_traceback_is_shown_at_debug(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    (tmp_path / "shop.py").write_text("import minijobs\nx\napp = minijobs.App('shop.sqlite3')\n")
    proc = run_cli(tmp_path, subprocess_env, "--app", "shop:app", "--log-level", "DEBUG", "jobs", "list", rc=1)
    assert "Traceback (most recent call last)" in proc.stderr
    assert f'File "{tmp_path / "shop.py"}", line 2' in proc.stderr  # the user's own line, where it failed
    assert proc.stderr.splitlines()[-1] == (
        "minijobs: error: --app 'shop:app': importing shop failed: NameError: name 'x' is not defined")


def test_job_id_beyond_sqlite_integers_is_one_line(project: Path, subprocess_env: dict[str, str]) -> None:
    big = "99999999999999999999999"
    run_cli(project, subprocess_env, "--app", "tasks:app", "migrate", rc=0)
    proc = run_cli(project, subprocess_env, "--app", "tasks:app", "jobs", "show", big, rc=1)
    assert proc.stderr.splitlines() == [f"minijobs: error: no job with id {big}"]


def test_unexpected_exceptions_are_one_line_with_the_traceback_logged_at_debug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"shop_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text("def __getattr__(attr):\n    raise RuntimeError(f'no {attr} here')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(sys.modules, name, None)  # restored (removed) after the test
    del sys.modules[name]
    out, err = io.StringIO(), io.StringIO()
    with caplog.at_level(logging.DEBUG, logger="minijobs.cli"):
        assert cli.main(["--app", f"{name}:app", "stats"], out=out, err=err) == 1
    assert err.getvalue() == "minijobs: error: RuntimeError: no app here\n"
    (record,) = [r for r in caplog.records if r.name == "minijobs.cli"]
    assert record.levelno == logging.DEBUG and record.exc_info and isinstance(record.exc_info[1], RuntimeError)


def test_database_in_a_missing_folder_is_one_line(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    db = tmp_path / "missing" / "x.sqlite3"
    proc = run_cli(tmp_path, subprocess_env, "--db", str(db), "migrate", rc=1)
    (line,) = proc.stderr.splitlines()
    assert line.startswith("minijobs: error: ") and str(db) in line
    assert not db.parent.exists()


# -- cancel and retry: one line per id ------------------------------------------------------


def test_cancel_and_retry_report_every_id_and_go_on_past_a_missing_one(
    project: Path, subprocess_env: dict[str, str]
) -> None:
    mj(project, "enqueue", "add", "--args", "[1, 1]")
    mj(project, "enqueue", "add", "--args", "[2, 2]")
    cancel = run_cli(project, subprocess_env, "--app", "tasks:app", "jobs", "cancel", "1", "19", "2", rc=1)
    assert cancel.stdout.splitlines() == ["job 1 (add): cancelled", "job 2 (add): cancelled"]
    assert cancel.stderr.splitlines() == ["minijobs: error: job 19: no job with id 19"]
    assert [j["state"] for j in mj_json(project, "jobs", "list")] == ["cancelled", "cancelled"]

    retry = run_cli(project, subprocess_env, "--app", "tasks:app", "jobs", "retry", "19", "2", "--json", rc=1)
    entries = json.loads(retry.stdout)
    assert entries[0] == {"id": 19, "error": {"type": "JobNotFoundError", "message": "no job with id 19"}}
    assert (entries[1]["id"], entries[1]["state"]) == (2, "pending")
    assert retry.stderr.splitlines() == ["minijobs: error: job 19: no job with id 19"]

    both_fail = run_cli(project, subprocess_env, "--app", "tasks:app", "jobs", "retry", "2", "20", rc=1)
    assert both_fail.stdout == ""
    assert both_fail.stderr.splitlines() == [
        "minijobs: error: job 2: job 2 is pending; only finished jobs can be retried",
        "minijobs: error: job 20: no job with id 20",
    ]
    assert mj(project, "jobs", "cancel", "2").stdout == "job 2 (add): cancelled\n"  # all well: status 0


# -- queues the app does not declare ------------------------------------------------------------


def test_pausing_an_undeclared_queue(project: Path, subprocess_env: dict[str, str]) -> None:
    mj(project, "migrate")
    refused = run_cli(project, subprocess_env, "--app", "tasks:app", "queues", "pause", "reprots", rc=1)
    assert refused.stderr == (
        "minijobs: error: queue 'reprots' is not declared by this app (declared: default, mail) and has no jobs; "
        "declare it, or pause it with --db to record it anyway\n")
    assert "reprots" not in {r["name"] for r in mj_json(project, "queues", "list")}  # nothing recorded

    # Jobs of it in the database (another deployment serves it and wrote them): pausing is meaningful, with a note.
    other = minijobs.App(project / "jobs.sqlite3", queues=[minijobs.Queue("reports")], plugins=[])
    other.job(name="add", queue="reports")(lambda a, b: a + b).enqueue(1, 1)
    other.close()
    paused = run_cli(project, subprocess_env, "--app", "tasks:app", "queues", "pause", "reports", rc=0)
    assert paused.stdout.startswith("paused queue reports")
    assert "queue reports is not declared by this app; it has jobs in the database" in paused.stderr

    # --db has no declarations to check: any valid name goes, with a note when no job uses it.
    by_db = run_cli(project, subprocess_env, "--db", "jobs.sqlite3", "queues", "pause", "later", rc=0)
    assert by_db.stderr == "minijobs: note: no job of queue later is in the database (yet)\n"
    # A paused queue can always be resumed, declared or not.
    resumed = run_cli(project, subprocess_env, "--app", "tasks:app", "queues", "resume", "later", rc=0)
    assert resumed.stdout == "resumed queue later\n"
    rows = {r["name"]: r["paused"] for r in mj_json(project, "queues", "list")}
    assert rows == {"default": False, "mail": False, "reports": True}  # "later": neither paused nor used now


# -- no database is created by commands that only look ------------------------------------------------------


def test_read_only_commands_leave_no_database_behind(project: Path, subprocess_env: dict[str, str]) -> None:
    db = project / "jobs.sqlite3"
    by_app = run_cli(project, subprocess_env, "--app", "tasks:app", "jobs", "list", rc=1)
    assert by_app.stderr == (
        f"minijobs: error: no database at {db} (create one with: minijobs --app tasks:app migrate, or start a worker)\n")
    elsewhere = project / "elsewhere.sqlite3"
    by_db = run_cli(project, subprocess_env, "--db", "elsewhere.sqlite3", "stats", rc=1)
    assert by_db.stderr == (
        f"minijobs: error: no database at {elsewhere} (create one with: minijobs --db elsewhere.sqlite3 migrate)\n")
    assert not list(project.glob("*.sqlite3*"))


@pytest.fixture
def in_process(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[int, str, str]]]:
    """``cli.main`` in this process, in ``project``, with the app module under a name of its own."""
    name = f"tasks_{uuid.uuid4().hex}"
    (project / f"{name}.py").write_text(TASKS)
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", list(sys.path))

    def run(*args: str, app: str | None = f"{name}:app") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        rc = cli.main([*(["--app", app] if app else []), *args], out=out, err=err)
        return rc, out.getvalue(), err.getvalue()

    yield run
    sys.modules.pop(name, None)


@pytest.mark.parametrize("command", [
    ("jobs", "list"), ("jobs", "show", "1"), ("stats",), ("queues", "list"), ("check",),
    ("jobs", "cancel", "1"), ("jobs", "retry", "1"), ("prune",), ("queues", "pause", "default"),
], ids=" ".join)
@pytest.mark.parametrize("how", ["app", "db"])
def test_commands_other_than_migrate_worker_enqueue_need_an_existing_database(
    in_process: Callable[..., tuple[int, str, str]], project: Path, command: tuple[str, ...], how: str
) -> None:
    rc, out, err = in_process(*command) if how == "app" else in_process("--db", "jobs.sqlite3", *command, app=None)
    assert (rc, out) == (1, "")
    assert err.startswith(f"minijobs: error: no database at {project / 'jobs.sqlite3'} (create one with: minijobs ")
    assert not list(project.glob("jobs.sqlite3*"))


def test_cron_list_needs_no_database(in_process: Callable[..., tuple[int, str, str]], project: Path) -> None:
    (project / "minijobs.toml").write_text(
        '[[plugins.cron.schedules]]\nname = "n"\nexpression = "0 3 * * *"\njob = "add"\nargs = [1, 2]\n')
    rc, out, err = in_process("cron", "list")
    assert (rc, err) == (0, "") and out.startswith("NAME")
    assert not list(project.glob("jobs.sqlite3*"))  # it shows the app's schedules; it never opens the file


def test_app_given_twice_or_as_a_queue_name(in_process: Callable[..., tuple[int, str, str]]) -> None:
    rc, out, err = in_process("worker", "other:app")
    assert (rc, out) == (1, "")
    assert err.startswith("minijobs: error: two apps given: --app 'tasks_") and err.endswith(
        ":app' and 'other:app'; give one\n")
    assert in_process("--db", "jobs.sqlite3", "worker", "tasks:app", app=None)[2] == (
        "minijobs: error: give --app or --db, not both\n")
    with pytest.raises(SystemExit) as usage:
        in_process("worker", "default", app=None)  # rq takes queue names there; ours is the app
    assert usage.value.code == 2
