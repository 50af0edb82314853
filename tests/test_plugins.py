"""The Plugin ABC: configuration, life cycle (sleep, wake-ups, protection, leader scope), hooks, events, defaults."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import textwrap
import threading
import time
import tomllib
from pathlib import Path
from typing import Any, ClassVar

import pytest

import minijobs
from minijobs import JobState, Plugin, PluginScope
from minijobs.events import EventHub
from minijobs.plugins import Cron, Leadership, Pruner, Recovery, default_plugins, disabled_in, from_config
from minijobs.testing import FakeClock

WAIT_S = 10.0


def wait(event: threading.Event, what: str) -> None:
    assert event.wait(WAIT_S), f"timed out waiting for {what}"


# -- defaults and dependencies --------------------------------------------------------


def test_builtins_are_on_by_default_and_plugins_empty_list_opts_out(db_path: Path) -> None:
    app = minijobs.App(db_path)
    assert [type(p) for p in app.plugins] == [Leadership, Recovery, Pruner]
    assert [p.get_identifier() for p in app.plugins] == ["minijobs.leadership", "minijobs.recovery", "minijobs.pruner"]
    assert minijobs.App(db_path, plugins=[]).plugins == ()
    # Every App gets its own instances (a plugin serves one worker at a time).
    assert all(a is not b for a, b in zip(app.plugins, minijobs.App(db_path).plugins, strict=True))
    assert [type(p) for p in default_plugins()] == [Leadership, Recovery, Pruner]


def test_missing_dependency_duplicates_and_non_plugins_are_refused(db_path: Path) -> None:
    with pytest.raises(minijobs.ConfigurationError, match=r"minijobs\.pruner needs \['minijobs\.leadership'\]"):
        minijobs.App(db_path, plugins=[Pruner()])
    with pytest.raises(minijobs.ConfigurationError, match=r"minijobs\.cron needs"):
        minijobs.App(db_path, plugins=[Recovery(), Cron()])
    with pytest.raises(minijobs.ConfigurationError, match="configured twice"):
        minijobs.App(db_path, plugins=[Recovery(), Recovery()])
    with pytest.raises(minijobs.ConfigurationError, match="Plugin instances"):
        minijobs.App(db_path, plugins=["minijobs.recovery"])  # type: ignore[list-item]
    minijobs.App(db_path, plugins=[Leadership(), Pruner(), Cron()])  # satisfied


def test_a_leader_scoped_plugin_without_leadership_is_refused_naming_the_fix(db_path: Path) -> None:
    """It would be accepted and never run: nothing could elect a leader for it."""
    fix = r"tests\.leader_probe runs on the leader only .* add minijobs\.plugins\.Leadership\(\) to the app's plugins"
    with pytest.raises(minijobs.ConfigurationError, match=fix):
        minijobs.App(db_path, plugins=[Recovery(), LeaderProbe()])
    app = minijobs.App(db_path, plugins=[Leadership(), Recovery()])
    with pytest.raises(minijobs.ConfigurationError, match=fix):
        app.reconfigure(plugins=[Recovery(), LeaderProbe()])
    assert [p.get_identifier() for p in app.plugins] == ["minijobs.leadership", "minijobs.recovery"]  # unchanged
    minijobs.App(db_path, plugins=[Leadership(), LeaderProbe()])  # satisfied


class Probe(Plugin):
    """Records what the worker does with it."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.runs = 0
        self.drained = 0

    @classmethod
    def get_identifier(cls) -> str:
        return "tests.probe"

    async def run(self, worker: minijobs.Worker, app: minijobs.App) -> None:
        self.runs += 1
        self.started.set()
        while await self.sleep(3600):
            pass

    async def on_drain(self, worker: minijobs.Worker, app: minijobs.App) -> None:
        self.drained += 1


def test_drain_runs_no_plugin_but_calls_on_drain(db_path: Path) -> None:
    probe = Probe()
    app = minijobs.App(db_path, plugins=[*default_plugins(), probe])

    @app.job
    def noop() -> None:
        return None

    noop.enqueue()
    assert app.drain() == 1
    assert probe.runs == 0 and probe.drained == 1
    assert Leadership.leases(app) == {}  # no election happened: drain stays a quick burst


