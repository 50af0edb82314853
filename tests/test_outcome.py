"""The outcome policy (:mod:`minijobs.outcome`): what an ended attempt becomes, without a database or a worker.

Each case builds a :class:`~minijobs.Job` by hand, calls :func:`decide` with a
fixed clock and checks the whole decision: action, state, the recorded
error, when a retry runs and when the job ended.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from minijobs import Backoff, Cancelled, Job, JobState, Retry
from minijobs.errors import JobReleased, LeaseLostError, PayloadValueError, UnknownJobError
from minijobs.limits import MAX_TIMESTAMP
from minijobs.outcome import DEFAULT_BACKOFF, DISCARD, NO_RETRY, RELEASE, Action, decide

NOW = 1_800_000_000.0


def attempt(number: int = 1, *, max_attempts: int = 3) -> Job:
    """Job 7 while its attempt ``number`` runs."""
    when = datetime.fromtimestamp(NOW - 10, UTC)
    return Job(id=7, name="report", queue="default", args=(), kwargs={}, state=JobState.RUNNING, priority=0,
               attempts=number, max_attempts=max_attempts, scheduled_at=when, created_at=when, started_at=when)


def test_a_returned_attempt_succeeds_now() -> None:
    decision = decide(attempt(), None, now=NOW)
    assert (decision.action, decision.state, decision.error, decision.retry_at, decision.completed_at) == (
        Action.WRITE, JobState.SUCCEEDED, None, None, NOW)


def test_an_error_with_attempts_left_retries_after_the_backoff_and_records_the_error() -> None:
    backoff = Backoff(base_s=5, factor=3, jitter=0)
    decision = decide(attempt(2), ValueError("flaky"), now=NOW, backoff=backoff)
    assert (decision.action, decision.state, decision.retry_at, decision.completed_at) == (
        Action.WRITE, JobState.RETRYING, NOW + 15.0, None)
    assert decision.error is not None
    assert (decision.error.attempt, decision.error.type, decision.error.message) == (2, "ValueError", "flaky")
    assert decision.error.at == datetime.fromtimestamp(NOW, UTC)


def test_without_a_backoff_the_default_one_applies() -> None:
    decision = decide(attempt(1), ValueError("x"), now=NOW)
    assert decision.retry_at is not None
    low = DEFAULT_BACKOFF.base_s * (1 - DEFAULT_BACKOFF.jitter)
    high = DEFAULT_BACKOFF.base_s * (1 + DEFAULT_BACKOFF.jitter)
    assert low <= decision.retry_at - NOW <= high


def test_the_last_attempt_fails() -> None:
    decision = decide(attempt(3, max_attempts=3), ValueError("still broken"), now=NOW)
    assert (decision.action, decision.state, decision.retry_at, decision.completed_at) == (
        Action.WRITE, JobState.FAILED, None, NOW)
    assert decision.error is not None and decision.error.message == "still broken"


def test_retry_with_a_delay_uses_that_delay_and_still_spends_the_attempt() -> None:
    assert decide(attempt(1), Retry(delay_s=42), now=NOW).retry_at == NOW + 42
    assert decide(attempt(3, max_attempts=3), Retry(delay_s=42), now=NOW).state is JobState.FAILED


@pytest.mark.parametrize("error", [UnknownJobError("no such job"), PayloadValueError("bad args")])
def test_errors_a_retry_cannot_fix_fail_at_once(error: Exception) -> None:
    assert isinstance(error, NO_RETRY)
    decision = decide(attempt(1, max_attempts=5), error, now=NOW)
    assert (decision.state, decision.completed_at) == (JobState.FAILED, NOW)


def test_a_cancel_someone_asked_for_is_recorded_cancelled_even_while_stopping() -> None:
    for stopping in (False, True):
        decision = decide(attempt(1), Cancelled("stop"), now=NOW, stopping=stopping, cancel_requested=True)
        assert (decision.action, decision.state, decision.completed_at) == (Action.WRITE, JobState.CANCELLED, NOW)
        assert decision.error is not None and decision.error.type == "minijobs.Cancelled"


def test_a_job_that_gives_up_because_its_worker_stops_is_released_not_recorded() -> None:
    assert decide(attempt(1), Cancelled("stop"), now=NOW, stopping=True) is RELEASE
    assert decide(attempt(1), JobReleased("stopping"), now=NOW) is RELEASE


def test_a_lost_lease_writes_nothing() -> None:
    assert decide(attempt(1), LeaseLostError("taken over"), now=NOW) is DISCARD


def test_a_retry_time_past_the_storable_range_is_clamped() -> None:
    decision = decide(attempt(1), Retry(delay_s=100 * 365 * 86400), now=MAX_TIMESTAMP - 5)
    assert decision.retry_at == MAX_TIMESTAMP


def test_any_base_exception_is_an_ordinary_failure_of_the_attempt() -> None:
    decision = decide(attempt(1), SystemExit(3), now=NOW)
    assert decision.state is JobState.RETRYING
    assert decision.error is not None and decision.error.type == "SystemExit"
