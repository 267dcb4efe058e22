"""Scenario 1: the Redis round-trip time, the unit in which lock overhead is stated."""

from __future__ import annotations

import redis

from bench.tables import heading
from bench.timing import call_seconds, median_ms

_WARM_UP_PINGS = 50


def measure_round_trip_ms(redis_url: str, pings: int) -> float:
    """The median time of one ``PING`` with redis-py on an open connection, in ms."""
    client = redis.Redis.from_url(redis_url)
    try:
        for _ in range(_WARM_UP_PINGS):
            client.ping()
        return median_ms([call_seconds(client.ping) for _ in range(pings)])
    finally:
        client.close()


def report(round_trip_ms: float, pings: int, placed: str) -> str:
    """``placed``: where the server and the timing process ran (``placement``), for scenarios 1 and 2."""
    return "\n".join(
        [
            heading("1. Redis round trip"),
            f"median of {pings} PINGs with redis-py on one open loopback connection: {round_trip_ms:.3f} ms",
            "(scenario 2 states overheads in RTs of a PING timed between its own calls, "
            "so a busy machine slows both alike)",
            f"Scenarios 1 and 2: {placed}, so that a round trip crosses CPUs as one to another host does "
            "(on one CPU, a loopback PING takes a third of the time; bench/placement.py).",
        ]
    )