# -- configuration ----------------------------------------------------------------------


def test_configure_checks_keys_types_and_ranges_and_applies_nothing_on_error() -> None:
    pruner = Pruner()
    with pytest.raises(minijobs.ConfigurationError, match=r"minijobs\.pruner: unknown option 'keep'"):
        pruner.configure({"keep": 5})
    with pytest.raises(minijobs.ConfigurationError, match="option 'keep_s' must be a number or None, got 'week'"):
        pruner.configure({"keep_s": "week"})
    with pytest.raises(minijobs.ConfigurationError, match="'batch_size' must be an integer"):
        pruner.configure({"batch_size": 10.5})
    with pytest.raises(minijobs.ConfigurationError, match="'batch_size' must be an integer"):
        pruner.configure({"batch_size": True})
    with pytest.raises(minijobs.ConfigurationError, match="'keep_by_state.done' is not a finished state"):
        pruner.configure({"keep_by_state": {"done": 5}})
    with pytest.raises(minijobs.ConfigurationError, match="'keep_by_queue.bad name'"):
        pruner.configure({"keep_by_queue": {"bad name": 5}})
    with pytest.raises(minijobs.ConfigurationError, match="'interval_s' must be > 0"):
        pruner.configure({"keep_s": 10, "interval_s": -1})
    assert pruner.keep_s == 7 * 86400 and pruner.interval_s == 60.0  # nothing half-applied
    pruner.configure({"keep_s": 3600, "keep_by_state": {"failed": None}})
    assert pruner.keep_s == 3600.0 and isinstance(pruner.keep_s, float) and pruner.keep_by_state == {"failed": None}
    with pytest.raises(minijobs.ConfigurationError, match="renew_interval_s"):
        Leadership(lease_s=1, renew_interval_s=0.9)
    with pytest.raises(minijobs.ConfigurationError, match="max_rescues"):
        Recovery(max_rescues=-1)
    with pytest.raises(minijobs.ConfigurationError, match="unknown option 'x'.*known options: none"):
        Probe().configure({"x": 1})
    with pytest.raises(minijobs.ConfigurationError, match="must be a mapping"):
        Probe().configure([("x", 1)])  # type: ignore[arg-type]


def test_custom_plugin_schema() -> None:
    class Mailer(Plugin):
        config_schema: ClassVar[dict[str, Any]] = {"host": str, "port": int, "tls": bool, "to": list[str]}
        host, port, tls, to = "localhost", 25, False, []

        @classmethod
        def get_identifier(cls) -> str:
            return "tests.mailer"

    mailer = Mailer()
    mailer.configure({"host": "mx", "port": 587, "tls": True, "to": ["ops@example.com"]})
    assert (mailer.host, mailer.port, mailer.tls, mailer.to) == ("mx", 587, True, ["ops@example.com"])
    with pytest.raises(minijobs.ConfigurationError, match=r"option 'to\[1\]' must be a string, got 3"):
        mailer.configure({"to": ["a", 3]})


TOML = """
[plugins.pruner]
keep_s = 604800
keep_by_state = { failed = 2592000 }
keep_by_queue = { reports = 86400, audit = false }

[plugins.recovery]
max_rescues = 5
interval_s = 2.5

[plugins.leadership]
enabled = false
"""


def test_from_config_builds_builtins_from_toml() -> None:
    data = tomllib.loads(TOML.replace("audit = false", "audit = 172800"))["plugins"]
    plugins = from_config(data)
    assert [type(p) for p in plugins] == [Pruner, Recovery]
    pruner, recovery = plugins
    assert isinstance(pruner, Pruner) and isinstance(recovery, Recovery)
    assert pruner.keep_s == 604800.0 and pruner.keep_by_state == {"failed": 2592000.0}
    assert pruner.keep_by_queue == {"reports": 86400.0, "audit": 172800.0}
    assert (recovery.max_rescues, recovery.interval_s) == (5, 2.5)
    assert disabled_in(data) == {"minijobs.leadership"}


