"""Scenario 2: the median time and the Redis requests of one exists, load and dump on a small object.

Each variant works on its own files in one local temporary directory. Calls of the variants,
and a PING that gives the round trip of the moment, are interleaved, so drift in machine load
touches all of them alike; gokart's lock takes its turns in a pass apart (``_median_times``).
A dump skips when its file exists, so every timed dump gets a fresh path (and a fresh target,
built outside the timed call).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from gokart.target import TargetOnKart

from bench.request_count import RequestCount, count_requests
from bench.tables import heading, table, verdict
from bench.timing import call_seconds, median_ms
from bench.variants import LOCKED_VARIANTS, RedisAddress, RedisUrl, Variant, make_target, redis_client

DUMP = "dump"
OPERATIONS = ("exists", "load", DUMP)
# Issue 2's goal: LockedTarget adds at most this many round trips per call.
ROUND_TRIP_GOALS = {"exists": 2, "load": 2, "dump": 3}
# Issue 9's goal 6: the time a cold call of LockedTarget adds, in RTs of time (a repeated read: none).
ADDED_TIME_GOALS = {"exists": 1.5, "load": 1.5, "dump": 2.0}
# A repeated read adds no round trip: it sends no request, and its added time rounds to 0 RTs.
REPEATED_READ_MOST_RTS = 0.5
REPEATED_READS = ("exists", "load")
SMALL_OBJECT = {"name": "small", "values": list(range(10)), "ratio": 0.5}
FRAME_DUMP = "dump frame"
"""Scenario 7's extra operation: a dump of a DataFrame of some size, as gokart tasks dump them,
whose serialization and write take longer than a round trip (a dump written ahead of its lock
hides the round trip behind them)."""
_FRAME_ROWS = 100_000
_WARM_UP_CALLS = 5


@dataclasses.dataclass(frozen=True)
class PerCallResult:
    """Median ms and requests per call, by operation and variant."""

    median_ms: dict[tuple[str, Variant], float]
    round_trip_ms: float
    requests: dict[tuple[str, Variant], RequestCount]
    calls: int
    counted_calls: int


class _Workbench:
    """Makes the targets each operation works on: one existing file, or fresh paths for dumps."""

    def __init__(self, directory: str, redis: RedisUrl) -> None:
        self._directory = directory
        self.redis = redis
        self._fresh = 0
        self._existing: dict[Variant, TargetOnKart] = {}
        for variant in redis.variants:
            path = os.path.join(directory, f"small-{variant.name.lower()}.pkl")
            target = make_target(variant, path, redis)
            target.dump(SMALL_OBJECT)
            self._existing[variant] = target

    def fresh_target(self, variant: Variant) -> TargetOnKart:
        self._fresh += 1
        path = os.path.join(self._directory, f"dump-{variant.name.lower()}-{self._fresh}.pkl")
        return make_target(variant, path, self.redis)

    def prepare(self, operation: str, variant: Variant) -> Callable[[], object]:
        """The call to time, with everything it needs built beforehand."""
        if operation in (DUMP, FRAME_DUMP):
            target = self.fresh_target(variant)
            dumped = SMALL_OBJECT if operation == DUMP else _frame()
            return lambda: target.dump(dumped)
        existing = self._existing[variant]
        return existing.exists if operation == "exists" else existing.load


def measure(directory: str, redis: RedisAddress, calls: int, counted_calls: int) -> PerCallResult:
    bench = _Workbench(directory, redis)
    times, round_trip_ms = _median_times(bench, calls)
    requests = {}
    for operation in OPERATIONS:
        for variant in Variant:
            prepared_calls = [bench.prepare(operation, variant) for _ in range(counted_calls)]
            requests[operation, variant] = count_requests(redis.url, prepared_calls)
    return PerCallResult(
        median_ms=times,
        round_trip_ms=round_trip_ms,
        requests=requests,
        calls=calls,
        counted_calls=counted_calls,
    )


def measure_median_times(
    directory: str, redis: RedisUrl, calls: int, operations: tuple[str, ...] = OPERATIONS
) -> tuple[dict[tuple[str, Variant], float], float]:
    """The timing half of ``measure`` on any deployment, for the variants that can lock on it (no
    request counting: MONITOR sees one server only)."""
    return _median_times(_Workbench(directory, redis), calls, operations)


@functools.cache
def _frame() -> pd.DataFrame:
    """``FRAME_DUMP``'s DataFrame: 100,000 rows of four float columns (3.2 MB of values)."""
    values = np.arange(_FRAME_ROWS, dtype=np.float64)
    return pd.DataFrame({name: values * scale for scale, name in enumerate("wxyz", start=1)})


