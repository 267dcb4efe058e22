"""What a waiter tells the user: one INFO line after a second of waiting, then one every 30 s."""

from __future__ import annotations

import logging

from locked_targets.rwlock.clock import SYSTEM_CLOCK, Clock

logger = logging.getLogger(__name__)

FIRST_REPORT_AFTER_SECONDS = 1.0
REPORT_EVERY_SECONDS = 30.0


class WaitReporter:
    """Says who holds the lock a caller is waiting for, without flooding the log."""

    def __init__(self, *, path: str, lock: str, started: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self._path = path
        self._lock = lock
        self._started = started
        self._clock = clock
        self._next_report = started + FIRST_REPORT_AFTER_SECONDS

    def still_waiting(self, holder: str) -> None:
        now = self._clock.monotonic()
        if now < self._next_report:
            return
        logger.info(
            "waiting %.0f s for the %s of %s; blocked by %s",
            now - self._started,
            self._lock,
            self._path,
            holder,
            extra={"lock_path": self._path, "lock_holder": holder},
        )
        self._next_report = now + REPORT_EVERY_SECONDS

    def seconds_to_next_report(self) -> float:
        return max(0.001, self._next_report - self._clock.monotonic())
