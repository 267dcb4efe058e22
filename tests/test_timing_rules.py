"""The lock core's timing rules on a hand-driven clock: retry backoff, lease trust and wait reports.

No Redis and no sleeping: ``ManualClock.sleep`` only moves the clock on. A
``HeldLock`` needs a ``RedisConnection``; redis-py connects lazily and these tests
never ask it anything (an autouse fixture makes any socket fail the test).
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable

import pytest

from locked_targets.errors import BackendUnavailable, LockLost
from locked_targets.rwlock import retry, waiting
from locked_targets.rwlock.clock import Clock
from locked_targets.rwlock.connection import RedisConnection
from locked_targets.rwlock.keys import LockKeys
from locked_targets.rwlock.lease import (
    DRIFT_FACTOR,
    DRIFT_MARGIN_SECONDS,
    RETRY_AFTER_ERROR_SECONDS,
    HeldLock,
    LeaseTerms,
    LockMode,
    trusted_until,
)
from locked_targets.rwlock.retry import FIRST_PAUSE_SECONDS, LONGEST_PAUSE_SECONDS, with_redis_retries
from locked_targets.rwlock.waiting import FIRST_REPORT_AFTER_SECONDS, REPORT_EVERY_SECONDS, WaitReporter

WALL_TIME = 1_700_000_000.0
PATH = "/cache/x.pkl"
BASE = "test:{x}"


class ManualClock:
    """Monotonic time that moves only when told to; ``sleep`` moves it and records the pause."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL_TIME

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _as_clock(clock: ManualClock) -> Clock:
    """Checked by mypy: ``ManualClock`` implements the core's ``Clock`` protocol."""
    return clock


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test here that would open a socket (to Redis or anything else)."""

    def refuse(*args: object, **kwargs: object) -> socket.socket:
        raise AssertionError("a timing-rule test opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _unavailable(reason: str) -> BackendUnavailable:
    return BackendUnavailable(address="127.0.0.1:1/0", reason=reason)


class FailingCall:
    """Raises a new ``BackendUnavailable`` for its first ``failures`` calls, then returns ``result``."""

    def __init__(self, failures: float, result: object = None) -> None:
        self.failures = failures
        self.result = result
        self.raised: list[BackendUnavailable] = []

    def __call__(self) -> object:
        if len(self.raised) < self.failures:
            error = _unavailable(f"failure {len(self.raised) + 1}")
            self.raised.append(error)
            raise error
        return self.result


def _retry(call: Callable[[], object], deadline: float | None, clock: ManualClock) -> object:
    return with_redis_retries(
        call, what="acquiring a lock", redis_retry_deadline_seconds=deadline, clock=_as_clock(clock)
    )


# Retry backoff


def test_backoff_doubles_from_a_tenth_of_a_second_up_to_five(clock: ManualClock) -> None:
    doublings_to_cap = math.ceil(math.log2(LONGEST_PAUSE_SECONDS / FIRST_PAUSE_SECONDS))
    failures = doublings_to_cap + 3  # enough to see the cap hold
    expected = [min(FIRST_PAUSE_SECONDS * 2**n, LONGEST_PAUSE_SECONDS) for n in range(failures)]
    _retry(FailingCall(failures), deadline=sum(expected) + 100, clock=clock)
    assert clock.pauses == pytest.approx(expected)
    assert clock.pauses[-3:] == pytest.approx([LONGEST_PAUSE_SECONDS] * 3)


def test_the_last_pause_is_cut_to_what_is_left_before_the_deadline(clock: ManualClock) -> None:
    # Pauses of 1, 2 and 4 tenths leave 3 tenths before a deadline 10 tenths away; the next
    # pause would be 8 tenths.
    deadline = 10 * FIRST_PAUSE_SECONDS
    with pytest.raises(BackendUnavailable):
        _retry(FailingCall(math.inf), deadline=deadline, clock=clock)
    assert clock.pauses == pytest.approx(
        [FIRST_PAUSE_SECONDS, 2 * FIRST_PAUSE_SECONDS, 4 * FIRST_PAUSE_SECONDS, 3 * FIRST_PAUSE_SECONDS]
    )


def test_after_the_deadline_the_last_backend_error_is_raised(clock: ManualClock) -> None:
    started = clock.now
    deadline = 4 * LONGEST_PAUSE_SECONDS
    call = FailingCall(math.inf)
    with pytest.raises(BackendUnavailable) as raised:
        _retry(call, deadline=deadline, clock=clock)
    assert len(call.raised) > 1
    assert raised.value is call.raised[-1]
    assert clock.now - started == pytest.approx(deadline)


def test_without_a_deadline_the_first_error_is_raised_at_once(clock: ManualClock) -> None:
    call = FailingCall(math.inf)
    with pytest.raises(BackendUnavailable) as raised:
        _retry(call, deadline=None, clock=clock)
    assert call.raised == [raised.value]
    assert clock.pauses == []


def test_a_success_after_failures_returns_its_value(clock: ManualClock) -> None:
    value = object()
    call = FailingCall(3, result=value)
    assert _retry(call, deadline=60.0, clock=clock) is value
    assert len(call.raised) == 3
    assert len(clock.pauses) == 3


def test_each_retry_logs_a_warning(clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=retry.logger.name)
    call = FailingCall(3)
    _retry(call, deadline=60.0, clock=clock)
    records = [record for record in caplog.records if record.name == retry.logger.name]
    assert [record.levelno for record in records] == [logging.WARNING] * 3
    for number, (record, error) in enumerate(zip(records, call.raised, strict=True), start=1):
        message = record.getMessage()
        assert "acquiring a lock" in message
        assert str(error) in message
        assert f"retry {number}" in message


# Lease trust and renewal


def _held_lock(
    clock: ManualClock, *, lease_seconds: float = 10.0, renewal_interval_seconds: float = 3.0
) -> HeldLock:
    """An exclusive hold whose acquisition was sent now and answered 0.25 s later."""
    sent_at = clock.now
    clock.advance(0.25)
    return HeldLock(
        connection=RedisConnection("redis://127.0.0.1:1/0"),
        keys=LockKeys(path=PATH, base=BASE),
        terms=LeaseTerms(lease_seconds=lease_seconds, renewal_interval_seconds=renewal_interval_seconds),
        mode=LockMode.EXCLUSIVE,
        token="token-1",
        lease_started=sent_at,
        clock=_as_clock(clock),
    )


def _just_before(instant: float) -> float:
    return math.nextafter(instant, -math.inf)


@pytest.mark.parametrize(("sent_at", "lease_seconds"), [(0.0, 10.0), (1000.0, 30.0), (52.5, 0.5)])
def test_a_lease_is_trusted_for_99_percent_of_it_less_2_ms_from_when_it_was_sent(
    sent_at: float, lease_seconds: float
) -> None:
    expected = sent_at + lease_seconds * (1 - DRIFT_FACTOR) - DRIFT_MARGIN_SECONDS
    assert trusted_until(sent_at, lease_seconds) == pytest.approx(expected)


def test_a_held_lock_is_lost_exactly_when_its_trusted_time_comes(clock: ManualClock) -> None:
    sent_at = clock.now
    held = _held_lock(clock)
    ends = trusted_until(sent_at, held.terms.lease_seconds)
    assert held.confirmed_until == ends
    clock.now = _just_before(ends)
    assert not held.lost
    clock.now = ends
    assert held.lost


def test_ensure_held_raises_lock_lost_naming_the_path_once_the_trusted_time_passed(
    clock: ManualClock,
) -> None:
    held = _held_lock(clock)
    clock.now = _just_before(held.confirmed_until)
    held.ensure_held()
    clock.now = held.confirmed_until
    with pytest.raises(LockLost, match=PATH) as raised:
        held.ensure_held()
    assert raised.value.path == PATH
    assert raised.value.lock_key == BASE
    assert raised.value.lost_at == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(WALL_TIME))


def test_a_confirmed_renewal_trusts_the_lease_from_when_it_was_sent(clock: ManualClock) -> None:
    held = _held_lock(clock)
    clock.advance(held.terms.renewal_interval_seconds)
    sent_at = clock.now
    clock.advance(0.5)  # the answer takes half a second to arrive
    held.extension_answered(1, sent_at)
    assert held.confirmed_until == trusted_until(sent_at, held.terms.lease_seconds)
    assert held.confirmed_until < trusted_until(clock.now, held.terms.lease_seconds)
    assert not held.lost


def test_a_refused_renewal_marks_the_lock_lost(clock: ManualClock) -> None:
    held = _held_lock(clock)
    clock.advance(held.terms.renewal_interval_seconds)
    held.extension_answered(0, clock.now)
    assert clock.now < held.confirmed_until
    assert held.lost
    with pytest.raises(LockLost, match="no longer knew this holder"):
        held.ensure_held()


@pytest.mark.parametrize("interval_in_retry_delays", [0.5, 3.0])
def test_a_renewal_error_before_the_lease_ends_retries_soon_and_keeps_the_lock(
    clock: ManualClock, interval_in_retry_delays: float
) -> None:
    interval = interval_in_retry_delays * RETRY_AFTER_ERROR_SECONDS
    held = _held_lock(clock, lease_seconds=10 * interval, renewal_interval_seconds=interval)
    clock.advance(interval)
    held.extension_failed(_unavailable("connection reset"))
    assert held.next_renewal == clock.now + min(RETRY_AFTER_ERROR_SECONDS, interval)
    assert not held.lost
    held.ensure_held()


def test_a_renewal_error_after_the_lease_ended_marks_the_lock_lost(clock: ManualClock) -> None:
    held = _held_lock(clock)
    clock.now = held.confirmed_until
    held.extension_failed(_unavailable("connection reset"))
    # Lost by the renewal's failure, not merely by ensure_held finding the lease over.
    with pytest.raises(LockLost, match="could not renew its lease before it ended") as raised:
        held.ensure_held()
    assert "connection reset" in raised.value.reason


# Wait reports


def _reporter(clock: ManualClock) -> WaitReporter:
    return WaitReporter(path=PATH, lock="write lock", started=clock.now, clock=_as_clock(clock))


def _reports(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == waiting.logger.name]


@pytest.fixture
def wait_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The log of the waiting reporter, at every level."""
    caplog.set_level(logging.DEBUG, logger=waiting.logger.name)
    return caplog