def _median_times(
    bench: _Workbench, calls: int, operations: tuple[str, ...] = OPERATIONS
) -> tuple[dict[tuple[str, Variant], float], float]:
    """Median ms per (operation, variant), and of the PINGs interleaved with them.

    Per operation, (a), (c) and (d) take turns with a PING; then gokart's lock (b), where the server
    is one it can lock on, in a pass of its own: each of its calls starts and joins a thread and
    opens a connection, and the calls the process makes next run slower for it, which is no cost
    of theirs (a (d) load right after one of its calls added about 0.4 RT more on our 2-core VM).
    """
    variants = bench.redis.variants
    samples: dict[tuple[str, Variant], list[float]] = {
        (operation, variant): [] for operation in operations for variant in variants
    }
    pings: list[float] = []
    passes: list[list[Variant]] = [[variant for variant in variants if variant is not Variant.GOKART_LOCK]]
    if Variant.GOKART_LOCK in variants:
        passes.append([Variant.GOKART_LOCK])
    ping_client = redis_client(bench.redis)
    try:
        for operation in operations:
            for variant in variants:
                for _ in range(_WARM_UP_CALLS):
                    bench.prepare(operation, variant)()
            for taking_turns in passes:
                for _ in range(calls):
                    if Variant.GOKART_LOCK not in taking_turns:
                        pings.append(call_seconds(ping_client.ping))
                    for variant in taking_turns:
                        prepared = bench.prepare(operation, variant)
                        samples[operation, variant].append(call_seconds(prepared))
    finally:
        ping_client.close()
    return {key: median_ms(values) for key, values in samples.items()}, median_ms(pings)


