"""Per-call wall-clock timing and the statistics the tables report."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def call_seconds(call: Callable[[], object]) -> float:
    """How long one call of ``call`` took, in seconds."""
    started = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - started) / 1e9


def median_ms(samples: list[float]) -> float:
    """The median of ``samples`` (seconds), in milliseconds."""
    return statistics.median(samples) * 1000
