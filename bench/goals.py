"""The goals of issues 2, 3 and 9 next to what this run measured, each row naming the variant it judges."""

from __future__ import annotations

from bench import dag, distance, hot_target, per_call, run_lock
from bench.construction import BUILDERS, CONSTRUCTION_GOAL, ConstructionResult
from bench.dag import DagResult
from bench.distance import DistanceResult
from bench.hot_target import Phase, Throughput
from bench.per_call import OPERATIONS, ROUND_TRIP_GOALS, PerCallResult
from bench.run_lock import RunLock, RunLockResult
from bench.tables import heading, table, verdict
from bench.variants import LOCKED_VARIANTS, Variant


def report(
    per_call_result: PerCallResult,
    throughputs: dict[Phase, Throughput],
    run_locks: dict[RunLock, RunLockResult],
) -> str:
    return "\n".join(
        [
            heading("Goals of issue 2"),
            f"{Variant.LOCKED_TARGET.letter} = LockedTarget in its default configuration (a repeated read "
            f"uses the kept shared lease); {Variant.LOCKED_TARGET_NO_KEPT_LEASES.letter} = kept leases off",
            "(every read as a first, cold one: the worst case). A round trip is a request sent to Redis, "
            "as counted in scenario 2;",
            "the added time in RTs (scenario 2) is judged with issue 9's goals. The hot target's speed is "
            "judged on (c) alone; (d) is in scenario 3.",
            table(["goal", "measured", "met"], _issue_2_rows(per_call_result, throughputs)),
            heading("Goals of issue 3"),
            table(["goal", "measured", "met"], _issue_3_rows(run_locks[RunLock.LOCKED_TARGETS])),
        ]
    )


def _issue_2_rows(per_call_result: PerCallResult, throughputs: dict[Phase, Throughput]) -> list[list[str]]:
    rows = []
    for operation in OPERATIONS:
        for locked in LOCKED_VARIANTS:
            requests = per_call_result.requests[operation, locked].client_requests
            rows.append(
                [
                    f"{operation}: {locked.letter} {locked.title} adds "
                    f"<= {ROUND_TRIP_GOALS[operation]} round trips",
                    f"{requests:g} requests sent",
                    verdict(per_call.round_trip_goal_met(per_call_result, operation, locked)),
                ]
            )
    for operation in ("load", "dump"):
        for locked in LOCKED_VARIANTS:
            ratio = per_call.against_gokart(per_call_result, operation, locked)
            rows.append(
                [
                    f"{operation}: {locked.letter} {locked.title} faster than (b) gokart's lock",
                    f"{locked.value}/b = {ratio:.2f}",
                    verdict(ratio < 1),
                ]
            )
    rows.append(
        [
            f"hot target: {Variant.LOCKED_TARGET.letter} {Variant.LOCKED_TARGET.title} "
            f"within {hot_target.SLOWDOWN_GOAL}x of unlocked",
            f"{hot_target.slowdown(throughputs, Variant.LOCKED_TARGET):.2f}x",
            verdict(hot_target.slowdown_goal_met(throughputs, Variant.LOCKED_TARGET)),
        ]
    )
    for locked in LOCKED_VARIANTS:
        bad = throughputs[locked].bad_loads
        rows.append(
            [
                f"hot target: every load of {locked.letter} {locked.title} whole",
                f"{bad} bad loads",
                verdict(bad == 0),
            ]
        )
    return rows


def _issue_3_rows(result: RunLockResult) -> list[list[str]]:
    lags = result.together.follower_lags_ms("done")
    runs = result.together.runs_per_step()
    return [
        [
            f"run lock: each follower done < {run_lock.LAG_GOAL_MS:g} ms after the leader's output landed",
            f"median / max {run_lock.lag_summary(lags)} ms",
            verdict(max(lags) < run_lock.LAG_GOAL_MS),
        ],
        [
            f"run lock: each step computed once by {run_lock.APPLICATIONS} applications",
            f"runs per step {'/'.join(map(str, runs))}",
            verdict(all(count == 1 for count in runs)),
        ],
    ]


