"""Looking at locks from outside: who holds one, who waits, and breaking a lock whose holders are gone.

For operators and their tools (the ``locked-targets`` command), not for holders. Reading
never changes a lock: one transaction (MULTI/EXEC, one round trip) reads every key of a lock
together with the server's ``TIME``, so leases left are measured on the clock Redis counts
them on. Locks are found with SCAN, never KEYS, which would block the server. On a Redis
Cluster, SCAN visits every master (redis-py's cluster ``scan_iter`` does), a lock is read in a
transaction at the master of its slot (every key of a lock shares one), and the health of
each master is read on its own.

Breaking a lock (``break_lock``, one script) removes the holders and waiting writers it is
given, advances the fencing counter, records who broke it and why in the lock's holders
hash (the ``broken`` field), and publishes on both channels, so waiters retry at once and
processes keeping shared leases of it let them go. A broken holder that comes back finds
its token gone at its next renewal, release or refused commit, and raises ``LockLost``.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import logging
import os
import re
import socket
import time
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import redis

from locked_targets.rwlock.connection import RedisConnection
from locked_targets.rwlock.keys import LockKeys
from locked_targets.rwlock.lease import LeaseTerms, LockMode
from locked_targets.rwlock.scripts import (
    _LUA_HELPERS,
    _WAKE_BY_PUBLISH,
    DEFAULT_FENCING_MEMORY_SECONDS,
    _run,
    milliseconds,
)

logger = logging.getLogger(__name__)

BROKEN_FIELD = "broken"
"""The field of a lock's holders hash that records the last break (never a token: tokens are hex)."""

# How many locks one read transaction covers, so a long listing never holds the server for long.
_LOCKS_PER_ROUND_TRIP = 200
# What SCAN's MATCH pattern reads as special; a backslash makes each literal.
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def glob_escaped(text: str) -> str:
    """``text`` as a SCAN pattern that matches it literally."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """One holder or waiting writer of a lock: its mode, its lease as the server counts it, what it says."""

    mode: LockMode
    lease_left_seconds: float
    """How long its lease (or waiting place) has left; 0 or less: past it, its holder stopped renewing."""
    path: str | None
    host: str | None
    pid: int | None
    task: str | None
    lock: str | None
    """Which lock it says it holds or waits for ('write lock', 'run lock')."""
    since: float | None
    """When it started to acquire, in epoch seconds, on its own clock."""
    token: str = dataclasses.field(repr=False)
    """What owns the holding: only ``break_lock`` is given it, and no output ever shows it."""

    def is_renewed(self, terms: LeaseTerms) -> bool:
        """Whether its lease has more left than it would if its keeper had stopped.

        A keeper renews a lease back to ``lease_seconds`` every renewal interval, so a live holder
        always has more than ``lease_seconds`` less one interval left, give or take delays, allowed
        half an interval. Below ``lease_seconds - 1.5 * renewal interval`` its keeper has missed a
        renewal: the process is dead, paused or cut off from Redis. A holding younger than one
        interval counts as renewed. ``terms`` must be the holders' own (the same configuration).
        """
        threshold = terms.lease_seconds - 1.5 * terms.renewal_interval_seconds
        return self.lease_left_seconds > threshold


@dataclasses.dataclass(frozen=True)
class LockBreak:
    """Who broke a lock, when and why, as its holders hash records it."""

    host: str | None
    pid: int | None
    user: str | None
    reason: str | None
    at: float | None
    """Epoch seconds, on the breaker's clock."""


