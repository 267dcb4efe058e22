"""The clock the lock core reads: the system's, or a test's own, so timing logic is tested without waiting.

Inside the core every duration is a ``float`` number of seconds; only the scripts
(``scripts``) turn leases into the whole milliseconds Redis counts in.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where the core reads the time and sleeps."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: for leases, deadlines and pauses."""

    def wall(self) -> float:
        """Seconds since the epoch: only for telling people when something happened."""

    def sleep(self, seconds: float) -> None:
        """Pause the calling thread."""


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
