"""Leadership: per leader-scoped plugin, one leader among the processes that run it; handover, stepping down."""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import minijobs
from minijobs import Plugin, PluginScope
from minijobs.plugins import Cron, CronSchedule, Leadership
from minijobs.testing import FakeClock

WAIT_S = 10.0
DUTY = "tests.duty"


class Duty(Plugin):
    """A leader-scoped plugin that does nothing: something for the workers to elect a leader for."""

    @classmethod
    def get_identifier(cls) -> str:
        return DUTY

    @classmethod
    def get_scope(cls) -> PluginScope:
        return PluginScope.LEADER


class Recorder:
    """Collects leadership events of an app; waits for them without sleeping."""

    def __init__(self, app: minijobs.App) -> None:
        self.events: queue.Queue[minijobs.Event] = queue.Queue()
        app.events.subscribe("leadership.*", self.events.put)

    def next(self, name: str, timeout: float = WAIT_S) -> minijobs.Event:
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            if event.name == name:
                return event


def test_a_single_worker_leads_and_hands_the_lease_back_when_it_stops(db_path: Path) -> None:
    clock = FakeClock()
    app = minijobs.App(db_path, clock=clock, plugins=[Leadership(lease_s=20), Duty()])
    recorder = Recorder(app)
    with app.running() as worker:
        gained = recorder.next("leadership.gained")
        assert gained.data == {"worker_id": worker.id, "term": 1, "plugin": DUTY}
        assert worker.is_leader
        lease = Leadership.current(app, plugin=DUTY)
        assert lease is not None and lease.owner == worker.id and lease.term == 1
        assert lease.expires_at.timestamp() == clock.now() + 20
        deadline = time.monotonic() + WAIT_S
        renewed = False
        while not renewed:  # move past the renewal point until the leader has renewed at the new time
            assert time.monotonic() < deadline, "lease never renewed"
            clock.advance(10)
            for _ in range(20):
                current = Leadership.current(app, plugin=DUTY)
                renewed = current is not None and current.renewed_at.timestamp() == clock.now()
                if renewed or threading.Event().wait(0.01):
                    break
        lease = Leadership.current(app, plugin=DUTY)
        assert lease is not None and lease.term == 1 and lease.expires_at.timestamp() == clock.now() + 20
    lost = recorder.next("leadership.lost")
    assert lost.data["reason"] == "worker stopping" and not worker.is_leader
    lease = Leadership.current(app, plugin=DUTY)
    assert lease is not None and lease.expires_at.timestamp() == clock.now()  # handed back, not left to expire
    assert lease.term == 1


def test_two_apps_elect_one_leader_and_a_clean_stop_hands_over_at_once(db_path: Path) -> None:
    clock = FakeClock()  # never advanced: only a hand-over can move leadership
    first = minijobs.App(db_path, clock=clock, plugins=[Leadership(lease_s=60, renew_interval_s=0.1), Duty()])
    second = minijobs.App(db_path, clock=clock, plugins=[Leadership(lease_s=60, renew_interval_s=0.1), Duty()])
    first_events, second_events = Recorder(first), Recorder(second)
    with first.running() as w1:
        first_events.next("leadership.gained")
        with second.running() as w2:
            # The follower keeps retrying (every 0.1 s real time here) and keeps losing.
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                assert w1.is_leader and not w2.is_leader
                threading.Event().wait(0.05)
            assert second_events.events.empty()
            w1.stop()
            gained = second_events.next("leadership.gained")
            assert gained.data["term"] == 2 and w2.is_leader
            lease = Leadership.current(second, plugin=DUTY)
            assert lease is not None and lease.owner == w2.id
    first.close()
    second.close()


def test_an_expired_lease_of_a_dead_leader_is_taken_over(db_path: Path) -> None:
    clock = FakeClock()
    app = minijobs.App(db_path, clock=clock, plugins=[Leadership(lease_s=30), Duty()])
    app.open()
    now = clock.now()
    # A leader in another process renewed its lease just now, then died.
    app.store.execute_write(
        "plant lease",
        "INSERT INTO minijobs_leadership (name, owner, term, acquired_at, renewed_at, expires_at) "
        "VALUES ('tests.duty', 'ghost', 7, ?, ?, ?)",
        (now - 100, now, now + 30),
    )
    recorder = Recorder(app)
    with app.running() as worker:
        assert not worker.is_leader
        clock.advance(29.9)
        with pytest.raises(queue.Empty):
            recorder.next("leadership.gained", timeout=0.2)
        clock.advance(0.1)  # the ghost's lease runs out: taken over within one lease period
        gained = recorder.next("leadership.gained")
        assert gained.data["term"] == 8 and worker.is_leader