@dataclasses.dataclass(frozen=True)
class LockState:
    """One lock at one moment: its holders, its waiting writers, its fencing counter, its last break."""

    keys: LockKeys
    server: str
    """The address of the server it was read from (on a cluster, the master of its slot)."""
    server_time: float
    """The server's clock when the lock was read, in epoch seconds."""
    holders: tuple[LockHolder, ...]
    """The writer, or the readers, soonest lease end first."""
    waiting_writers: tuple[LockHolder, ...]
    fencing_token: int | None
    """The last fencing token granted, while the counter is remembered."""
    broken: LockBreak | None

    @property
    def path(self) -> str:
        """What the lock protects, as its holders describe it (else as ``keys`` name it)."""
        described = (holder.path for holder in (*self.holders, *self.waiting_writers))
        return next((path for path in described if path), self.keys.path)

    @property
    def mode(self) -> LockMode | None:
        """How the lock is held now; None when nobody holds it."""
        return self.holders[0].mode if self.holders else None

    @property
    def lapsed(self) -> tuple[LockHolder, ...]:
        """Holders and waiting writers past their lease: dead or stopped, and not yet cleaned up."""
        return tuple(
            holder for holder in (*self.holders, *self.waiting_writers) if holder.lease_left_seconds <= 0
        )


def find_locks(connection: RedisConnection, base_pattern: str) -> list[LockKeys]:
    """The locks whose base matches ``base_pattern`` (a SCAN pattern) and that have holders or waiters.

    A lock with anyone in it has a holders hash, so that is what is scanned for. The keys'
    ``path`` is the base until the lock is read (``LockState.path``).
    """
    match = base_pattern + glob_escaped(LockKeys.holders.suffix)
    with connection.errors_translated():
        found = {
            key.decode("utf-8", "surrogateescape").removesuffix(LockKeys.holders.suffix)
            for key in connection.client.scan_iter(match=match, count=1000, _type="HASH")
        }
    return [LockKeys(path=base, base=base) for base in sorted(found)]


def read_locks(connection: RedisConnection, locks: Sequence[LockKeys]) -> list[LockState]:
    """The state of each lock, in the order given, read in one transaction per batch of locks of one
    server (on a cluster, of the master of their slots)."""
    with connection.errors_translated():
        per_server: dict[str, tuple[redis.Redis, list[int]]] = {}
        for index, keys in enumerate(locks):
            address, client = connection.primary_of(keys.base)
            per_server.setdefault(address, (client, []))[1].append(index)
    states: list[LockState | None] = [None] * len(locks)
    for address, (client, indices) in per_server.items():
        for start in range(0, len(indices), _LOCKS_PER_ROUND_TRIP):
            batch = indices[start : start + _LOCKS_PER_ROUND_TRIP]
            read = _read_batch(connection, address, client, [locks[index] for index in batch])
            for index, state in zip(batch, read, strict=True):
                states[index] = state
    return [state for state in states if state is not None]


def read_lock(connection: RedisConnection, keys: LockKeys) -> LockState:
    """The state of one lock, in one round trip."""
    return read_locks(connection, [keys])[0]


def _read_batch(
    connection: RedisConnection, address: str, client: redis.Redis, locks: Sequence[LockKeys]
) -> list[LockState]:
    with connection.errors_translated():
        pipeline = client.pipeline(transaction=True)
        pipeline.time()
        for keys in locks:
            pipeline.get(keys.writer)
            pipeline.pttl(keys.writer)
            pipeline.zrange(keys.readers, 0, -1, withscores=True)
            pipeline.zrange(keys.waiting_writers, 0, -1, withscores=True)
            pipeline.hgetall(keys.holders)
            pipeline.get(keys.fence)
        replies: list[Any] = pipeline.execute()
    seconds, microseconds = replies[0]
    now_ms = seconds * 1000 + microseconds // 1000
    per_lock = iter(replies[1:])
    return [_state(keys, address, now_ms, per_lock) for keys in locks]


