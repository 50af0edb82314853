"""Helpers for users' tests (standard library only; works with pytest and unittest).

* :class:`FakeClock` - time that moves only when told, so delays, retries and
  cron slots fall due without sleeping.
* ``app.drain()`` (on :class:`~minijobs.App`) - run every job that is due *now*
  by the app's clock in this process and return how many attempts ran.  Jobs
  scheduled later (delays, retry backoff) stay put until the clock is advanced
  and ``drain`` is called again; jobs enqueued by jobs during the drain run in
  the same drain.  ``drain(raise_on_failure=True)`` raises
  :class:`~minijobs.JobFailedError` for the first job that ends ``failed``.
* :func:`enqueued`, :func:`assert_enqueued`, :func:`assert_not_enqueued` - look
  at what a piece of code enqueued.
* :func:`eager` - make ``enqueue`` run the job before it returns, through the
  real database, so arguments make the same JSON round trip as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .job import Job, JobState

if TYPE_CHECKING:
    from .app import App
    from .registry import JobFunction

_DateTime = datetime  # FakeClock has a method named datetime, which shadows the type inside the class

__all__ = ("FakeClock", "assert_enqueued", "assert_not_enqueued", "eager", "enqueued")


class FakeClock:
    """A clock that only moves when told to.

    Pass it as ``App(clock=FakeClock())``; :meth:`advance` moves time forward
    and wakes running workers, so delayed jobs, retries, leases and cron
    slots fall due without the test sleeping.
    """

    def __init__(self, start: datetime | float = datetime(2030, 1, 1, tzinfo=UTC)) -> None:
        self._now = _to_timestamp(start)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        return self._now

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self._now, UTC)

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0) and notify listeners; returns the new time."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward; got {seconds!r}")
        with self._lock:
            self._now += seconds
            listeners = list(self._listeners)
        for listener in listeners:
            listener()
        return self._now

    def set(self, when: _DateTime | float) -> float:
        """Jump to ``when`` (not earlier than now) and notify listeners."""
        return self.advance(_to_timestamp(when) - self._now)

    def add_listener(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def __repr__(self) -> str:
        return f"FakeClock({self.datetime().isoformat()})"


def _to_timestamp(when: datetime | float) -> float:
    if isinstance(when, datetime):
        if when.utcoffset() is None:
            raise ValueError("FakeClock needs a timezone-aware datetime")
        return when.timestamp()
    return float(when)


# -- what was enqueued ---------------------------------------------------------

def _job_name(fn: JobFunction[..., Any] | str) -> str:
    if isinstance(fn, str):
        return fn
    name = getattr(fn, "name", None)
    if not isinstance(name, str) or not hasattr(fn, "app"):
        raise TypeError(f"expected a function decorated with @app.job or a job name, got {fn!r}")
    return name


def enqueued(
    app: App,
    fn: JobFunction[..., Any] | str | None = None,
    *,
    name: str | None = None,
    queue: str | None = None,
    state: JobState | str | Sequence[JobState | str] | None = None,
) -> list[Job]:
    """Every job in ``app``'s database matching the filters, oldest first.

    ``fn`` (a job function or its name) and ``name`` are the same filter; give
    one.  ``state`` takes one state or several; the default is every state,
    since a job enqueued during the test may already have run.
    """
    if fn is not None and name is not None:
        raise TypeError("give the job as fn or name=, not both")
    job_name = _job_name(fn) if fn is not None else name
    found: list[Job] = []
    page = 500
    while True:
        batch = app.jobs(state=state, queue=queue, name=job_name, limit=page, offset=len(found))
        found.extend(batch)
        if len(batch) < page:
            break
    found.reverse()
    return found


def assert_enqueued(app: App, fn: JobFunction[..., Any] | str, /, *args: Any, **kwargs: Any) -> Job:
    """Assert that a job of ``fn`` was enqueued with exactly these arguments; return the latest such job.

    Arguments are compared as they were stored (after the JSON round trip),
    in any state.  On failure the message lists the calls that were enqueued.
    """
    job_name = _job_name(fn)
    candidates = enqueued(app, name=job_name)
    matches = [job for job in candidates if job.args == args and job.kwargs == kwargs]
    if matches:
        return matches[-1]
    wanted = _format_call(job_name, args, kwargs)
    if not candidates:
        raise AssertionError(f"expected {wanted} to be enqueued; no {job_name} job was enqueued")
    seen = "\n".join(f"  job {job.id} [{job.state}]: {_format_call(job_name, job.args, job.kwargs)}" for job in candidates)
    raise AssertionError(f"expected {wanted} to be enqueued; {job_name} jobs enqueued were:\n{seen}")


def assert_not_enqueued(app: App, fn: JobFunction[..., Any] | str, /) -> None:
    """Assert that no job of ``fn`` is in the database, whatever its arguments and state."""
    job_name = _job_name(fn)
    found = enqueued(app, name=job_name)
    if found:
        listed = ", ".join(f"job {job.id} [{job.state}]" for job in found[:10])
        raise AssertionError(f"expected no {job_name} job to be enqueued; found {len(found)}: {listed}")


def _format_call(name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


# -- eager mode ----------------------------------------------------------------

@contextlib.contextmanager
def eager(app: App, *, raise_on_failure: bool = True) -> Iterator[App]:
    """Within the block, ``enqueue`` writes the job and then drains it before returning.

    The job row, its result, errors and retries exist exactly as in
    production, because the job is run by a real (burst) worker of ``app``.
    Jobs that are not due yet (``delay_s``, ``run_at``, retry backoff) are left
    for a later ``app.drain()``, typically after ``FakeClock.advance``.  Jobs
    enqueued by a job run in the same drain.  With ``raise_on_failure``
    (default) the ``enqueue`` call raises :class:`~minijobs.JobFailedError` when
    a job ends ``failed``; the failed row stays in the database.
    """
    lock = threading.Lock()
    draining = 0

    def run_now(job_ids: list[int]) -> None:
        nonlocal draining
        with lock:
            if draining:
                return  # enqueued from inside a job: the drain in progress picks it up
            draining += 1
        try:  # every job here is of a queue the app serves: App refuses remote ones in eager mode
            _drain_here(app, raise_on_failure)
        finally:
            with lock:
                draining -= 1

    previous = app._eager_hook
    app._eager_hook = run_now
    try:
        yield app
    finally:
        app._eager_hook = previous


def _drain_here(app: App, raise_on_failure: bool) -> int:
    """``app.drain`` from any thread, also from async code (then in a helper thread, blocking the caller)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return app.drain(raise_on_failure=raise_on_failure)
    outcome: list[int] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(app.drain(raise_on_failure=raise_on_failure))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="minijobs-eager-drain")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
