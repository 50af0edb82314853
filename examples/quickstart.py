"""Quickstart: enqueue a few jobs into a SQLite file and run them with a background worker."""

import tempfile
from pathlib import Path

import minijobs

# A throwaway folder, removed when the script ends (a finalizer removes it even if the module is only imported).
DATA_DIR = tempfile.TemporaryDirectory(prefix="minijobs-quickstart-")
app = minijobs.App(Path(DATA_DIR.name) / "jobs.sqlite3")


@app.job(max_attempts=3)
async def add(a: int, b: int) -> int:
    minijobs.current_job().set_progress(1, 1, "added")
    return a + b


@app.job
def shout(word: str) -> str:  # plain functions work too
    return word.upper() + "!"


if __name__ == "__main__":
    with DATA_DIR:
        with app.running():  # a worker in a background thread
            refs = [add.enqueue(i, i) for i in range(5)] + [shout.enqueue("hello")]
            for ref in refs:
                job = ref.wait(timeout_s=10)
                print(f"job {job.id} {job.name}: {job.state} -> {job.result!r}")
        print("counts:", {state.value: n for state, n in app.store.count_by_state().items() if n})
        app.close()  # before the folder goes
