"""Several worker processes on one machine sharing one SQLite file.

    python3 -m examples.multiprocess

The script starts two ``minijobs worker`` processes (exactly what you would
put in two systemd units), enqueues 60 jobs from this process, waits for their
results, shows which process ran which share, and stops the workers with
SIGTERM, which lets running jobs finish.

The workers import this very module (``--app examples.multiprocess:app``), so
the database path comes from an environment variable they inherit, and the
job has an explicit ``name=``: run as a script its module is ``__main__``,
imported by the workers it is ``examples.multiprocess``, and the name must match.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import minijobs

# The script makes a throwaway folder for the database and removes it when it ends; the workers it
# starts inherit the path and make nothing.  (A finalizer removes the folder even if the module is
# only imported.)  A MINIJOBS_EXAMPLE_DB you set yourself is used as it is and never deleted.
_TMP = None if "MINIJOBS_EXAMPLE_DB" in os.environ else tempfile.TemporaryDirectory(prefix="minijobs-mp-")
if _TMP is not None:
    os.environ["MINIJOBS_EXAMPLE_DB"] = str(Path(_TMP.name) / "jobs.sqlite3")
DB = os.environ["MINIJOBS_EXAMPLE_DB"]
app = minijobs.App(DB)


@app.job(name="checksum", max_attempts=3)
def checksum(n: int) -> dict[str, int]:
    time.sleep(0.01)  # some work, so both processes get a share
    return {"pid": os.getpid(), "value": sum(i * i for i in range(n)) % 9973}


def start_worker() -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "minijobs", "--app", "examples.multiprocess:app", "--log-level", "WARNING", "worker", "--concurrency", "4"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until it is ready
        if "started" in line:
            print(line.strip())
            return proc
    raise SystemExit(f"worker exited early with status {proc.wait()}")


def main() -> None:
    app.open()  # create the schema once, before the workers race to do it
    workers = [start_worker(), start_worker()]
    try:
        refs = app.enqueue_many(checksum.prepare(1000 + i) for i in range(60))
        results = [ref.wait(timeout_s=60).result for ref in refs]
        shares = collections.Counter(result["pid"] for result in results)
        for pid, count in sorted(shares.items()):
            print(f"worker pid {pid} ran {count} jobs")
        print(f"all {len(results)} jobs succeeded: {all(r is not None for r in results)}")
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            _, err = proc.communicate(timeout=30)
            print(f"worker {proc.pid} exited with status {proc.returncode}: {err.strip().splitlines()[-1]}")
        app.close()


if __name__ == "__main__":
    with _TMP or contextlib.nullcontext():
        main()
