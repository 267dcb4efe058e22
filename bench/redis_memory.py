"""Scenario 8: what a build leaves in Redis once its leases have lapsed.

A lock that leaves keys behind for every target grows Redis with the cache. Each locked
variant builds scenario 6's DAG cold (every target locked for dump, and the leaves for
load) on a private server of its own, locked_targets with short leases (gokart's lock
refuses leases of 10 s or less, and deletes its key when it lets go). Once every lease
has lapsed several times over, the keys still there are counted by kind, with the
longest time they have left to live, and the server's ``used_memory`` is compared with
what it was before the build.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter

import redis as redis_py

from bench.dag import LOCKED_DAG_VARIANTS, Workspace
from bench.tables import heading, table
from bench.variants import RedisAddress, Variant
from locked_targets.testing import RedisServer

LEASE_SECONDS = 2.0
# How many leases to wait past the end of the build before counting what is left.
LAPSED_LEASES = 3
_PER_TARGETS = 1000
_SECONDS_PER_DAY = 86400


def _kind(key: str) -> str:
    """A lock key's kind is what follows its hash tag (``:fence``); gokart's keys have no hash tag."""
    return key.rsplit("}", 1)[1] if "}" in key else "gokart lock key"


@dataclasses.dataclass(frozen=True)
class Leftovers:
    """The keys one build left behind, with the seconds each has left to live, and the memory they hold."""

    targets: int
    used_memory_bytes: int
    lifetimes: dict[str, float]  # key: seconds left to live, inf if it never expires

    def per_thousand_targets(self, amount: float) -> float:
        return amount * _PER_TARGETS / self.targets

    @property
    def keys_by_kind(self) -> Counter[str]:
        return Counter(_kind(key) for key in self.lifetimes)

    @property
    def longest_lifetime_seconds(self) -> float | None:
        return max(self.lifetimes.values(), default=None)


def _used_memory(client: redis_py.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _leftovers(client: redis_py.Redis, baseline_bytes: int, targets: int) -> Leftovers:
    keys = [key.decode() for key in client.scan_iter(count=1000)]  # a scan also drops expired keys
    lifetimes = {key: client.pttl(key) / 1000 for key in keys}
    return Leftovers(
        targets=targets,
        used_memory_bytes=_used_memory(client) - baseline_bytes,
        lifetimes={key: float("inf") if left < 0 else left for key, left in lifetimes.items()},
    )


def measure(directory: str, leaves: int) -> dict[Variant, Leftovers]:
    servers = {variant: RedisServer().start() for variant in LOCKED_DAG_VARIANTS}
    try:
        clients = {variant: server.client() for variant, server in servers.items()}
        baselines = {variant: _used_memory(client) for variant, client in clients.items()}
        workspaces = {}
        for variant, server in servers.items():
            address = RedisAddress(url=server.url, host="127.0.0.1", port=server.port)
            workspaces[variant] = Workspace(
                directory=os.path.join(directory, f"memory-{variant.name.lower()}"),
                variant=variant,
                leaves=leaves,
                redis=address,
                control_url=server.url,
                lease_seconds=LEASE_SECONDS if variant is Variant.LOCKED_TARGET else None,
            )
            workspaces[variant].build("cold")
        time.sleep(LAPSED_LEASES * LEASE_SECONDS)
        return {
            variant: _leftovers(client, baselines[variant], workspaces[variant].cached_files())
            for variant, client in clients.items()
        }
    finally:
        for server in servers.values():
            server.stop()


def _lifetime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds == float("inf"):
        return "never expires"
    return f"{seconds / _SECONDS_PER_DAY:.1f} days" if seconds >= _SECONDS_PER_DAY else f"{seconds:.0f} s"


def report(leftovers: dict[Variant, Leftovers], leaves: int) -> str:
    rows = [
        [
            f"{variant.letter} {variant.title}",
            f"{left.targets:,}",
            f"{len(left.lifetimes):,}",
            f"{left.per_thousand_targets(len(left.lifetimes)):,.0f}",
            f"{left.per_thousand_targets(left.used_memory_bytes) / 1024:,.1f}",
            ", ".join(f"{kind} {count:,}" for kind, count in sorted(left.keys_by_kind.items())) or "-",
            _lifetime(left.longest_lifetime_seconds),
        ]
        for variant, left in leftovers.items()
    ]
    return "\n".join(
        [
            heading("8. What a build leaves in Redis once its leases have lapsed"),
            f"One cold build of scenario 6's DAG (N = {leaves}) per variant, each on a fresh private "
            "redis-server; (c) with [locked_targets]",
            f"lease_seconds = {LEASE_SECONDS:g}, (b) with gokart's default redis_timeout (it refuses 10 s or "
            "less, and deletes its key when it lets go).",
            f"Then {LAPSED_LEASES * LEASE_SECONDS:g} s of waiting ({LAPSED_LEASES} of (c)'s leases) and a "
            "SCAN, which drops expired keys.",
            "Targets = files the build wrote (outputs, each under one lock, and gokart's log files, "
            "a task's five under one).",
            "Memory = used_memory now minus before the build (the scripts Redis caches included).",
            "",
            table(
                [
                    "variant",
                    "targets",
                    "keys left",
                    "keys per 1,000 targets",
                    "used_memory KiB per 1,000 targets",
                    "keys left by kind",
                    "longest time to live",
                ],
                rows,
            ),
        ]
    )