@pytest.fixture
def write_lock(db_path: Path) -> Iterator[Any]:
    """Another connection that can hold the database's write lock, as a stuck process would."""
    conn = sqlite3.connect(db_path, isolation_level=None)

    class Lock:
        def hold(self) -> None:
            conn.execute("BEGIN IMMEDIATE")

        def release(self) -> None:
            conn.execute("ROLLBACK")

    yield Lock()
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    conn.close()


def test_a_leader_that_cannot_renew_steps_down_before_its_lease_expires(db_path: Path, write_lock: Any) -> None:
    clock = FakeClock()
    app = minijobs.App(db_path, clock=clock, busy_timeout_s=0.05, plugins=[Leadership(lease_s=10), Duty()])
    recorder = Recorder(app)
    with app.running() as worker:
        recorder.next("leadership.gained")
        lease = Leadership.current(app, plugin=DUTY)
        assert lease is not None
        expires = lease.expires_at.timestamp()
        write_lock.hold()  # every renewal now fails with "database is locked"
        clock.set(expires - 2)  # 8 s into a 10 s lease, never renewed
        lost = recorder.next("leadership.lost")
        assert lost.data["reason"] == "could not renew the lease before it expired"
        assert clock.now() < expires and not worker.is_leader  # stepped down before the lease ran out
        write_lock.release()
        clock.advance(5)
        regained = recorder.next("leadership.gained")
        assert regained.data["term"] == 1 and worker.is_leader  # nobody else led meanwhile: same term


def test_a_stalled_leader_steps_down_on_real_time_even_if_the_clock_stands_still(
    db_path: Path, write_lock: Any
) -> None:
    clock = FakeClock()  # never advanced: only the monotonic deadline can trigger
    app = minijobs.App(db_path, clock=clock, busy_timeout_s=0.02, plugins=[Leadership(lease_s=1.0), Duty()])
    recorder = Recorder(app)
    with app.running() as worker:
        recorder.next("leadership.gained")
        gained_at = time.monotonic()
        write_lock.hold()
        lost = recorder.next("leadership.lost")
        held_s = time.monotonic() - gained_at
        assert lost.data["reason"] == "could not renew the lease before it expired"
        assert held_s < 1.0 and not worker.is_leader  # within the 1 s lease, by real time
        write_lock.release()


CHILD = textwrap.dedent(
    """
    import sys
    import minijobs
    from minijobs.plugins import Leadership


    class Duty(minijobs.Plugin):
        @classmethod
        def get_identifier(cls):
            return "tests.duty"

        @classmethod
        def get_scope(cls):
            return minijobs.PluginScope.LEADER


    app = minijobs.App(sys.argv[1], plugins=[Leadership(lease_s=float(sys.argv[2])), Duty()])

    def say(event):
        print(event.name, event.data["worker_id"], event.data.get("term"), flush=True)

    app.events.subscribe("leadership.*", say)
    app.events.subscribe("worker.started", say)
    app.run_worker()
    """
)


@pytest.mark.slow
def test_leadership_moves_to_another_process_when_the_leader_is_killed(
    db_path: Path, subprocess_env: dict[str, str], python: str, tmp_path: Path
) -> None:
    lease_s = 1.0
    script = tmp_path / "leader_child.py"
    script.write_text(CHILD)
    lines: queue.Queue[tuple[int, list[str], float]] = queue.Queue()
    procs = [
        subprocess.Popen([python, str(script), str(db_path), str(lease_s)], env=subprocess_env,
                         stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]

    def read(index: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((index, line.split(), time.monotonic()))

    readers = [threading.Thread(target=read, args=(i, p), daemon=True) for i, p in enumerate(procs)]
    for reader in readers:
        reader.start()

    backlog: list[tuple[int, list[str], float]] = []

    def expect(kind: str, timeout: float = 30.0) -> tuple[int, list[str], float]:
        """The oldest unclaimed line of ``kind`` (lines of other kinds stay for later calls)."""
        deadline = time.monotonic() + timeout
        while True:
            for item in backlog:
                if item[1][0] == kind:
                    backlog.remove(item)
                    return item
            backlog.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))

    try:
        started = {expect("worker.started")[0] for _ in range(3)}
        assert started == {0, 1, 2}
        first, words, _ = expect("leadership.gained")
        assert words[2] == "1"
        os.kill(procs[first].pid, signal.SIGKILL)  # no chance to hand the lease back
        killed_at = time.monotonic()
        second, words, gained_at = expect("leadership.gained")
        takeover_s = gained_at - killed_at
        assert second != first and words[2] == "2"
        # Within one lease period (plus a little scheduling slack on a loaded machine).
        print(f"takeover after SIGKILL: {takeover_s:.3f} s (lease {lease_s} s)")
        assert takeover_s < lease_s + 0.3, takeover_s
        # A leader that stops cleanly hands over at once, well before its lease would expire.
        procs[second].send_signal(signal.SIGTERM)
        terminated_at = time.monotonic()
        third, words, gained_at = expect("leadership.gained")
        assert third not in (first, second) and words[2] == "3"
        assert gained_at - terminated_at < lease_s
        procs[third].send_signal(signal.SIGTERM)
        assert procs[second].wait(timeout=30) == 0 and procs[third].wait(timeout=30) == 0
        assert procs[first].wait(timeout=30) == -signal.SIGKILL
        app = minijobs.App(db_path, plugins=[Leadership()])
        lease = Leadership.current(app, plugin=DUTY)
        assert lease is not None and lease.term == 3
        assert lease.expires_at <= datetime.now(UTC)  # the last leader handed it back on its way out
        app.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