def report(result: PerCallResult) -> str:
    legend = "\n".join(f"  {variant.letter} {variant.title}: {variant.recipe}" for variant in Variant)
    times, round_trip_ms = result.median_ms, result.round_trip_ms
    timing_rows = []
    for operation in OPERATIONS:
        row = [operation, *(f"{times[operation, variant]:.3f}" for variant in Variant)]
        for locked in LOCKED_VARIANTS:
            overhead = added_ms(result, operation, locked)
            row += [f"{overhead:+.3f}", f"{overhead / round_trip_ms:.1f}"]
        row += [f"{against_gokart(result, operation, locked):.2f}" for locked in LOCKED_VARIANTS]
        timing_rows.append(row)
    request_rows = []
    for operation in OPERATIONS:
        counted = [result.requests[operation, locked] for locked in LOCKED_VARIANTS]
        request_rows.append(
            [
                operation,
                *(_requests_cell(result.requests[operation, variant]) for variant in Variant),
                *(", ".join(count.request_names) or "-" for count in counted),
                *(f"{count.script_commands:.1f}" for count in counted),
                f"<= {ROUND_TRIP_GOALS[operation]}",
                *(verdict(round_trip_goal_met(result, operation, locked)) for locked in LOCKED_VARIANTS),
            ]
        )
    c, d = (locked.value for locked in LOCKED_VARIANTS)
    return "\n".join(
        [
            heading("2. One call on a small object (a pickled dict of 3 keys), local temp dir"),
            f"median of {result.calls} calls per cell, (a), (c), (d) and a PING taking turns, (b) in a pass "
            "of its own after them (its thread and connection per call slow the calls after it); "
            "dump writes a fresh path each call.",
            f"RT = median PING interleaved with these calls: {round_trip_ms:.3f} ms.",
            legend,
            "  (b) takes no lock in exists and lets go of its lock before load reads; "
            "(c) and (d) hold their lock for the whole call.",
            f"  ({c}) reads one target over and over, so it shows a repeated read (kept lease); "
            f"({d}) shows every read as a first (cold) one.",
            "",
            table(
                [
                    "op",
                    *(f"{variant.letter} ms" for variant in Variant),
                    f"{c}-a ms",
                    f"{c}-a in RTs",
                    f"{d}-a ms",
                    f"{d}-a in RTs",
                    f"{c}/b",
                    f"{d}/b (<1: faster than b)",
                ],
                timing_rows,
            ),
            "",
            f"Redis requests per call, counted with MONITOR over {result.counted_calls} calls "
            "(client requests = round trips, none are pipelined here; each call's releases sent in the",
            "background included, and nothing left by earlier calls); the goal is judged on these:",
            table(
                [
                    "op",
                    *(f"{variant.letter} requests" for variant in Variant),
                    f"({c}) sent",
                    f"({d}) sent",
                    f"({c}) run inside Lua",
                    f"({d}) run inside Lua",
                    f"goal for ({c}), ({d})",
                    f"met ({c})",
                    f"met ({d})",
                ],
                request_rows,
            ),
        ]
    )


def added_ms(result: PerCallResult, operation: str, locked: Variant) -> float:
    """The median time ``locked`` adds to an unlocked call, in ms (issue 2's goal counts requests)."""
    return added_ms_of(result.median_ms, operation, locked)


def added_ms_of(median_ms: Mapping[tuple[str, Variant], float], operation: str, locked: Variant) -> float:
    """``added_ms`` from the median times alone (scenario 7 times calls at each link, counting none)."""
    return median_ms[operation, locked] - median_ms[operation, Variant.UNLOCKED]


def added_round_trips(result: PerCallResult, operation: str, locked: Variant) -> float:
    """``added_ms`` in RTs of time (issue 9's goal 6)."""
    return added_ms(result, operation, locked) / result.round_trip_ms


def judged_for_added_time(operation: str) -> tuple[Variant, ...]:
    """Whose call goal 6 judges: (d) for a read (every read a first one), both (c) and (d) for a dump."""
    return LOCKED_VARIANTS if operation == "dump" else (Variant.LOCKED_TARGET_NO_KEPT_LEASES,)


def added_time_goal_met(result: PerCallResult, operation: str) -> bool:
    """Goal 6 for a cold call, or any dump."""
    return all(
        added_round_trips(result, operation, locked) <= ADDED_TIME_GOALS[operation]
        for locked in judged_for_added_time(operation)
    )


def repeated_read_goal_met(result: PerCallResult, operation: str) -> bool:
    """Goal 6 for a repeated read, (c) on its kept lease: no request, and no RT of added time."""
    locked = Variant.LOCKED_TARGET
    return (
        result.requests[operation, locked].client_requests == 0
        and added_round_trips(result, operation, locked) < REPEATED_READ_MOST_RTS
    )


def against_gokart(result: PerCallResult, operation: str, locked: Variant) -> float:
    """``locked``'s median time over gokart's lock's: below 1 when ``locked`` is faster."""
    return result.median_ms[operation, locked] / result.median_ms[operation, Variant.GOKART_LOCK]


def round_trip_goal_met(result: PerCallResult, operation: str, locked: Variant) -> bool:
    return result.requests[operation, locked].client_requests <= ROUND_TRIP_GOALS[operation]


def _requests_cell(count: RequestCount) -> str:
    return f"{count.client_requests:.1f}".removesuffix(".0")