def test_no_wait_report_before_the_first_second(
    clock: ManualClock, wait_log: pytest.LogCaptureFixture
) -> None:
    reporter = _reporter(clock)
    reporter.still_waiting("task A")
    clock.now = _just_before(clock.now + FIRST_REPORT_AFTER_SECONDS)
    reporter.still_waiting("task A")
    assert _reports(wait_log) == []


def test_one_info_line_after_the_first_second_names_path_lock_and_holder(
    clock: ManualClock, wait_log: pytest.LogCaptureFixture
) -> None:
    reporter = _reporter(clock)
    clock.advance(FIRST_REPORT_AFTER_SECONDS)
    reporter.still_waiting("task Producer_abc on host-a")
    [record] = _reports(wait_log)
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert PATH in message
    assert "write lock" in message
    assert "task Producer_abc on host-a" in message


def test_no_further_wait_report_until_thirty_seconds_after_the_last(
    clock: ManualClock, wait_log: pytest.LogCaptureFixture
) -> None:
    reporter = _reporter(clock)
    clock.advance(FIRST_REPORT_AFTER_SECONDS)
    reporter.still_waiting("task A")
    reported_at = clock.now
    for _ in range(10):
        clock.advance(REPORT_EVERY_SECONDS / 16)
        reporter.still_waiting("task A")
    clock.now = _just_before(reported_at + REPORT_EVERY_SECONDS)
    reporter.still_waiting("task A")
    assert len(_reports(wait_log)) == 1
    clock.now = reported_at + REPORT_EVERY_SECONDS
    reporter.still_waiting("task A")
    assert len(_reports(wait_log)) == 2


def test_seconds_to_next_report_counts_down_and_never_goes_below_a_millisecond(clock: ManualClock) -> None:
    reporter = _reporter(clock)
    assert reporter.seconds_to_next_report() == pytest.approx(FIRST_REPORT_AFTER_SECONDS)
    clock.advance(FIRST_REPORT_AFTER_SECONDS / 4)
    assert reporter.seconds_to_next_report() == pytest.approx(FIRST_REPORT_AFTER_SECONDS * 3 / 4)
    clock.advance(FIRST_REPORT_AFTER_SECONDS * 3 / 4)
    assert reporter.seconds_to_next_report() == 0.001
    clock.advance(100.0)  # long overdue, and not yet reported
    assert reporter.seconds_to_next_report() == 0.001
    reporter.still_waiting("task A")
    assert reporter.seconds_to_next_report() == pytest.approx(REPORT_EVERY_SECONDS)
    clock.advance(REPORT_EVERY_SECONDS / 2)
    assert reporter.seconds_to_next_report() == pytest.approx(REPORT_EVERY_SECONDS / 2)
