"""Where scenarios 1 and 2 run: redis-server and the timing process each on a CPU of its own.

On a small machine a loopback round trip takes one of two times, by where the scheduler puts
the two processes: on one CPU, each wakes the other where it runs (a PING of 0.02 to 0.04 ms on
our 2-core VM); on two, each wake crosses CPUs (0.11 ms there), as it does for a client whose
Redis is on another host. Every overhead of scenario 2 is stated in RTs of that PING, so a
placement that flips between runs, or within one, would change the unit threefold: the
scenarios pin the two apart, and give the CPUs back afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def apart_from(server_pid: int) -> Iterator[str]:
    """Pin this process and the server ``server_pid`` to two different CPUs for the block; yields
    how they were placed, as the report says it (not pinned where the system cannot, or has one CPU)."""
    if not hasattr(os, "sched_setaffinity"):
        yield "not pinned (no CPU affinity on this system)"
        return
    ours, theirs = os.sched_getaffinity(0), os.sched_getaffinity(server_pid)
    cpus = sorted(ours & theirs)
    if len(cpus) < 2:
        yield "not pinned (one CPU)"
        return
    os.sched_setaffinity(server_pid, {cpus[-1]})
    os.sched_setaffinity(0, {cpus[0]})
    try:
        yield f"redis-server pinned to CPU {cpus[-1]}, the timing process to CPU {cpus[0]}"
    finally:
        os.sched_setaffinity(0, ours)
        os.sched_setaffinity(server_pid, theirs)