# -- one election per leader-scoped plugin ------------------------------------------------


class Other(Duty):
    @classmethod
    def get_identifier(cls) -> str:
        return "tests.other_duty"


def test_a_worker_without_leader_scoped_plugins_takes_part_in_no_election(db_path: Path) -> None:
    clock = FakeClock()  # never advanced: a lease taken by the first worker would never run out
    bystander = minijobs.App(db_path, clock=clock, plugins=[Leadership(lease_s=60)])
    app = minijobs.App(db_path, clock=clock, plugins=[Leadership(lease_s=60), Duty()])
    recorder = Recorder(app)
    with bystander.running() as idle, app.running() as worker:
        gained = recorder.next("leadership.gained")
        assert gained.data == {"worker_id": worker.id, "term": 1, "plugin": DUTY}
        assert worker.is_leader and worker.leads(DUTY)
        assert not idle.is_leader and idle.leader_plugins == ()
        assert set(Leadership.leases(app)) == {DUTY}
    bystander.close()
    app.close()


def test_workers_with_different_leader_plugins_do_not_block_each_other(db_path: Path) -> None:
    clock = FakeClock()  # never advanced: only a hand-over can move a lease
    first = minijobs.App(db_path, clock=clock, plugins=[Leadership(lease_s=60, renew_interval_s=0.1), Duty()])
    second = minijobs.App(db_path, clock=clock, plugins=[Leadership(lease_s=60, renew_interval_s=0.1), Duty(),
                                                         Other()])
    first_events, second_events = Recorder(first), Recorder(second)
    with first.running() as w1:
        assert first_events.next("leadership.gained").data["plugin"] == DUTY
        with second.running() as w2:
            gained = second_events.next("leadership.gained")
            # The second worker leads what only it runs, although the first one came first.
            assert gained.data["plugin"] == "tests.other_duty" and w2.leads("tests.other_duty")
            leases = Leadership.leases(second)
            assert {name: lease.owner for name, lease in leases.items()} == {DUTY: w1.id, "tests.other_duty": w2.id}
            assert w1.leads(DUTY) and not w2.leads(DUTY)
            w1.stop()
            gained = second_events.next("leadership.gained")
            assert gained.data == {"worker_id": w2.id, "term": 2, "plugin": DUTY}
    first.close()
    second.close()


NO_CRON_CHILD = textwrap.dedent(
    """
    import sys
    import minijobs

    app = minijobs.App(sys.argv[1])  # the default plugins: Leadership, Recovery, Pruner; no Cron

    def say(event):
        print(event.name, event.data["plugin"], flush=True)

    app.events.subscribe("leadership.gained", say)
    app.run_worker()
    """
)


@pytest.mark.slow
def test_a_process_without_cron_never_stops_cron_firing_in_a_process_with_cron(
    db_path: Path, subprocess_env: dict[str, str], python: str, tmp_path: Path
) -> None:
    script = tmp_path / "no_cron_child.py"
    script.write_text(NO_CRON_CHILD)
    child = subprocess.Popen([python, str(script), str(db_path)], env=subprocess_env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        # It leads before the Cron process starts: with one election for everything it would keep it.
        assert child.stdout.readline().split() == ["leadership.gained", "minijobs.pruner"]
        clock = FakeClock()
        fired = threading.Event()
        app = minijobs.App(db_path, clock=clock, queues=[minijobs.Queue("cron")],
                           plugins=[Leadership(), Cron()])

        @app.job(name="tick", queue="cron")  # a queue the child does not serve
        def tick() -> None:
            fired.set()

        app.reconfigure(plugins=[Leadership(), Cron([CronSchedule("minutely", "* * * * *", job=tick)])])
        recorder = Recorder(app)
        with app.running() as worker:
            gained = recorder.next("leadership.gained")
            assert gained.data["plugin"] == "minijobs.cron" and gained.data["worker_id"] == worker.id
            deadline = time.monotonic() + WAIT_S
            while not fired.wait(0.05):
                assert time.monotonic() < deadline, "cron never fired in the process that has Cron"
                clock.advance(60)
            leases = Leadership.leases(app)
            assert leases["minijobs.cron"].owner == worker.id
            assert leases["minijobs.pruner"].owner != worker.id  # the child still leads what it runs
        app.close()
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            assert child.wait(timeout=30) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()
