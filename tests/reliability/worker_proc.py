"""A worker or client process of the reliability suite (``python -m reliability.worker_proc``).

Modes:

``worker``  runs ``app.run_worker()`` (SIGTERM/SIGINT handled as in production)
            and prints ``READY <worker id>`` once it serves.
``client``  prints ``READY`` then executes one command per stdin line and answers
            one line each, so a test can make 20 processes act at the same instant.

Both modes read control lines on stdin (in a thread for workers):

``fsize <bytes>|inf``  set the soft RLIMIT_FSIZE (a full disk for this process only);
``enqueue <json>``     client: enqueue ``rel.task``/``rel.atask`` (``{"fn", "plan",
                       "options", "count"}``); answers ``OK <id>:<created> ...`` or
                       ``ERR <ErrorType> <message>``;
``count``              client: answers ``OK <number of rows>``;
``quit``               client: exit 0.

Fault injection for workers: ``--die-in claim|finish --die-ticks N`` kills the
process with SIGKILL from SQLite's progress handler while a claim (or a batch
of outcome writes) executes: mid-transaction, with pages dirty.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import sys
import threading
import time
from typing import Any

from minijobs import Queue
from minijobs.plugins import Cron, CronSchedule, Leadership, Recovery
from minijobs.testing import FakeClock

from .jobs import ATASK, TASK, build_app
from .ledger import process_ledger


# How the store's claim and outcome statements look (trace callbacks see expanded SQL, so no '?').
def _is_claim(sql: str) -> bool:
    return "SET state='running', attempts=attempts+1" in sql


def _is_finish(sql: str) -> bool:
    return sql.lstrip().startswith("UPDATE minijobs_jobs") and "SET state=" in sql and ", result=" in sql


def _parse_queue(spec: str) -> Queue:
    """``name[:concurrency[:executor]]`` with executor ``async`` (default), ``thread`` or ``process``."""
    parts = spec.split(":")
    name = parts[0]
    concurrency = int(parts[1]) if len(parts) > 1 and parts[1] else None
    kind = parts[2] if len(parts) > 2 else "async"
    options: dict[str, Any] = {}
    executor: Any = None
    if kind == "async":
        # Plain-def jobs run in the async executor's pool: size it to the queue.
        options = {"sync_threads": concurrency or 8}
    elif kind == "thread":
        from minijobs.executors import ThreadExecutor  # type: ignore[attr-defined]

        executor = ThreadExecutor
    elif kind == "process":
        from minijobs.executors import ProcessExecutor  # type: ignore[attr-defined]

        executor = ProcessExecutor
    else:
        raise SystemExit(f"unknown executor {kind!r}")
    return Queue(name, concurrency=concurrency, executor=executor, executor_options=options)


def _set_fsize(value: str) -> None:
    soft = resource.RLIM_INFINITY if value == "inf" else int(value)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _shared_clock(path: str) -> FakeClock:
    """A FakeClock that follows the time the test writes to ``path`` (a float, replaced atomically).

    Every process of a simulated day reads the same file, so they share one
    fake time; each change is applied through ``FakeClock.set`` and thereby
    wakes this process's worker and plugins, as in a single-process test.
    """

    def read() -> float:
        with open(path) as fh:
            return float(fh.read())

    clock = FakeClock(read())

    def follow() -> None:
        while True:
            value = read()
            if value > clock.now():
                clock.set(value)
            time.sleep(0.002)

    threading.Thread(target=follow, daemon=True, name="shared-clock").start()
    return clock


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _install_death(store: Any, where: str, ticks: int) -> None:
    """SIGKILL this process once a claim (or a run of outcome writes) has executed ``ticks`` x 20 VM steps.

    SQLite's progress handler runs inside the statement, so the kill lands
    mid-transaction with pages dirty.  Counting steps (not statements) skips
    claims that found nothing to do.
    """
    matches = _is_claim if where == "claim" else _is_finish
    state = {"in_mark": False, "ticks": 0}

    def trace(statement: str) -> None:
        in_mark = matches(statement)
        if where == "claim" or not in_mark:
            # Claims count per statement; outcome writes count over their transaction's run of UPDATEs.
            state["ticks"] = 0
        state["in_mark"] = in_mark

    def progress() -> int:
        if state["in_mark"]:
            state["ticks"] += 1
            if state["ticks"] >= ticks:
                process_ledger().fault(os.getpid(), "crash")
                os.kill(os.getpid(), signal.SIGKILL)
        return 0

    conn = store._conn  # the store's one connection: fault injection needs the real one
    conn.set_trace_callback(trace)
    conn.set_progress_handler(progress, 20)


def _enqueue(app: Any, spec: dict[str, Any]) -> str:
    fn = app.registry[spec.get("fn", ATASK if spec.get("async") else TASK)]
    bound = fn.options(**spec["options"]) if spec.get("options") else fn
    count = int(spec.get("count", 1))
    plan = spec.get("plan", {})
    if count == 1 and not spec.get("many"):
        refs = [bound.enqueue(plan)]
    else:
        refs = app.enqueue_many([bound.prepare(plan) for _ in range(count)])
    process_ledger().ack([r.id for r in refs if r.created])
    return "OK " + " ".join(f"{r.id}:{int(r.created)}" for r in refs)


def _client(app: Any) -> int:
    _say("READY")
    for raw in sys.stdin:
        line = raw.strip()
        if not line:
            continue
        command, _, rest = line.partition(" ")
        try:
            if command == "quit":
                break
            if command == "fsize":
                _set_fsize(rest)
                _say("OK fsize")
            elif command == "enqueue":
                _say(_enqueue(app, json.loads(rest)))
            elif command == "count":
                (n,) = app.store.query("count", "SELECT count(*) FROM minijobs_jobs")[0]
                _say(f"OK {n}")
            else:
                _say(f"ERR ValueError unknown command {command!r}")
        except Exception as exc:  # answered, not raised: the test asserts on the error type
            logging.getLogger("reliability.client").warning("command %r failed", command, exc_info=True)
            _say(f"ERR {type(exc).__name__} {exc}".replace("\n", " "))
    app.close()
    return 0


def _control(app: Any) -> None:
    for raw in sys.stdin:
        command, _, rest = raw.strip().partition(" ")
        if command == "fsize":
            _set_fsize(rest)
            _say("OK fsize")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["worker", "client"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--queue", action="append", default=[])
    parser.add_argument("--lease-s", type=float, default=30.0)
    parser.add_argument("--grace-s", type=float, default=5.0)
    parser.add_argument("--busy-timeout-s", type=float, default=5.0)
    parser.add_argument("--recovery-interval-s", type=float, default=0.0,
                        help="run the Recovery plugin this often (0: no recovery in this process)")
    parser.add_argument("--max-rescues", type=int, default=3)
    parser.add_argument("--die-in", choices=["claim", "finish"])
    parser.add_argument("--die-ticks", type=int, default=20)
    parser.add_argument("--shared-clock", help="file holding the simulated time (epoch seconds)")
    parser.add_argument("--cron", help="fire rel.task on this cron expression (with Leadership)")
    parser.add_argument("--leader-lease-s", type=float, default=15.0)
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format=f"%(levelname)s pid={os.getpid()} %(name)s: %(message)s"
    )
    plugins: list[Any] = []
    if args.recovery_interval_s:
        plugins.append(Recovery(interval_s=args.recovery_interval_s, max_rescues=args.max_rescues))
    if args.cron:
        plugins.append(Leadership(lease_s=args.leader_lease_s))
        plugins.append(Cron([CronSchedule("rel", args.cron, job=TASK, args=[{}])]))
    options: dict[str, Any] = {}
    if args.shared_clock:
        options["clock"] = _shared_clock(args.shared_clock)
    app = build_app(
        args.db,
        queues=[_parse_queue(q) for q in args.queue] or [Queue("default")],
        plugins=plugins,
        lease_s=args.lease_s,
        grace_s=args.grace_s,
        busy_timeout_s=args.busy_timeout_s,
        **options,
    )
    if args.mode == "client":
        return _client(app)
    app.open()
    if args.die_in:
        _install_death(app.store, args.die_in, args.die_ticks)
    app.events.subscribe("worker.started", lambda event: _say(f"READY {event.data['worker_id']}"))
    threading.Thread(target=_control, args=(app,), daemon=True, name="control").start()
    app.run_worker()
    app.close()
    _say("EXITED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
