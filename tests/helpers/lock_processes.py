"""Entry points for lock holders and waiters running in separate OS processes (spawned)."""

from __future__ import annotations

import multiprocessing
import time

from locked_targets.locks import connection_for
from locked_targets.rwlock import LeaseTerms, LockKeys, LockMode, ReadWriteLock

SPAWN = multiprocessing.get_context("spawn")


def make_lock(
    redis_url: str, base: str, lease_seconds: float = 30, wait_timeout_seconds: float | None = None
) -> ReadWriteLock:
    return ReadWriteLock(
        connection_for(redis_url),
        LockKeys(path=f"/cache/{base}", base=base),
        LeaseTerms(lease_seconds=lease_seconds, renewal_interval_seconds=lease_seconds / 3),
        wait_timeout_seconds=wait_timeout_seconds,
        task="TestTask_0123",
    )


def hold(
    redis_url: str,
    base: str,
    mode: str,
    events: multiprocessing.Queue[tuple[str, str, float]],
    release: multiprocessing.Queue[str],
    name: str,
    lease_seconds: float = 30,
) -> None:
    """Acquire in ``mode``, report when, hold until told to release, report when."""
    lock = make_lock(redis_url, base, lease_seconds)
    held = lock.acquire(LockMode(mode))
    events.put((name, "acquired", time.monotonic()))
    release.get(timeout=60)
    released_at = time.monotonic()
    held.release()
    events.put((name, "released", released_at))
