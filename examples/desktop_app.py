"""A sync desktop app that runs long exports in the background, with progress and a cancel button.

No GUI toolkit is needed to follow along: the "UI" is a loop in the main thread
that handles events from a ``queue.Queue``, the way Tk's ``after()`` or Qt's
signals deliver work to the UI thread.  The script clicks its own buttons:
it starts two exports, then presses "cancel" on the second one once it passed
30 %, and exits when both are finished.

    python3 -m examples.desktop_app

Things to notice:

* the worker runs in a background thread (``app.running()``), so the UI thread
  never blocks on a job;
* ``job.progress`` events arrive in the worker's thread, so the callback only
  puts them on the UI queue (never touch widgets from another thread);
* cancellation of a plain ``def`` job is cooperative: the job calls
  ``check_cancelled()`` between steps and stops there;
* the database is a file: quit in the middle and the unfinished exports are
  still there next time the app starts.
"""

from __future__ import annotations

import queue
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import minijobs

# A real app would use its user data directory.  This throwaway folder is removed when the script ends
# (a finalizer removes it even if the module is only imported).
_TMP = tempfile.TemporaryDirectory(prefix="minijobs-desktop-")
DATA_DIR = Path(_TMP.name)
app = minijobs.App(DATA_DIR / "jobs.sqlite3")


@app.job(name="export_photos", timeout_s=60)
def export_photos(album: str, count: int) -> dict[str, object]:
    """The slow part of the app: runs in a worker thread, reports progress, honours cancel."""
    job = minijobs.current_job()
    out = DATA_DIR / f"{album}.txt"
    with out.open("w") as fh:
        for i in range(1, count + 1):
            job.check_cancelled()  # raises minijobs.Cancelled once the user pressed cancel or the app quits
            time.sleep(0.01)  # pretend to resize a photo
            fh.write(f"{album}/photo-{i:03d}.jpg\n")
            job.set_progress(i, count, f"photo {i} of {count}")
    return {"album": album, "file": out.name, "photos": count}


# -- the "UI" ---------------------------------------------------------------------


@dataclass
class ProgressUpdate:
    job_id: int
    fraction: float | None
    message: str | None


@dataclass
class Finished:
    job_id: int
    state: str


class ExportWindow:
    """Holds what a real window would show: one progress bar and a cancel button per export."""

    def __init__(self) -> None:
        self.ui_events: queue.Queue[ProgressUpdate | Finished] = queue.Queue()
        self.labels: dict[int, str] = {}
        self.shown: dict[int, int] = {}
        self.cancel_clicked: set[int] = set()
        self.finished: dict[int, str] = {}

    # Called in the worker's thread: hand over to the UI thread, nothing else.
    def on_progress(self, event: minijobs.Event) -> None:
        progress = event.data["progress"]
        self.ui_events.put(ProgressUpdate(event.data["job_id"], progress.fraction, progress.message))

    def on_completed(self, event: minijobs.Event) -> None:
        job = event.data["job"]
        if job.state.is_terminal:  # "retrying" is not the end
            self.ui_events.put(Finished(job.id, job.state.value))

    # Everything below runs in the UI (main) thread.
    def start_export(self, album: str, count: int) -> int:
        ref = export_photos.enqueue(album, count)
        self.labels[ref.id] = album
        print(f"[ui] export of {album!r} queued as job {ref.id}")
        return ref.id

    def click_cancel(self, job_id: int) -> None:
        self.cancel_clicked.add(job_id)
        print(f"[ui] cancel pressed for {self.labels[job_id]!r}")
        app.cancel(job_id)

    def draw_progress(self, update: ProgressUpdate) -> None:
        if update.fraction is None:
            return
        tenth = int(update.fraction * 10)
        if self.shown.get(update.job_id) == tenth:
            return  # redraw only when the bar changes
        self.shown[update.job_id] = tenth
        bar = "#" * tenth + "." * (10 - tenth)
        print(f"[ui] {self.labels[update.job_id]:<12} [{bar}] {update.message}")

    def run(self, watch_for_cancel: int) -> None:
        """The UI loop: process events until every export has finished."""
        while len(self.finished) < len(self.labels):
            event = self.ui_events.get(timeout=30)
            if isinstance(event, ProgressUpdate):
                self.draw_progress(event)
                # The user watches the second export and presses cancel once it passed 30 %.
                if event.job_id == watch_for_cancel and (event.fraction or 0) >= 0.3 and event.job_id not in self.cancel_clicked:
                    self.click_cancel(event.job_id)
            else:
                self.finished[event.job_id] = event.state
                print(f"[ui] {self.labels[event.job_id]!r} finished: {event.state}")


def main() -> None:
    window = ExportWindow()
    unsubscribe = [
        app.events.subscribe("job.progress", window.on_progress),
        app.events.subscribe("job.completed", window.on_completed),
    ]
    try:
        with app.running():  # the worker thread lives as long as the window
            window.start_export("holidays", 40)
            doomed = window.start_export("screenshots", 200)
            window.run(watch_for_cancel=doomed)
    finally:
        for cancel in unsubscribe:
            cancel()
    for job_id, label in window.labels.items():
        job = app.get(job_id)
        print(f"job {job_id} {label!r}: {job.state}, result={job.result}, progress={job.progress}")


if __name__ == "__main__":
    with _TMP:
        try:
            main()
        finally:
            app.close()  # before the folder goes
