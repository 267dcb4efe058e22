"""What the commands report: the problems they find, and their ``--json`` documents.

The field names of the documents are a contract (docs/cli.md lists them): add fields, never
rename or remove one. Times are UTC, ISO 8601 to the second; durations are seconds; a
value nobody described is null. Tokens never appear.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Iterable, Sequence
from typing import Any

from locked_targets.cli.finding import FoundLock, Service
from locked_targets.rwlock import LeaseTerms
from locked_targets.rwlock.inspection import LockBreak, LockHolder, ServerHealth
from locked_targets.rwlock.server_checks import EVICTION_FREE_POLICY

# The role a server that keeps locks must have.
HEALTHY_ROLE = "master"


def utc(epoch_seconds: float | None) -> str | None:
    """``2025-01-31T12:00:00Z``, or None for an unknown time."""
    if epoch_seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


def who(holder: LockHolder) -> str:
    """'pid 12 on host h (task T)', as far as its description tells."""
    task = f" (task {holder.task})" if holder.task else ""
    return f"pid {holder.pid if holder.pid is not None else '?'} on {holder.host or 'an unknown host'}{task}"


def lock_problems(lock: FoundLock) -> list[str]:
    """What is wrong with a lock: holders and waiting writers past their lease, never cleaned up."""
    command = f"locked-targets break {shlex.quote(lock.state.path)}"
    return [
        f"{who(holder)} is past its lease by {-holder.lease_left_seconds:.1f} s: its process is dead or "
        f"paused; the next writer clears it, or `{command}` does now"
        for holder in lock.state.lapsed
    ]


def server_problems(health: ServerHealth) -> list[str]:
    """What makes a Redis server unfit to keep locks, each naming the server."""
    problems = []
    if health.maxmemory_policy != EVICTION_FREE_POLICY:
        problems.append(
            f"{health.address}: maxmemory-policy is {health.maxmemory_policy}: Redis may evict lock keys, "
            f"which gives locks away; set it to {EVICTION_FREE_POLICY}"
        )
    if health.role != HEALTHY_ROLE:
        problems.append(
            f"{health.address}: role is {health.role}: locks must be taken on a master, which replicas follow"
        )
    return problems


def holder_document(holder: LockHolder, terms: LeaseTerms, server_time: float) -> dict[str, Any]:
    return {
        "mode": holder.mode.value,
        "host": holder.host,
        "pid": holder.pid,
        "task": holder.task,
        "lock": holder.lock,
        "since": utc(holder.since),
        "seconds_since": None if holder.since is None else round(server_time - holder.since, 3),
        "lease_left_seconds": round(holder.lease_left_seconds, 3),
        "renewed": holder.is_renewed(terms),
    }


def break_document(record: LockBreak | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {**dataclasses.asdict(record), "at": utc(record.at)}


def lock_document(lock: FoundLock, terms: LeaseTerms) -> dict[str, Any]:
    state = lock.state
    return {
        "path": state.path,
        "key": state.keys.base,
        "redis": lock.service.shown_url,
        "server": state.server,
        "storage": lock.storage,
        "namespace": lock.namespace,
        "mode": None if state.mode is None else state.mode.value,
        "holders": [holder_document(holder, terms, state.server_time) for holder in state.holders],
        "waiting_writers": [
            holder_document(holder, terms, state.server_time) for holder in state.waiting_writers
        ],
        "fencing_token": state.fencing_token,
        "broken": break_document(state.broken),
        "problems": lock_problems(lock),
    }


def service_document(service: Service) -> dict[str, Any]:
    """Which lock service: its URL without password, and the settings that name it."""
    return {"redis": service.shown_url, "settings": list(service.settings)}


def locks_document(
    services: Sequence[Service], locks: Sequence[FoundLock], terms: LeaseTerms
) -> dict[str, Any]:
    """What ``ls``, ``inspect`` and ``watch`` print: the services looked at (``redis``: the first's URL),
    and the locks."""
    return {
        "redis": services[0].shown_url,
        "services": [service_document(service) for service in services],
        "locks": [lock_document(lock, terms) for lock in locks],
    }


@dataclasses.dataclass(frozen=True)
class LockSummary:
    """How busy a lock service is: locks held per mode, holders, waiters, and who has been there longest."""

    held_locks: dict[str, int]
    holders: dict[str, int]
    waiting_writers: int
    oldest_holder: tuple[FoundLock, LockHolder] | None
    longest_wait: tuple[FoundLock, LockHolder] | None

    @classmethod
    def of(cls, locks: Sequence[FoundLock]) -> LockSummary:
        held_locks = {"read": 0, "write": 0}
        holders = {"read": 0, "write": 0}
        for lock in locks:
            if lock.state.mode is not None:
                held_locks[lock.state.mode.value] += 1
            for holder in lock.state.holders:
                holders[holder.mode.value] += 1
        return cls(
            held_locks=held_locks,
            holders=holders,
            waiting_writers=sum(len(lock.state.waiting_writers) for lock in locks),
            oldest_holder=_earliest((lock, holder) for lock in locks for holder in lock.state.holders),
            longest_wait=_earliest((lock, holder) for lock in locks for holder in lock.state.waiting_writers),
        )


def _earliest(candidates: Iterable[tuple[FoundLock, LockHolder]]) -> tuple[FoundLock, LockHolder] | None:
    """The (lock, holder) whose holder started first; holders that did not say when come last."""
    return min(candidates, key=lambda pair: pair[1].since or float("inf"), default=None)


def _placed_holder(pair: tuple[FoundLock, LockHolder] | None, terms: LeaseTerms) -> dict[str, Any] | None:
    if pair is None:
        return None
    lock, holder = pair
    return {"path": lock.state.path, **holder_document(holder, terms, lock.state.server_time)}


@dataclasses.dataclass(frozen=True)
class ServiceStatus:
    """One lock service as ``status`` shows it: the health of each of its servers, and its locks."""

    service: Service
    health: list[ServerHealth]
    """One per server that keeps locks: the one server, or each master of a cluster."""
    summary: LockSummary
    problems: list[str]


def status_document(statuses: Sequence[ServiceStatus], terms: LeaseTerms) -> dict[str, Any]:
    """What ``status`` prints: one entry per lock service; ``server`` is its first server's health,
    ``servers`` each one's (on a cluster, each master's), named by ``address``."""
    return {
        "services": [
            {
                **service_document(status.service),
                "address": status.service.connection.address,
                "server": dataclasses.asdict(status.health[0]),
                "servers": [dataclasses.asdict(health) for health in status.health],
                "held_locks": status.summary.held_locks,
                "holders": status.summary.holders,
                "waiting_writers": status.summary.waiting_writers,
                "oldest_holder": _placed_holder(status.summary.oldest_holder, terms),
                "longest_wait": _placed_holder(status.summary.longest_wait, terms),
                "problems": status.problems,
            }
            for status in statuses
        ]
    }
