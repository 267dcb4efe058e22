"""What the commands report: the problems they find, and their ``--json`` documents.

The field names of the documents are a contract (docs/cli.md lists them): add fields, never
rename or remove one. Times are UTC, ISO 8601 to the second; durations are seconds; a
value nobody described is null. Tokens never appear.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from typing import Any

from locked_targets.cli.finding import FoundLock
from locked_targets.rwlock import LeaseTerms
from locked_targets.rwlock.inspection import LockBreak, LockHolder, ServerHealth

# What a lock service must say of itself to be fit for locking.
HEALTHY_EVICTION_POLICY = "noeviction"
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
    return [
        f"{who(holder)} is past its lease by {-holder.lease_left_seconds:.1f} s: its process is dead or "
        f"paused; the next writer clears it, or `locked-targets break {lock.state.path}` does now"
        for holder in lock.state.lapsed
    ]


def server_problems(health: ServerHealth) -> list[str]:
    """What makes a Redis server unfit to keep locks."""
    problems = []
    if health.maxmemory_policy != HEALTHY_EVICTION_POLICY:
        problems.append(
            f"maxmemory-policy is {health.maxmemory_policy}: Redis may evict lock keys, which gives locks "
            f"away; set it to {HEALTHY_EVICTION_POLICY}"
        )
    if health.role != HEALTHY_ROLE:
        problems.append(f"role is {health.role}: locks must be taken on a master, which replicas follow")
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


def locks_document(redis: str, locks: Sequence[FoundLock], terms: LeaseTerms) -> dict[str, Any]:
    """What ``ls``, ``inspect`` and ``watch`` print."""
    return {"redis": redis, "locks": [lock_document(lock, terms) for lock in locks]}


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


def status_document(
    *,
    redis: str,
    address: str,
    health: ServerHealth,
    summary: LockSummary,
    problems: list[str],
    terms: LeaseTerms,
) -> dict[str, Any]:
    """What ``status`` prints: one entry per lock service (today, the one configured)."""
    return {
        "services": [
            {
                "redis": redis,
                "address": address,
                "server": dataclasses.asdict(health),
                "held_locks": summary.held_locks,
                "holders": summary.holders,
                "waiting_writers": summary.waiting_writers,
                "oldest_holder": _placed_holder(summary.oldest_holder, terms),
                "longest_wait": _placed_holder(summary.longest_wait, terms),
                "problems": problems,
            }
        ]
    }
