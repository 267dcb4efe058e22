"""The goals of issue 2 next to what this run measured."""

from __future__ import annotations

from bench import hot_target
from bench.hot_target import Throughput
from bench.per_call import ROUND_TRIP_GOALS, PerCallResult
from bench.tables import heading, table, verdict
from bench.variants import Variant


def report(per_call: PerCallResult, throughputs: dict[Variant | str, Throughput]) -> str:
    times = per_call.median_ms
    rows = []
    for operation, goal in ROUND_TRIP_GOALS.items():
        requests = per_call.requests[operation, Variant.LOCKED_TARGET].client_requests
        overhead_round_trips = (
            times[operation, Variant.LOCKED_TARGET] - times[operation, Variant.UNLOCKED]
        ) / per_call.round_trip_ms
        rows.append(
            [
                f"{operation}: LockedTarget adds <= {goal} round trips",
                f"{requests:g} requests sent",
                verdict(requests <= goal),
            ]
        )
        rows.append(
            [
                f"{operation}: LockedTarget's added time <= {goal} RTs",
                f"{overhead_round_trips:.1f} RTs",
                verdict(overhead_round_trips <= goal),
            ]
        )
    for operation in ("load", "dump"):
        ratio = times[operation, Variant.LOCKED_TARGET] / times[operation, Variant.GOKART_LOCK]
        rows.append(
            [f"{operation}: LockedTarget faster than gokart's lock", f"c/b = {ratio:.2f}", verdict(ratio < 1)]
        )
    slowdown = hot_target.slowdown(throughputs, Variant.LOCKED_TARGET)
    rows.append(
        [
            f"hot target: LockedTarget within {hot_target.SLOWDOWN_GOAL}x of unlocked",
            f"{slowdown:.2f}x",
            verdict(slowdown <= hot_target.SLOWDOWN_GOAL),
        ]
    )
    bad = throughputs[Variant.LOCKED_TARGET].bad_loads
    rows.append(["hot target: every LockedTarget load whole", f"{bad} bad loads", verdict(bad == 0)])
    return "\n".join([heading("Goals of issue 2"), table(["goal", "measured", "met"], rows)])