def _state(keys: LockKeys, address: str, now_ms: int, replies: Iterator[Any]) -> LockState:
    writer, writer_ms_left, readers, waiting, descriptions, fence = (next(replies) for _ in range(6))
    holders: list[LockHolder] = []
    if writer is not None:
        holders.append(_holder(LockMode.EXCLUSIVE, writer, max(0, writer_ms_left), descriptions))
    holders += (_holder(LockMode.SHARED, token, score - now_ms, descriptions) for token, score in readers)
    return LockState(
        keys=keys,
        server=address,
        server_time=now_ms / 1000,
        holders=tuple(holders),
        waiting_writers=tuple(
            _holder(LockMode.EXCLUSIVE, token, score - now_ms, descriptions) for token, score in waiting
        ),
        fencing_token=None if fence is None else int(fence),
        broken=_lock_break(descriptions.get(BROKEN_FIELD.encode())),
    )


def _fields(description: bytes | None) -> dict[str, Any]:
    """A JSON object written by a holder or a breaker; empty if absent or unreadable."""
    try:
        fields = json.loads(description or b"{}")
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}


def _holder(mode: LockMode, token: bytes, ms_left: float, descriptions: dict[bytes, bytes]) -> LockHolder:
    fields = _fields(descriptions.get(token))
    return LockHolder(
        mode=mode,
        lease_left_seconds=ms_left / 1000,
        path=_typed(fields, "path", str),
        host=_typed(fields, "host", str),
        pid=_typed(fields, "pid", int),
        task=_typed(fields, "task", str),
        lock=_typed(fields, "lock", str),
        since=_number(fields, "since"),
        token=token.decode("utf-8", "surrogateescape"),
    )


def _lock_break(record: bytes | None) -> LockBreak | None:
    if record is None:
        return None
    fields = _fields(record)
    return LockBreak(
        host=_typed(fields, "host", str),
        pid=_typed(fields, "pid", int),
        user=_typed(fields, "user", str),
        reason=_typed(fields, "reason", str),
        at=_number(fields, "at"),
    )


def _typed(fields: dict[str, Any], name: str, kind: type[Any]) -> Any:
    """``fields[name]`` if it is of ``kind``, else None: descriptions come from other processes."""
    value = fields.get(name)
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _number(fields: dict[str, Any], name: str) -> float | None:
    value = fields.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclasses.dataclass(frozen=True)
class ServerHealth:
    """What a Redis server says of itself that matters to locks (``INFO``)."""

    address: str
    """Which server (on a cluster, which master) said it."""
    version: str | None
    role: str | None
    maxmemory_policy: str | None
    """Must be ``noeviction``: an evicted lock key is a lock given away."""
    used_memory_bytes: int | None
    connected_clients: int | None


def server_health(connection: RedisConnection) -> list[ServerHealth]:
    """Each server's version, role, eviction policy, memory and clients, from one ``INFO`` each: the one
    server's, or every master's of a cluster (each keeps the locks of its own slots)."""
    with connection.errors_translated():
        return [_health(address, client.info()) for address, client in connection.primaries()]


def _health(address: str, info: dict[str, Any]) -> ServerHealth:
    return ServerHealth(
        address=address,
        version=None if info.get("redis_version") is None else str(info["redis_version"]),
        role=_typed(info, "role", str),
        maxmemory_policy=_typed(info, "maxmemory_policy", str),
        used_memory_bytes=_typed(info, "used_memory", int),
        connected_clients=_typed(info, "connected_clients", int),
    )


@dataclasses.dataclass(frozen=True)
class BrokenLock:
    """What breaking a lock did."""

    holders_removed: int
    waiting_writers_removed: int
    fencing_token: int
    """The counter after the break: larger than every token a broken holder has."""


