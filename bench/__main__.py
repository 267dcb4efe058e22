"""Runs every scenario against one private redis-server and prints the tables (``make bench``)."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from importlib.metadata import version

from bench import goals, hot_target, per_call, round_trip, run_lock
from bench.variants import RedisAddress, use_redis_for_locked_targets
from locked_targets.testing import RedisServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="few iterations: a smoke check, not a measurement"
    )
    quick = parser.parse_args(argv).quick
    pings, calls, counted_calls, hot_seconds, step_seconds = (
        (200, 30, 5, 0.5, 0.2) if quick else (3000, 400, 20, 3.0, 0.5)
    )

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
        round_trip_ms = round_trip.measure_round_trip_ms(server.url, pings)
        print(round_trip.report(round_trip_ms, pings))
        with tempfile.TemporaryDirectory(prefix="locked-targets-bench-") as directory:
            per_call_result = per_call.measure(directory, redis, calls, counted_calls)
            print(per_call.report(per_call_result))
            sys.stdout.flush()
            throughputs = hot_target.measure(directory, redis, hot_seconds)
            print(hot_target.report(throughputs, hot_seconds))
            sys.stdout.flush()
            run_locks = run_lock.measure(directory, redis, step_seconds)
            print(run_lock.report(run_locks, step_seconds))
        print(goals.report(per_call_result, throughputs, run_locks))
        print(f"\n(whole run: {time.monotonic() - started:.0f} s)")
    finally:
        # This process's listener for kept shared leases outlives the server; its
        # reconnect warnings after the server stops say nothing about the benchmark.
        logging.getLogger("locked_targets").setLevel(logging.ERROR)
        server.stop()


if __name__ == "__main__":
    main()