def test_from_config_names_the_bad_option() -> None:
    with pytest.raises(minijobs.ConfigurationError, match=r"'keep_by_queue\.audit' must be a number or None, got False"):
        from_config(tomllib.loads(TOML)["plugins"])
    with pytest.raises(minijobs.ConfigurationError, match=r"unknown plugin \[plugins\.prunner\]"):
        from_config({"prunner": {}})
    with pytest.raises(minijobs.ConfigurationError, match="'enabled' must be a boolean"):
        from_config({"pruner": {"enabled": "no"}})
    with pytest.raises(minijobs.ConfigurationError, match=r"\[plugins\.pruner\] must be a table"):
        from_config({"pruner": 3})


# -- life cycle -------------------------------------------------------------------------


def test_sleep_wakes_on_wake_up_and_returns_false_when_stopping(db_path: Path) -> None:
    class Sleeper(Plugin):
        def __init__(self) -> None:
            super().__init__()
            self.started = threading.Event()
            self.woken = threading.Event()
            self.ended = threading.Event()

        @classmethod
        def get_identifier(cls) -> str:
            return "tests.sleeper"

        async def run(self, worker: minijobs.Worker, app: minijobs.App) -> None:
            self.started.set()
            while await self.sleep(3600):
                self.woken.set()
            self.ended.set()  # the loop ended by itself: sleep returned False

    sleeper = Sleeper()
    app = minijobs.App(db_path, plugins=[sleeper])
    with app.running():
        wait(sleeper.started, "plugin start")
        sleeper.wake_up()
        wait(sleeper.woken, "wake-up")
        assert not sleeper.ended.is_set()
        started = time.monotonic()
    assert sleeper.ended.is_set()
    assert time.monotonic() - started < 5  # not the 3600 s nap
    assert sleeper.worker is None  # detached after the worker stopped


def test_wake_on_an_event(db_path: Path) -> None:
    class OnEnqueue(Plugin):
        def __init__(self) -> None:
            super().__init__()
            self.ready = threading.Event()
            self.seen = threading.Event()

        @classmethod
        def get_identifier(cls) -> str:
            return "tests.on_enqueue"

        async def run(self, worker: minijobs.Worker, app: minijobs.App) -> None:
            unsubscribe = self.wake_on(app, "job.enqueued")
            try:
                self.ready.set()
                while await self.sleep(3600):
                    self.seen.set()
            finally:
                unsubscribe()

    plugin = OnEnqueue()
    app = minijobs.App(db_path, plugins=[plugin])

    @app.job
    def noop() -> None:
        return None

    with app.running():
        wait(plugin.ready, "plugin start")
        assert not plugin.seen.is_set()
        noop.enqueue()
        wait(plugin.seen, "wake on job.enqueued")
    with pytest.raises(ValueError, match="at least one"):
        plugin.wake_on(app)


def test_sleep_until_follows_the_app_clock(db_path: Path) -> None:
    clock = FakeClock()

    class Timer(Plugin):
        def __init__(self) -> None:
            super().__init__()
            self.ready = threading.Event()
            self.fired = threading.Event()
            self.fired_at: float | None = None

        @classmethod
        def get_identifier(cls) -> str:
            return "tests.timer"

        async def run(self, worker: minijobs.Worker, app: minijobs.App) -> None:
            target = app.clock.now() + 3600
            self.ready.set()
            if await self.sleep_until(target):
                self.fired_at = app.clock.now()
                self.fired.set()

    timer = Timer()
    app = minijobs.App(db_path, clock=clock, plugins=[timer])
    start = clock.now()
    with app.running():
        wait(timer.ready, "plugin start")
        clock.advance(1800)
        assert not timer.fired.wait(0.05)  # half-way: still asleep
        clock.advance(1800)
        wait(timer.fired, "the clock to reach the target")
    assert timer.fired_at == start + 3600


