"""Runs every scenario against one private redis-server, prints the tables, draws the charts (``make bench``).

Scenario 8 starts private servers of its own, so that what a build leaves is all they hold;
scenario 9, the last one measured, starts a Sentinel deployment and a Redis Cluster beside the
run's server.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import tempfile
import time
from collections.abc import Mapping
from importlib.metadata import version

from bench import (
    construction,
    dag,
    deployments,
    distance,
    goals,
    hot_target,
    per_call,
    placement,
    plots,
    redis_memory,
    round_trip,
    run_lock,
)
from bench.variants import RedisAddress, Variant, use_redis_for_locked_targets
from locked_targets.testing import RedisServer

_DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
# gokart's lock, which no goal judges, has scenario 7's longest build (cold, at 5 ms): one round
# of it keeps scenarios 6 and 7 within about three minutes more than one round of everything.
_DISTANCE_ROUNDS = {Variant.UNLOCKED: 3, Variant.GOKART_LOCK: 1, Variant.LOCKED_TARGET: 3}


@dataclasses.dataclass(frozen=True)
class Effort:
    """How much each scenario does: a full measurement, or a ``--quick`` smoke check."""

    pings: int
    calls: int
    counted_calls: int
    hot_seconds: float
    hot_rounds: int
    step_seconds: float
    construction_batches: int
    constructions_per_batch: int
    dag_rounds: Mapping[int, int]
    """Scenario 6's sizes N, each with the rounds it is built in: a build's speed varies from one
    process to the next, so each goal takes the median of many."""
    dag_gokart_lock_rounds: int
    """At most this many of them also build gokart's lock, which no goal of scenario 6 judges."""
    distance_leaves: int
    distance_calls: int
    """Scenario 2's calls per cell at each link of scenario 7 (a call at +5 ms takes a few RTs)."""
    distance_rounds: Mapping[Variant, int]
    """Scenario 7's rounds per variant: gokart's lock, which no goal judges, may have fewer."""
    memory_leaves: int
    deployment_calls: int
    deployment_hot_seconds: float


def effort_for(quick: bool) -> Effort:
    """A full measurement, or with ``quick`` a smoke check: too few iterations to quote."""
    return Effort(
        pings=200 if quick else 3000,
        calls=30 if quick else 400,
        counted_calls=5 if quick else 20,
        hot_seconds=0.5 if quick else 1.0,
        hot_rounds=1 if quick else 3,
        step_seconds=0.2 if quick else 0.5,
        construction_batches=3 if quick else 7,
        constructions_per_batch=200 if quick else 2000,
        dag_rounds={10: 1, 30: 1} if quick else {100: 11, 300: 9, 1000: 5},
        dag_gokart_lock_rounds=1 if quick else 3,
        distance_leaves=10 if quick else 200,
        distance_calls=10 if quick else 100,
        distance_rounds=dict.fromkeys(Variant, 1) if quick else _DISTANCE_ROUNDS,
        memory_leaves=20 if quick else 300,
        deployment_calls=10 if quick else 200,
        deployment_hot_seconds=0.2 if quick else 2.0,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="few iterations: a smoke check, not a measurement"
    )
    parser.add_argument(
        "--charts",
        metavar="DIRECTORY",
        help="where to write the PNG charts (default: docs/, and no charts with --quick)",
    )
    arguments = parser.parse_args(argv)
    quick: bool = arguments.quick
    effort = effort_for(quick)
    charts: str | None = arguments.charts or (None if quick else _DOCS)

    started = time.monotonic()
    server = RedisServer().start()
    try:
        redis = RedisAddress(url=server.url, host="127.0.0.1", port=server.port)
        use_redis_for_locked_targets(redis)
        server_version = server.client().info("server")["redis_version"]
        print(
            f"locked_targets benchmark{' (--quick: too few iterations to quote)' if quick else ''}\n"
            f"Python {platform.python_version()}, gokart {version('gokart')}, redis-py {version('redis')}, "
            f"redis-server {server_version} (private, 127.0.0.1:{server.port}), "
            f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}"
        )
        assert server.pid is not None  # started
        with tempfile.TemporaryDirectory(prefix="locked-targets-bench-") as directory:
            with placement.apart_from(server.pid) as placed:
                round_trip_ms = round_trip.measure_round_trip_ms(server.url, effort.pings)
                print(round_trip.report(round_trip_ms, effort.pings, placed))
                per_call_result = per_call.measure(directory, redis, effort.calls, effort.counted_calls)
            _show(per_call.report(per_call_result))
            throughputs = hot_target.measure(directory, redis, effort.hot_seconds, rounds=effort.hot_rounds)
            _show(hot_target.report(throughputs, effort.hot_seconds, effort.hot_rounds))
            run_locks = run_lock.measure(directory, redis, effort.step_seconds)
            _show(run_lock.report(run_locks, effort.step_seconds))
            construction_result = construction.measure(
                directory, redis, effort.construction_batches, effort.constructions_per_batch
            )
            _show(construction.report(construction_result))
            dag_result = dag.measure(directory, redis, effort.dag_rounds, effort.dag_gokart_lock_rounds)
            _show(dag.report(dag_result))
            distance_result = distance.measure(
                directory,
                redis,
                effort.distance_leaves,
                effort.pings,
                rounds=effort.distance_rounds,
                calls=effort.distance_calls,
            )
            _show(distance.report(distance_result))
            leftovers = redis_memory.measure(directory, effort.memory_leaves)
            _show(redis_memory.report(leftovers, effort.memory_leaves))
            deployments_result = deployments.measure(
                directory, redis, effort.deployment_calls, effort.deployment_hot_seconds
            )
            _show(deployments.report(deployments_result))
        if charts is not None:
            written = [
                plots.write_dag_chart(dag_result, charts),
                plots.write_distance_chart(distance_result, charts),
            ]
            print(f"\ncharts: {', '.join(written)}")
        print(goals.report(per_call_result, throughputs, run_locks))
        print(
            goals.report_issue_9(
                construction_result, per_call_result, throughputs, dag_result, distance_result
            )
        )
        print(f"\n(whole run: {time.monotonic() - started:.0f} s)")
    finally:
        # This process's listener for kept shared leases outlives the server; its
        # reconnect warnings after the server stops say nothing about the benchmark.
        logging.getLogger("locked_targets").setLevel(logging.ERROR)
        server.stop()


def _show(report: str) -> None:
    """Print a scenario's report at once: the whole run takes minutes."""
    print(report, flush=True)


if __name__ == "__main__":
    main()
