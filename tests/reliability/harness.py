"""Starting, steering and hurting ``worker_proc`` processes; every signal goes into the ledger.

A :class:`Proc` reads its child's stdout and stderr in threads (pipes, so a
child under RLIMIT_FSIZE can still log), records every signal it sends as a
``fault`` and every reaping as an ``exit``, so the checker can tell an
explained duplicate from a real one.  :class:`Fleet` owns all processes of a
test and kills whatever is left at teardown.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .ledger import ENV_VAR, Ledger

ROOT = Path(__file__).resolve().parents[2]

#: Upper bound for anything a scenario waits on; a hang fails the test instead of stalling CI.
DEADLINE_S = 60.0


def wait_until(predicate: Callable[[], Any], *, timeout_s: float = DEADLINE_S, interval_s: float = 0.02,
               what: str = "condition") -> Any:
    """Poll ``predicate`` (state in another process: there is no event to wait on) until truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


class Proc:
    """One ``worker_proc`` child."""

    def __init__(self, fleet: Fleet, argv: Sequence[str], name: str) -> None:
        self.fleet = fleet
        self.name = name
        self.argv = list(argv)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        env[ENV_VAR] = str(fleet.ledger_dir)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "reliability.worker_proc", *self.argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.pid = self.popen.pid
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr_lines: list[str] = []
        self.worker_id: str | None = None
        self.reaped = False
        self._threads = [
            threading.Thread(target=self._pump_out, daemon=True, name=f"{name}-out"),
            threading.Thread(target=self._pump_err, daemon=True, name=f"{name}-err"),
        ]
        for thread in self._threads:
            thread.start()

    def _pump_out(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))

    def _pump_err(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.stderr_lines)

    def read_line(self, timeout_s: float = DEADLINE_S) -> str:
        try:
            return self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) said nothing for {timeout_s} s; stderr:\n{self.stderr[-3000:]}"
            ) from None

    def wait_ready(self, timeout_s: float = DEADLINE_S) -> Proc:
        line = self.read_line(timeout_s)
        if not line.startswith("READY"):
            raise AssertionError(f"{self.name}: expected READY, got {line!r}; stderr:\n{self.stderr[-3000:]}")
        self.worker_id = line.partition(" ")[2] or None
        return self

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def ask(self, line: str, timeout_s: float = DEADLINE_S) -> str:
        self.send(line)
        return self.read_line(timeout_s)

    def enqueue(self, plan: dict[str, Any] | None = None, **spec: Any) -> str:
        return self.ask("enqueue " + json.dumps({"plan": plan or {}, **spec}))

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` and record it as a fault first (the ledger must know before the effect)."""
        self.fleet.ledger.fault(self.pid, sig.name)
        os.kill(self.pid, sig)

    def kill(self) -> int:
        if self.alive():
            self.signal(signal.SIGKILL)
        return self.wait()

    def wait(self, timeout_s: float = DEADLINE_S) -> int:
        try:
            code = self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} (pid {self.pid}) did not exit within {timeout_s} s; "
                                 f"stderr:\n{self.stderr[-3000:]}") from None
        self._reap(code)
        return code

    def _reap(self, code: int) -> None:
        if self.reaped:
            return
        self.reaped = True
        self.fleet.ledger.record("exit", pid=self.pid, info=str(code))
        for thread in self._threads:
            thread.join(timeout=5)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass  # stdin of a dead child: nothing left to flush

    def close(self) -> None:
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGCONT)  # a stopped child cannot die of SIGKILL until it is reaped
            except ProcessLookupError:
                pass
            self.signal(signal.SIGKILL)
        self.wait()


class Fleet:
    """All processes of one scenario, the ledger directory, and the test process's own ledger."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "db" / "jobs.sqlite3"
        self.db.parent.mkdir()
        # A separate directory: inotify on the database's directory must not see ledger writes.
        self.ledger_dir = tmp_path / "ledger"
        self.ledger_dir.mkdir()
        self.ledger = Ledger(self.ledger_dir)
        self.procs: list[Proc] = []

    def spawn(self, mode: str, *args: str, name: str | None = None, ready: bool = True) -> Proc:
        proc = Proc(self, [mode, "--db", str(self.db), *args], name or f"{mode}{len(self.procs)}")
        self.procs.append(proc)
        if ready:
            proc.wait_ready()
        return proc

    def worker(self, *args: str, **kw: Any) -> Proc:
        return self.spawn("worker", *args, **kw)

    def client(self, *args: str, **kw: Any) -> Proc:
        return self.spawn("client", *args, **kw)

    def close(self) -> None:
        for proc in self.procs:
            proc.close()
        self.ledger.close()
