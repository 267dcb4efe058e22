"""The Lua scripts check each duration before writing: no argument can leave a key without a TTL."""

from __future__ import annotations

import contextlib
import math
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import redis

from helpers.redis_keys import keys_without_ttl
from locked_targets.rwlock import LockKeys, RedisConnection, scripts

# Durations (ms, as a script receives them) that are not a whole number from 1 to a year.
HOSTILE_MILLISECONDS = [
    "0",
    "-5",
    "1.5",
    "1e300",
    "1e3",
    "nan",
    "inf",
    "-inf",
    "0x10",
    " 100",
    "100 ",
    "",
    "abc",
    "\uff19\uff19",  # full-width digits
    str(scripts.LONGEST_MILLISECONDS + 1),
    "9" * 400,
]
REFUSAL = r"ARGV\[{index}\] must be a whole number of ms from 1 to"


@pytest.fixture
def connection(redis_url: str) -> Iterator[RedisConnection]:
    connection = RedisConnection(redis_url)
    yield connection
    connection.client.close()


@pytest.fixture
def keys(key_prefix: str) -> LockKeys:
    return LockKeys(path="/cache/hostile.pkl", base=f"{key_prefix}{{hostile}}")


def raw_acquire_shared(connection: RedisConnection, keys: LockKeys, lease: str) -> Any:
    return connection.script(scripts.ACQUIRE_SHARED)(
        keys=[keys.writer, keys.readers, keys.waiting_writers, keys.holders],
        args=[secrets.token_hex(8), lease, "hostile test", keys.revoke_channel],
    )


def raw_acquire_exclusive(
    connection: RedisConnection, keys: LockKeys, lease: str, fencing_memory: str = "1000000"
) -> Any:
    return connection.script(scripts.ACQUIRE_EXCLUSIVE)(
        keys=list(keys.every_key),
        args=[secrets.token_hex(8), lease, "hostile test", keys.revoke_channel, fencing_memory],
    )


def raw_extend(connection: RedisConnection, keys: LockKeys, token: str, lease: str) -> Any:
    return connection.script(scripts.EXTEND)(
        keys=[keys.writer, keys.readers, keys.holders], args=[token, lease]
    )


RawCall = Callable[[RedisConnection, LockKeys, str], Any]
RAW_ACQUISITIONS: list[tuple[str, RawCall, int]] = [
    ("shared lease", raw_acquire_shared, 2),
    ("exclusive lease", raw_acquire_exclusive, 2),
    ("fencing memory", lambda connection, keys, ms: raw_acquire_exclusive(connection, keys, "30000", ms), 5),
]


@pytest.mark.parametrize("milliseconds", HOSTILE_MILLISECONDS)
@pytest.mark.parametrize(
    ("argument", "call", "index"), RAW_ACQUISITIONS, ids=[row[0] for row in RAW_ACQUISITIONS]
)
def test_an_acquisition_sent_a_hostile_duration_is_refused_having_written_nothing(
    connection: RedisConnection,
    keys: LockKeys,
    redis_client: redis.Redis,
    key_prefix: str,
    argument: str,
    call: RawCall,
    index: int,
    milliseconds: str,
) -> None:
    with pytest.raises(redis.ResponseError, match=REFUSAL.format(index=index)):
        call(connection, keys, milliseconds)
    assert list(redis_client.scan_iter(match=f"{key_prefix}*")) == []


@pytest.mark.parametrize("milliseconds", HOSTILE_MILLISECONDS)
@pytest.mark.parametrize("mode", ["shared", "exclusive"])
def test_a_renewal_sent_a_hostile_duration_is_refused_and_every_key_keeps_its_ttl(
    connection: RedisConnection,
    keys: LockKeys,
    redis_client: redis.Redis,
    key_prefix: str,
    mode: str,
    milliseconds: str,
) -> None:
    token = secrets.token_hex(8)
    acquire = scripts.acquire_shared if mode == "shared" else scripts.acquire_exclusive
    assert isinstance(acquire(connection, keys, token, 30, "holder"), scripts.Granted)
    with pytest.raises(redis.ResponseError, match=REFUSAL.format(index=2)):
        raw_extend(connection, keys, token, milliseconds)
    assert keys_without_ttl(redis_client, key_prefix) == []
    assert max(redis_client.pttl(key) for key in (keys.writer, keys.readers)) <= 30_000


def acquire_exclusive_remembering_for(
    connection: RedisConnection, keys: LockKeys, token: str, seconds: Any, description: str
) -> scripts.Attempt:
    """An exclusive attempt with a plausible lease and ``seconds`` of fencing memory."""
    attempt: scripts.Attempt = scripts.acquire_exclusive(
        connection, keys, token, 30, description, fencing_memory_seconds=seconds
    )
    return attempt


@pytest.mark.parametrize("seconds", [-5.0, 0.0, 1e12, 1e300, math.nan, math.inf, -math.inf, "abc"], ids=str)
@pytest.mark.parametrize(
    "attempt",
    [scripts.acquire_shared, scripts.acquire_exclusive, acquire_exclusive_remembering_for],
    ids=["shared", "exclusive", "fencing memory"],
)
def test_a_hostile_duration_through_the_python_functions_leaves_no_key_without_a_ttl(
    connection: RedisConnection,
    keys: LockKeys,
    redis_client: redis.Redis,
    key_prefix: str,
    attempt: Callable[..., scripts.Attempt],
    seconds: Any,
) -> None:
    token = secrets.token_hex(8)
    # A duration of no more than 0 s is sent as 1 ms (and granted); the others are refused,
    # by Python (NaN, infinities, text) or by the script (too long).
    refused = (redis.ResponseError, ValueError, OverflowError, TypeError)
    with contextlib.suppress(*refused):
        attempt(connection, keys, token, seconds, "holder")
    with contextlib.suppress(*refused):
        scripts.extend(connection, keys, token, seconds)
    time.sleep(0.01)  # keys of a 1 ms lease are gone by now, not caught between SCAN and PTTL
    assert keys_without_ttl(redis_client, key_prefix) == []


def test_a_lease_of_the_longest_duration_is_granted_and_scored_in_whole_milliseconds(
    connection: RedisConnection, keys: LockKeys, redis_client: redis.Redis
) -> None:
    assert raw_acquire_shared(connection, keys, str(scripts.LONGEST_MILLISECONDS)) == [1]
    [(_token, expires_ms)] = cast(
        list[tuple[bytes, float]], redis_client.zrange(keys.readers, 0, -1, withscores=True)
    )
    assert expires_ms.is_integer()
    assert redis_client.pttl(keys.readers) > scripts.LONGEST_MILLISECONDS - 60_000