def report_issue_9(
    construction: ConstructionResult,
    per_call_result: PerCallResult,
    throughputs: dict[Phase, Throughput],
    dag_result: DagResult,
    distance_result: DistanceResult,
) -> str:
    locked = Variant.LOCKED_TARGET
    rows = [
        [
            f"{builder}: (c) LockedTarget within {CONSTRUCTION_GOAL:g}x of (a) unlocked gokart",
            f"{construction.ratio(builder, Variant.LOCKED_TARGET):.2f}x",
            verdict(construction.goal_met(builder)),
        ]
        for builder in BUILDERS
    ]
    against_unlocked, against_gokart = hot_target.fresh_goals_met(throughputs)
    rows += [
        [
            "hot target, fresh target per load: (c) >= "
            f"{hot_target.FRESH_AGAINST_UNLOCKED_GOAL:g}x (a)'s loads per second",
            f"{hot_target.fresh_speedup(throughputs, Variant.UNLOCKED):.2f}x",
            verdict(against_unlocked),
        ],
        [
            "hot target, fresh target per load: (c) >= "
            f"{hot_target.FRESH_AGAINST_GOKART_LOCK_GOAL:g}x (b)'s loads per second",
            f"{hot_target.fresh_speedup(throughputs, Variant.GOKART_LOCK):.1f}x",
            verdict(against_gokart),
        ],
    ]
    for mode, goal in (("cold", dag.LOOPBACK_COLD_GOAL), ("warm", dag.LOOPBACK_WARM_GOAL)):
        for leaves in dag_result.sizes:
            ratio = dag_result.ratio(leaves, locked, mode)
            rows.append(
                [
                    f"DAG, N = {leaves}, {mode}, loopback: (c) {locked.title} within {goal:g}x of (a)",
                    f"{ratio:.2f}x",
                    verdict(ratio <= goal),
                ]
            )
    farthest = distance_result.farthest
    for mode, goal in (("cold", distance.DISTANT_COLD_GOAL), ("warm", distance.DISTANT_WARM_GOAL)):
        ratio = distance_result.ratio(farthest, locked, mode)
        rows.append(
            [
                f"DAG, N = {distance_result.leaves}, {mode}, Redis {distance.link_title(farthest)} away (RT "
                f"{distance_result.measured_round_trip_ms[farthest]:.1f} ms): (c) within {goal:g}x of (a)",
                f"{ratio:.2f}x",
                verdict(ratio <= goal),
            ]
        )
    smallest, *_, largest = dag_result.sizes
    for mode, goal in (("cold", dag.COLD_REQUESTS_GOAL), ("warm", dag.WARM_REQUESTS_GOAL)):
        waited = dag_result.waited(locked, mode)
        rows.append(
            [
                f"DAG, {mode}: (c) waits for <= {goal:g} Redis requests per task (slope N = {smallest} to "
                f"{largest})",
                f"{waited.per_task:.2f} per task + {waited.per_build:.1f} per build",
                verdict(waited.per_task <= goal),
            ]
        )
    rows += _added_time_rows(per_call_result)
    return "\n".join(
        [
            heading("Goals of issue 9"),
            "(a) unlocked gokart, (b) gokart's lock, (c) LockedTarget (tasks on locked_targets.TaskOnKart in "
            "the DAG), as in scenarios 3, 5 to 7.",
            "A ratio of times is (c)'s over (a)'s (DAG: median build times over the rounds); of loads per "
            "second, (c)'s over the other's.",
            "Requests per task: sent by the thread running the tasks, what one more leaf adds to a build "
            "(the slope between two sizes);",
            "what a build pays once whatever N (such as greetings, the start-up check, the aggregate's own) "
            "is beside it, not judged.",
            "Added time per call: scenario 2's median over (a)'s, in RTs of its interleaved PINGs, on "
            "loopback, the server and the timing process on two CPUs (scenario 7 shows it farther away);",
            "a cold read is (d)'s (kept leases off), a repeated one (c)'s on its kept lease.",
            table(["goal", "measured", "met"], rows),
        ]
    )


def _added_time_rows(result: PerCallResult) -> list[list[str]]:
    """Goal 6: the time a call adds, in RTs, cold ((d), and both variants' dumps) and repeated ((c))."""
    repeated = Variant.LOCKED_TARGET
    rows = []
    for operation in OPERATIONS:
        judged = per_call.judged_for_added_time(operation)
        added = ", ".join(
            f"{locked.letter} {per_call.added_round_trips(result, operation, locked):.1f}"
            for locked in judged
        )
        rows.append(
            [
                f"{operation}, {'every' if operation == 'dump' else 'cold'}: "
                f"{' and '.join(locked.letter for locked in judged)} add{'' if len(judged) > 1 else 's'} <= "
                f"{per_call.ADDED_TIME_GOALS[operation]:g} RTs of time",
                f"{added} RTs",
                verdict(per_call.added_time_goal_met(result, operation)),
            ]
        )
    for operation in per_call.REPEATED_READS:
        rows.append(
            [
                f"{operation}, repeated: {repeated.letter} adds no round trip (no request, "
                f"< {per_call.REPEATED_READ_MOST_RTS:g} RT of time)",
                f"{result.requests[operation, repeated].client_requests:g} requests, "
                f"{per_call.added_round_trips(result, operation, repeated):.1f} RTs",
                verdict(per_call.repeated_read_goal_met(result, operation)),
            ]
        )
    return rows