def test_a_crashing_plugin_is_logged_and_restarted_and_never_stops_the_worker(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Flaky(Plugin):
        def __init__(self) -> None:
            super().__init__()
            self.crashed = threading.Event()
            self.second_run = threading.Event()
            self.calls = 0

        @classmethod
        def get_identifier(cls) -> str:
            return "tests.flaky"

        async def run(self, worker: minijobs.Worker, app: minijobs.App) -> None:
            self.calls += 1
            if self.calls == 1:
                self.crashed.set()
                raise RuntimeError("boom in plugin")
            self.second_run.set()
            while await self.sleep(3600):
                pass

    flaky = Flaky()
    app = minijobs.App(db_path, plugins=[flaky])

    @app.job
    def double(x: int) -> int:
        return 2 * x

    with caplog.at_level(logging.ERROR, logger="minijobs.worker"), app.running():
        wait(flaky.crashed, "the crash")
        assert double.enqueue(21).wait(timeout_s=WAIT_S).result == 42  # the worker keeps working
        flaky.wake_up()  # cut the restart backoff short instead of sleeping through it
        wait(flaky.second_run, "the restart")
    assert flaky.calls == 2
    (record,) = [r for r in caplog.records if "tests.flaky crashed" in r.getMessage()]
    assert record.exc_info is not None and "boom in plugin" in str(record.exc_info[1])
    assert "restarting in" in record.getMessage()


class LeaderProbe(Plugin):
    def __init__(self) -> None:
        super().__init__()
        self.starts = 0
        self.cancels = 0
        self.running = threading.Event()
        self.stopped = threading.Event()

    @classmethod
    def get_identifier(cls) -> str:
        return "tests.leader_probe"

    @classmethod
    def get_scope(cls) -> PluginScope:
        return PluginScope.LEADER

    async def run(self, worker: minijobs.Worker, app: minijobs.App) -> None:
        self.starts += 1
        self.stopped.clear()
        self.running.set()
        try:
            while await self.sleep(3600):
                pass
        except asyncio.CancelledError:
            self.cancels += 1
            raise
        finally:
            self.running.clear()
            self.stopped.set()


def test_leader_scope_plugin_runs_only_while_leader(db_path: Path) -> None:
    probe = LeaderProbe()
    clock = FakeClock()  # never advanced: the ghost below keeps the election, so the test plays the elector
    app = minijobs.App(db_path, clock=clock, plugins=[Leadership(), probe])
    app.open()
    app.store.execute_write(
        "plant lease",
        "INSERT INTO minijobs_leadership (name, owner, term, acquired_at, renewed_at, expires_at) "
        "VALUES ('tests.leader_probe', 'ghost', 1, :now, :now, :now + 3600)",
        {"now": clock.now()},
    )
    with app.running() as worker:
        assert not probe.running.wait(0.1) and probe.starts == 0
        worker.call_soon(worker.set_leader, True)
        wait(probe.running, "start on leadership")
        worker.call_soon(worker.set_leader, False)
        wait(probe.stopped, "stop on leadership loss")
        assert probe.cancels == 1 and not worker.is_leader
        worker.call_soon(worker.set_leader, True)
        wait(probe.running, "restart on leadership")
    assert probe.starts == 2


def test_one_plugin_instance_runs_in_one_worker_at_a_time(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    probe = Probe()
    app = minijobs.App(db_path, plugins=[probe])
    with caplog.at_level(logging.ERROR, logger="minijobs.worker"), app.running():
        wait(probe.started, "plugin start")
        with app.running():
            pass
    assert probe.runs == 1
    assert any("already runs in worker" in r.getMessage() for r in caplog.records)


# -- hooks ------------------------------------------------------------------------------


class Hooks(Plugin):
    """Injects an argument, turns a first failure into a retry, wraps results, checks writes."""

    def __init__(self) -> None:
        super().__init__()
        self.updated: list[tuple[int, JobState, JobState]] = []
        self.immutable = False

    @classmethod
    def get_identifier(cls) -> str:
        return "tests.hooks"

    def on_job_starting(self, *, job: minijobs.Job, worker: minijobs.Worker) -> minijobs.Job:
        try:
            job.kwargs = {}  # type: ignore[misc]
        except dataclasses.FrozenInstanceError:
            self.immutable = True
        return job.replace(kwargs={**job.kwargs, "injected": "yes"})

    def on_job_completed(
        self, *, job: minijobs.Job, worker: minijobs.Worker, exc: BaseException | None, result: Any
    ) -> minijobs.Job:
        if isinstance(exc, ValueError) and job.attempts == 1:
            assert job.state is JobState.FAILED and job.errors[-1].message == "first try fails"
            return job.replace(state=JobState.RETRYING, completed_at=None)
        if job.state is JobState.SUCCEEDED:
            return job.replace(result={"wrapped": result})
        return job

    def on_job_updated(self, *, job: minijobs.Job, worker: minijobs.Worker) -> None:
        stored = worker.app.get(job.id)  # the outcome is already written
        self.updated.append((job.id, job.state, stored.state))


def test_hooks_can_change_the_job_and_replace_the_outcome(db_path: Path) -> None:
    hooks = Hooks()
    app = minijobs.App(db_path, plugins=[hooks], clock=FakeClock())

    # Enqueue checks the call against the signature: a parameter a plugin fills in needs a default.
    @app.job(max_attempts=1)
    def flaky(*, injected: str = "") -> str:
        if app.get(minijobs.current_job().id).attempts == 1:
            raise ValueError("first try fails")
        return injected

    ref = flaky.enqueue()
    assert app.drain() == 2
    job = ref.get()
    assert job.state is JobState.SUCCEEDED and job.attempts == 2
    assert job.result == {"wrapped": "yes"}
    assert [e.message for e in job.errors] == ["first try fails"]
    assert hooks.updated == [(ref.id, JobState.RETRYING, JobState.RETRYING), (ref.id, JobState.SUCCEEDED, JobState.SUCCEEDED)]
    assert hooks.immutable


def test_failing_or_bad_hooks_are_logged_and_skipped(db_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Plugin):
        @classmethod
        def get_identifier(cls) -> str:
            return "tests.broken"

        def on_job_starting(self, *, job: minijobs.Job, worker: minijobs.Worker) -> minijobs.Job:
            raise RuntimeError("starting hook bug")

        def on_job_completed(self, *, job: minijobs.Job, worker: minijobs.Worker, exc: BaseException | None,
                             result: Any) -> minijobs.Job:
            return job.replace(state=JobState.RUNNING)  # cannot be written

        def on_job_updated(self, *, job: minijobs.Job, worker: minijobs.Worker) -> None:
            raise RuntimeError("updated hook bug")

    class BadResult(Plugin):
        @classmethod
        def get_identifier(cls) -> str:
            return "tests.bad_result"

        def on_job_completed(self, *, job: minijobs.Job, worker: minijobs.Worker, exc: BaseException | None,
                             result: Any) -> minijobs.Job:
            return job.replace(result={1, 2})  # not JSON

    app = minijobs.App(db_path, plugins=[Broken(), BadResult()])

    @app.job
    def add(a: int, b: int) -> int:
        return a + b

    ref = add.enqueue(1, 2)
    with caplog.at_level(logging.ERROR, logger="minijobs.worker"):
        assert app.drain() == 1
    job = ref.get()
    assert (job.state, job.result) == (JobState.SUCCEEDED, 3)
    messages = [r.getMessage() for r in caplog.records]
    assert any("tests.broken failed in on_job_starting" in m for m in messages)
    assert any("tests.broken: on_job_completed returned state 'running'" in m for m in messages)
    assert any("tests.bad_result: on_job_completed returned a result that cannot be stored" in m for m in messages)
    assert any("tests.broken failed in on_job_updated" in m for m in messages)


# -- storage ----------------------------------------------------------------------------


def test_plugin_owned_tables_are_migrated_and_versioned(db_path: Path) -> None:
    class Notes(Plugin):
        migrations = (
            "CREATE TABLE tests_notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
            "ALTER TABLE tests_notes ADD COLUMN created_at REAL",
        )

        @classmethod
        def get_identifier(cls) -> str:
            return "tests.notes"

        def get_tables(self) -> tuple[str, ...]:
            return ("tests_notes",)

        def cleanup(self, app: minijobs.App) -> int:
            return app.store.execute_write("clean notes", "DELETE FROM tests_notes WHERE created_at IS NULL")

    notes = Notes()
    app = minijobs.App(db_path, plugins=[notes])
    app.open()
    assert app.store.schema_version("tests.notes") == 2
    app.store.execute_write("add", "INSERT INTO tests_notes (body) VALUES ('x')")
    assert notes.cleanup(app) == 1
    with pytest.raises(ValueError, match="no schema version 3"):
        notes.migrate(app, to_version=3)
    app.close()
    fresh = tmp = db_path.with_name("partial.sqlite3")
    partial = minijobs.App(tmp, plugins=[])
    assert notes.migrate(partial, to_version=1) == 1 and fresh.exists()
    assert partial.store.schema_version("tests.notes") == 1
    assert notes.migrate(partial) == 2
    partial.close()


# -- events -----------------------------------------------------------------------------


def test_event_hub_patterns_unsubscribe_and_failing_subscribers(caplog: pytest.LogCaptureFixture) -> None:
    hub = EventHub()
    seen: dict[str, list[str]] = {"exact": [], "prefix": [], "all": []}
    hub.subscribe("job.completed", lambda e: seen["exact"].append(e.name))
    off = hub.subscribe("job.*", lambda e: seen["prefix"].append(e.name))

    def broken(event: minijobs.Event) -> None:
        raise RuntimeError("subscriber bug")

    hub.subscribe("*", broken)
    hub.subscribe("*", lambda e: seen["all"].append(e.name))
    assert hub.wants("job.completed") and hub.wants("leadership.gained")
    with caplog.at_level(logging.ERROR, logger="minijobs.events"):
        hub.emit("job.completed", job_id=1)
        hub.emit("leadership.gained", worker_id="w")
    assert seen == {"exact": ["job.completed"], "prefix": ["job.completed"],
                    "all": ["job.completed", "leadership.gained"]}
    assert sum("subscriber" in r.getMessage() or r.exc_info is not None for r in caplog.records) == 2
    off()
    hub.emit("job.started")
    assert seen["prefix"] == ["job.completed"]
    for bad in ("", "job*", "*.completed"):
        with pytest.raises(ValueError):
            hub.subscribe(bad, lambda e: None)


def test_app_and_worker_emit_events(db_path: Path) -> None:
    app = minijobs.App(db_path, plugins=[Leadership(lease_s=5), LeaderProbe()])  # a plugin to elect a leader for
    names: list[str] = []
    gained = threading.Event()
    completed: list[minijobs.Event] = []
    lock = threading.Lock()

    def record(event: minijobs.Event) -> None:
        with lock:
            names.append(event.name)
        if event.name == "leadership.gained":
            gained.set()
        if event.name == "job.completed":
            completed.append(event)

    app.events.subscribe("*", record)

    @app.job
    def noop() -> str:
        return "done"

    with app.running():
        wait(gained, "leadership")
        noop.enqueue().wait(timeout_s=WAIT_S)
    for name in ("worker.started", "leadership.gained", "job.enqueued", "job.started", "job.completed",
                 "worker.stopping", "leadership.lost", "worker.stopped"):
        assert name in names, name
    (event,) = completed
    assert event.data["state"] is JobState.SUCCEEDED and event.data["job"].result == "done"


def test_docs_example_plugin_config_round_trip() -> None:
    """The TOML snippet the issue asks for builds a configured Pruner."""
    (pruner,) = from_config(tomllib.loads(textwrap.dedent("""
        [plugins.pruner]
        keep_s = 604800
    """))["plugins"])
    assert isinstance(pruner, Pruner) and pruner.keep_s == 604800.0