# KEYS[1] writer, KEYS[2] readers, KEYS[3] waiting_writers, KEYS[4] holders, KEYS[5] fence
# ARGV[1] how long the fencing counter and the record of the break are kept (ms), ARGV[2] the
# record (JSON), ARGV[3] the released channel, ARGV[4] the revoke channel, ARGV[5...] the
# tokens of the holders and waiting writers to remove; with none, every one of them.
# Returns {holders removed, waiting places removed, fencing token}; an error reply, having
# written nothing, if ARGV[1] is out of range.
# The counter advances as at a grant (at least the server time in µs) and is kept at least
# as long as it already was; the record goes into the holders hash, kept as long as the counter.
# Waiters are woken as a release wakes them (SPUBLISH where they listen by sharded pub/sub),
# kept shared leases asked back as a writer asks (classic PUBLISH).
BREAK = (
    _WAKE_BY_PUBLISH
    + _LUA_HELPERS
    + """
local memory = duration_ms(1)
if not memory then return refused(1) end
local tokens = {}
if #ARGV > 4 then
  for index = 5, #ARGV do tokens[#tokens + 1] = ARGV[index] end
else
  tokens = redis.call('ZRANGE', KEYS[2], 0, -1)
  for _, token in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do tokens[#tokens + 1] = token end
  local writer = redis.call('GET', KEYS[1])
  if writer then tokens[#tokens + 1] = writer end
end
local holders_removed, waiting_removed = 0, 0
for _, token in ipairs(tokens) do
  if redis.call('GET', KEYS[1]) == token then
    redis.call('DEL', KEYS[1])
    holders_removed = holders_removed + 1
  end
  holders_removed = holders_removed + redis.call('ZREM', KEYS[2], token)
  waiting_removed = waiting_removed + redis.call('ZREM', KEYS[3], token)
  redis.call('HDEL', KEYS[4], token)
end
local t = redis.call('TIME')
local floor_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = math.max(tonumber(redis.call('GET', KEYS[5]) or '0') + 1, floor_us)
redis.call('SET', KEYS[5], string.format('%d', fence), 'PX', math.max(memory, redis.call('PTTL', KEYS[5])))
redis.call('HSET', KEYS[4], 'broken', ARGV[2])  -- BROKEN_FIELD
keep_alive(KEYS[4], memory)
wake_waiters(ARGV[3], 'broken')
redis.call('PUBLISH', ARGV[4], 'broken')
return {holders_removed, waiting_removed, fence}
"""
)


def break_lock(
    connection: RedisConnection,
    keys: LockKeys,
    *,
    reason: str,
    tokens: Collection[str] | None = None,
    fencing_memory_seconds: float = DEFAULT_FENCING_MEMORY_SECONDS,
) -> BrokenLock:
    """Remove the holders and waiting writers of ``tokens`` (None: all), and wake the waiters.

    Give the tokens read a moment ago (``LockHolder.token``), so a holder that got in since is
    left alone. ``fencing_memory_seconds`` is the holders' setting: the counter is kept that
    long (or as long as it already was), and so is the record.
    """
    if tokens is not None and not tokens:
        raise ValueError("break_lock was given no token: pass tokens=None to remove every holder")
    record = json.dumps(
        {
            "path": keys.path,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "user": _user(),
            "reason": reason,
            "at": time.time(),
        }
    )
    with connection.errors_translated():
        # On a cluster, by the cluster client, to the master of the lock's slot.
        reply: list[Any] = _run(
            connection,
            BREAK,
            list(keys.every_key),
            [
                milliseconds(fencing_memory_seconds),
                record,
                keys.released_channel,
                keys.revoke_channel,
                *(tokens or ()),
            ],
            None,
        )
    broken = BrokenLock(
        holders_removed=int(reply[0]), waiting_writers_removed=int(reply[1]), fencing_token=int(reply[2])
    )
    logger.info(
        "broke the lock of %s (lock key %s): removed %d holders and %d waiting writers, "
        "fencing token now %d; reason: %s",
        keys.path,
        keys.base,
        broken.holders_removed,
        broken.waiting_writers_removed,
        broken.fencing_token,
        reason,
        extra={"lock_path": keys.path},
    )
    return broken


def _user() -> str | None:
    """Who runs this process, as the system names them; None where it cannot tell (no passwd entry)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None
