"""The fencing counter is kept for ``fencing_memory_seconds``; tokens keep growing once it is gone."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from helpers.waiting import eventually
from locked_targets.errors import ConfigurationError
from locked_targets.locks import connection_for, lease_terms, lock_for
from locked_targets.rwlock import LeaseTerms, LockKeys, LockMode, ReadWriteLock
from locked_targets.settings import FENCING_MEMORY_BOUNDS, Settings

# Short enough for a test to outwait; the counter is kept at least one lease, so the lease is as short.
SHORT_MEMORY_SECONDS = 1.0
SHORT_TERMS = LeaseTerms(
    lease_seconds=SHORT_MEMORY_SECONDS,
    renewal_interval_seconds=SHORT_MEMORY_SECONDS / 3,
    fencing_memory_seconds=SHORT_MEMORY_SECONDS,
)


def short_memory_lock(redis_url: str, key_prefix: str) -> ReadWriteLock:
    base = f"{key_prefix}{{short-memory}}"
    return ReadWriteLock(connection_for(redis_url), LockKeys(path=f"/cache/{base}", base=base), SHORT_TERMS)


def fencing_token_of_one_grant(lock: ReadWriteLock) -> int:
    held = lock.acquire(LockMode.EXCLUSIVE)
    held.release()
    assert held.fencing_token is not None
    return held.fencing_token


@pytest.mark.parametrize("configured", [{}, {"fencing_memory_seconds": 240.0}], ids=["default", "240 s"])
def test_a_grant_keeps_the_fencing_counter_for_the_configured_memory(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path, configured: dict[str, Any]
) -> None:
    settings = dataclasses.replace(settings, **configured)
    lock = lock_for(str(tmp_path / "fenced.pkl"), settings, wait_timeout_seconds=None)
    held = lock.acquire(LockMode.EXCLUSIVE)
    held.release()
    memory_ms = settings.fencing_memory_seconds * 1000
    assert memory_ms - 5_000 < redis_client.pttl(lock.keys.fence) <= memory_ms


def test_fencing_tokens_grow_after_the_counter_was_forgotten(
    redis_url: str, key_prefix: str, redis_client: redis.Redis
) -> None:
    lock = short_memory_lock(redis_url, key_prefix)
    before = fencing_token_of_one_grant(lock)
    eventually(
        lambda: not redis_client.exists(lock.keys.fence), "the fencing counter to be forgotten", 20, 0.1
    )
    assert fencing_token_of_one_grant(lock) > before


def test_no_key_of_a_released_lock_outlives_the_memory(
    redis_url: str, key_prefix: str, redis_client: redis.Redis
) -> None:
    lock = short_memory_lock(redis_url, key_prefix)
    lock.acquire(LockMode.SHARED).release()
    fencing_token_of_one_grant(lock)
    assert redis_client.exists(lock.keys.fence)
    time.sleep(SHORT_MEMORY_SECONDS + 1.0)
    assert list(redis_client.scan_iter(match=f"{lock.keys.base}*")) == []


@pytest.mark.parametrize("seconds", [FENCING_MEMORY_BOUNDS.shortest, FENCING_MEMORY_BOUNDS.longest], ids=str)
def test_a_fencing_memory_within_its_bounds_reaches_the_lock(seconds: float) -> None:
    assert lease_terms(Settings(fencing_memory_seconds=seconds)).fencing_memory_seconds == seconds


@pytest.mark.parametrize(
    "seconds", [0.999, 0, -1, 30 * 24 * 3600 + 1, float("nan"), float("inf"), "600", True], ids=str
)
def test_a_fencing_memory_out_of_its_bounds_is_refused_naming_them(seconds: object) -> None:
    refusal = (
        rf"fencing_memory_seconds=.*: must be a number of seconds {re.escape(str(FENCING_MEMORY_BOUNDS))}$"
    )
    with pytest.raises(ConfigurationError, match=refusal):
        Settings(fencing_memory_seconds=seconds)  # type: ignore[arg-type]
