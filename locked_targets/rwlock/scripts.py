"""The lock's protocol: each Lua script beside the one function that runs it.

Every change to a lock's keys happens inside one of these scripts, atomically. Each
script's comment lists ``KEYS`` and ``ARGV`` exactly as its function sends them, and
what it returns. A script touches no key it is not sent in ``KEYS``, and all of a lock's
keys share one hash slot (``keys``), so a Redis Cluster runs it on the master of that slot.
Durations cross into Redis here: the functions take seconds, the scripts count whole
milliseconds of the server's clock (``TIME``), so clients on different machines agree on
leases.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from typing import Any

from locked_targets.rwlock.connection import RedisConnection
from locked_targets.rwlock.keys import LockKeys
from locked_targets.rwlock.script_batch import ScriptBatch

# How long the fencing counter outlives the lock's last exclusive grant, unless configured.
# Tokens are at least the server time in µs, so the counter only has to outlast how far it
# can run ahead of that clock: a backward step of the clock (docs/design.md, "Fencing tokens").
DEFAULT_FENCING_MEMORY_SECONDS = 600.0

# The longest duration a script takes (ms): a year. It keeps the server time in ms plus a
# duration far below 10^14, so every sum stays a whole number, exact in Lua's doubles and
# written out by Lua as digits (not 1e+14) when handed to ZADD, SET PX or PEXPIRE.
LONGEST_MILLISECONDS = 365 * 24 * 3600 * 1000

# Shared Lua helpers, prepended to the scripts that need them. A script checks each duration
# it is sent (``duration_ms``) before it writes anything, and refuses one that is not a whole
# number from 1 to LONGEST_MILLISECONDS with an error reply: a key it wrote with such a
# duration could be left without a TTL, and stuck for ever.
_LUA_HELPERS = (
    """
local LONGEST_MS = """
    + str(LONGEST_MILLISECONDS)
    + """
local function duration_ms(index)
  local text = ARGV[index] or ''
  if string.match(text, '^[1-9]%d*$') and tonumber(text) <= LONGEST_MS then return tonumber(text) end
end
local function refused(index)
  return redis.error_reply('ERR ARGV[' .. index .. '] must be a whole number of ms from 1 to ' .. LONGEST_MS)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function keep_alive(key, ttl_ms)
  if redis.call('PTTL', key) < ttl_ms then redis.call('PEXPIRE', key, ttl_ms) end
end
local function prune(zset, holders, now)
  local expired = redis.call('ZRANGEBYSCORE', zset, '-inf', now)
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', zset, '-inf', now)
    redis.call('HDEL', holders, unpack(expired))
  end
end
"""
)


# How a script wakes the waiters of a lock (``wake_waiters(channel, why)``), opening the scripts
# that do: by classic PUBLISH, which a cluster forwards to every node; or, where the connection's
# waiters listen by sharded pub/sub (a Redis 7+ cluster, ``RedisConnection.sharded_pubsub``), by
# SPUBLISH (``_as_run_on``), which only the node serving the lock's slot delivers: a release then
# crosses no cluster bus.
_WAKE_BY_PUBLISH = "local function wake_waiters(channel, why) redis.call('PUBLISH', channel, why) end\n"


def milliseconds(seconds: float) -> int:
    """A duration as the whole, positive number of milliseconds a script takes."""
    return max(1, round(seconds * 1000))


def _run(
    connection: RedisConnection, source: str, keys: list[Any], args: list[Any], batch: ScriptBatch | None
) -> Any:
    """Run a script now and return its reply, or only add it to ``batch`` (its reply comes from ``send``)."""
    script = connection.script(_as_run_on(connection, source))
    if batch is not None:
        batch.add(script, keys, args)
        return None
    return script(keys=keys, args=args)


def _as_run_on(connection: RedisConnection, source: str) -> str:
    """``source`` as ``connection`` runs it: a script that wakes waiters does it as they listen."""
    if connection.sharded_pubsub and source.startswith(_WAKE_BY_PUBLISH):
        return source.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'", 1)
    return source


class Relation(enum.Enum):
    """How the one who blocks an attempt stands to the lock."""

    HOLDS = "holds"
    WAITS = "waits"  # a waiting writer, which shuts out new readers


@dataclasses.dataclass(frozen=True)
class Granted:
    """An attempt that got the lock."""

    fencing_token: int | None
    """Grows with every exclusive grant of the lock; None for a shared one."""


@dataclasses.dataclass(frozen=True)
class Blocked:
    """An attempt that did not get the lock, and who is in the way."""

    lease_left_seconds: float
    """How long the blocker's lease (or waiting place) has left."""

    blocker_description: bytes
    """The blocker's description as its holder wrote it (see ``holders``); empty if already gone."""

    relation: Relation


Attempt = Granted | Blocked


def _blocked(reply: list[Any]) -> Blocked:
    return Blocked(
        lease_left_seconds=max(0.001, int(reply[1]) / 1000),
        blocker_description=reply[2],
        relation=Relation(reply[3].decode() if isinstance(reply[3], bytes) else reply[3]),
    )


# What a waiter blocked by a holder publishes on the lock's revoke channel: a writer that readers
# block (kept shared leases are given back, queued releases are sent now), or a reader or a writer
# that the writer blocks (the writer's process sends its queued release now; no lease is revoked).
WRITER_WAITING = "writer waiting"
WAITING_FOR_THE_WRITER = "waiting for the writer"


# KEYS[1] writer, KEYS[2] readers, KEYS[3] waiting_writers, KEYS[4] holders
# ARGV[1] token, ARGV[2] lease (ms), ARGV[3] description of the holder, ARGV[4] the revoke channel
# Returns {1} when acquired, else {0, ms until the blocking lease ends, the blocker's
# description, 'holds' or 'waits'} (a reader is also blocked by a waiting writer); an
# error reply, having written nothing, if a duration (ms) is out of range.
# A reader is admitted when there is no writer and no live waiting writer. One a writer holds
# out says so on the revoke channel (WAITING_FOR_THE_WRITER), so that the writer's process, which
# may hold back a release it has queued (``releases``), sends it now.
ACQUIRE_SHARED = (
    _LUA_HELPERS
    + """
local lease = duration_ms(2)
if not lease then return refused(2) end
local now = now_ms()
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then  -- a retry of an attempt whose reply was lost
  redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
  keep_alive(KEYS[2], lease)
  return {1}
end
local writer = redis.call('GET', KEYS[1])
if writer then
  redis.call('PUBLISH', ARGV[4], '"""
    + WAITING_FOR_THE_WRITER
    + """')
  return {0, redis.call('PTTL', KEYS[1]), redis.call('HGET', KEYS[4], writer) or '', 'holds'}
end
prune(KEYS[3], KEYS[4], now)
local waiting = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if #waiting > 0 then
  return {0, tonumber(waiting[2]) - now, redis.call('HGET', KEYS[4], waiting[1]) or '', 'waits'}
end
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
keep_alive(KEYS[2], lease)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
keep_alive(KEYS[4], lease)
return {1}
"""
)


def acquire_shared(
    connection: RedisConnection, keys: LockKeys, token: str, lease_seconds: float, description: str
) -> Attempt:
    """One attempt to join the readers of the lock."""
    return shared_attempt(
        _run(connection, ACQUIRE_SHARED, *_shared_attempt(keys, token, lease_seconds, description), None)
    )


def add_shared_attempts(
    batch: ScriptBatch, connection: RedisConnection, attempts: Iterable[tuple[LockKeys, str, float, str]]
) -> None:
    """``acquire_shared`` for each (keys, token, lease in seconds, description), only added to
    ``batch``: ``shared_attempt`` reads each reply."""
    for keys, token, lease_seconds, description in attempts:
        _run(connection, ACQUIRE_SHARED, *_shared_attempt(keys, token, lease_seconds, description), batch)


def _shared_attempt(
    keys: LockKeys, token: str, lease_seconds: float, description: str
) -> tuple[list[Any], list[Any]]:
    """``ACQUIRE_SHARED``'s keys and arguments."""
    return [keys.writer, keys.readers, keys.waiting_writers, keys.holders], [
        token,
        milliseconds(lease_seconds),
        description,
        keys.revoke_channel,
    ]


def shared_attempt(reply: list[Any]) -> Attempt:
    """What an ``ACQUIRE_SHARED`` reply says."""
    return Granted(fencing_token=None) if int(reply[0]) == 1 else _blocked(reply)


# KEYS[1] writer, KEYS[2] readers, KEYS[3] waiting_writers, KEYS[4] holders, KEYS[5] fence
# ARGV[1] token, ARGV[2] lease (ms), ARGV[3] description of the holder, ARGV[4] the
# revoke channel, ARGV[5] how long the fencing counter outlives its last grant (ms; it is
# kept at least one lease, so a retry whose reply was lost still finds its token there),
# ARGV[6] the token of the caller's own shared lease, given up first (an upgrade), or '',
# ARGV[7] '1' to wait in line when blocked, '0' to only try
# Returns {1, fencing token} when acquired, else as ACQUIRE_SHARED (error reply included).
# A writer is admitted when there is no writer and no live reader; otherwise, waiting in
# line, it (re)registers as waiting, with a lease, which shuts out new readers, and says so on
# ARGV[4] (by classic PUBLISH on any server: the processes that keep leases listen by pattern,
# see ``shared_leases``): blocked by readers, WRITER_WAITING, so that they give back leases they
# keep between reads; blocked by a writer, WAITING_FOR_THE_WRITER. Either way the holder's process
# sends a release it has queued now (``releases``). A writer that only tries leaves no trace.
# Fencing tokens across a failover: a script replicates its effects, so the replica receives the
# counter's value itself (not TIME) with the grant. If the promoted replica has it, the next token
# is at least counter + 1, whatever its clock says: so always, once the grant is acknowledged by
# ``min_replicas_acked`` replicas and one of them is promoted (Sentinel promotes the replica
# furthest along in replication, unless ``replica-priority`` says otherwise or it is down). If
# the failover lost the counter (the replica lagged), the next token is the new master's time in
# µs, still larger than every token of the old master as long as the new master's clock is behind
# the old one's by less than the time from the old master's last grant to the new master's first:
# after a crash or a partition, the sentinels only start a failover once the master has been
# silent for down-after-milliseconds; a failover ordered by hand takes only as long as itself.
ACQUIRE_EXCLUSIVE = (
    _LUA_HELPERS
    + """
local lease = duration_ms(2)
if not lease then return refused(2) end
local memory = duration_ms(5)
if not memory then return refused(5) end
memory = math.max(memory, lease)
local in_line = ARGV[7] == '1'
local now = now_ms()
if ARGV[6] ~= '' and redis.call('ZREM', KEYS[2], ARGV[6]) == 1 then
  redis.call('HDEL', KEYS[4], ARGV[6])
end
local blocker = redis.call('GET', KEYS[1])
local wait_ms = 0
if blocker == ARGV[1] then  -- a retry of an attempt whose reply was lost
  redis.call('PEXPIRE', KEYS[1], lease)
  keep_alive(KEYS[5], memory)
  return {1, tonumber(redis.call('GET', KEYS[5]) or '0')}
end
if blocker then
  wait_ms = redis.call('PTTL', KEYS[1])
  if in_line then redis.call('PUBLISH', ARGV[4], '"""
    + WAITING_FOR_THE_WRITER
    + """') end
else
  prune(KEYS[2], KEYS[4], now)
  local reader = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #reader > 0 then
    blocker = reader[1]
    wait_ms = tonumber(reader[2]) - now
    if in_line then redis.call('PUBLISH', ARGV[4], '"""
    + WRITER_WAITING
    + """') end
  end
end
if blocker and not in_line then
  return {0, wait_ms, redis.call('HGET', KEYS[4], blocker) or '', 'holds'}
end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
keep_alive(KEYS[4], lease)
if blocker then
  redis.call('ZADD', KEYS[3], now + lease, ARGV[1])
  keep_alive(KEYS[3], lease)
  return {0, wait_ms, redis.call('HGET', KEYS[4], blocker) or '', 'holds'}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', lease)
redis.call('ZREM', KEYS[3], ARGV[1])
-- The fencing token grows with every grant, and across a Redis restart that lost the
-- counter too, as long as the server clock does: it is at least the server time in µs.
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = math.max(tonumber(redis.call('GET', KEYS[5]) or '0') + 1, now_us)
redis.call('SET', KEYS[5], string.format('%d', fence), 'PX', memory)
return {1, fence}
"""
)


def acquire_exclusive(
    connection: RedisConnection,
    keys: LockKeys,
    token: str,
    lease_seconds: float,
    description: str,
    *,
    fencing_memory_seconds: float = DEFAULT_FENCING_MEMORY_SECONDS,
    giving_up: str | None = None,
    in_line: bool = True,
    batch: ScriptBatch | None = None,
) -> Any:
    """One attempt to become the lock's only holder, or else (``in_line``) its waiting writer.

    ``giving_up`` is the token of this caller's own shared lease, dropped in the same step
    (an upgrade). A grant keeps the fencing counter for ``fencing_memory_seconds`` (at
    least one lease). Returns the ``Attempt``; with ``batch`` the call is only added,
    and ``exclusive_attempt`` reads its reply.
    """
    reply = _run(
        connection,
        ACQUIRE_EXCLUSIVE,
        list(keys.every_key),
        [
            token,
            milliseconds(lease_seconds),
            description,
            keys.revoke_channel,
            milliseconds(fencing_memory_seconds),
            giving_up or "",
            "1" if in_line else "0",
        ],
        batch,
    )
    return reply if batch is not None else exclusive_attempt(reply)


def exclusive_attempt(reply: list[Any]) -> Attempt:
    """What an ``ACQUIRE_EXCLUSIVE`` reply says."""
    return Granted(fencing_token=int(reply[1])) if int(reply[0]) == 1 else _blocked(reply)


# KEYS[1] writer, KEYS[2] readers, KEYS[3] waiting_writers, KEYS[4] holders
# ARGV[1] token, ARGV[2] the released channel, to publish on when the lock may now be free
# Returns 1 if the token held the lock (as writer, or as a reader not yet pruned: no
# writer can have entered since), 0 if it had lost it. Also withdraws the token from
# the waiting writers, so it can abandon an attempt whose reply was lost.
RELEASE = (
    _WAKE_BY_PUBLISH
    + """
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
elseif redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  released = 1
end
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if released == 1 and redis.call('EXISTS', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) == 0 then
  wake_waiters(ARGV[2], 'released')
end
return released
"""
)


def release(connection: RedisConnection, keys: LockKeys, token: str, batch: ScriptBatch | None = None) -> Any:
    """Give up whatever ``token`` holds or waits for: 1 if it still held the lock, else 0.

    With ``batch`` the call is only added (its reply comes from ``batch.send()``).
    """
    return _run(
        connection,
        RELEASE,
        [keys.writer, keys.readers, keys.waiting_writers, keys.holders],
        [token, keys.released_channel],
        batch,
    )


# KEYS[1] writer, KEYS[2] readers, KEYS[3] holders
# ARGV[1] token, ARGV[2] lease (ms), ARGV[3] the holder's new description, ARGV[4] the
# released channel
# Returns 1 if the token held the lock alone and now holds it shared, with a fresh lease,
# or already holds it shared (a resend of a downgrade whose reply was lost); 0 (changing
# nothing) if it no longer held it; an error reply if the lease is out of range.
# Readers waiting for the writer are woken; a waiting writer, woken too, finds a reader
# in its way and asks for the lease back on the revoke channel, as with any kept lease.
DOWNGRADE = (
    _WAKE_BY_PUBLISH
    + _LUA_HELPERS
    + """
local lease = duration_ms(2)
if not lease then return refused(2) end
local now = now_ms()
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  local expires = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if expires and tonumber(expires) >= now then return 1 end
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
keep_alive(KEYS[2], lease)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
keep_alive(KEYS[3], lease)
wake_waiters(ARGV[4], 'downgraded')
return 1
"""
)


def downgrade(
    connection: RedisConnection,
    keys: LockKeys,
    token: str,
    lease_seconds: float,
    description: str,
    *,
    batch: ScriptBatch | None = None,
) -> Any:
    """Turn ``token``'s exclusive hold into a shared one: 1 if it still held the lock, else 0.

    With ``batch`` the call is only added.
    """
    return _run(
        connection,
        DOWNGRADE,
        [keys.writer, keys.readers, keys.holders],
        [token, milliseconds(lease_seconds), description, keys.released_channel],
        batch,
    )


# KEYS[1] waiting_writers, KEYS[2] holders
# ARGV[1] token of a writer that stops waiting, ARGV[2] the released channel
# Readers held back only by this writer may go on, so they are woken. Returns nothing.
CANCEL_WAIT = (
    _WAKE_BY_PUBLISH
    + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  wake_waiters(ARGV[2], 'cancelled')
end
"""
)


def cancel_wait(connection: RedisConnection, keys: LockKeys, token: str) -> None:
    """Withdraw a waiting writer, waking readers it held back."""
    _run(connection, CANCEL_WAIT, [keys.waiting_writers, keys.holders], [token, keys.released_channel], None)


# KEYS[1] writer, KEYS[2] readers, KEYS[3] holders
# ARGV[1] token, ARGV[2] lease (ms)
# Returns 1 if the lease was extended, 0 if the token no longer holds the lock; an error
# reply, having written nothing, if the lease is out of range.
EXTEND = (
    _LUA_HELPERS
    + """
local lease = duration_ms(2)
if not lease then return refused(2) end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], lease)
  keep_alive(KEYS[3], lease)
  return 1
end
local now = now_ms()
local expires = redis.call('ZSCORE', KEYS[2], ARGV[1])
if expires and tonumber(expires) >= now then
  redis.call('ZADD', KEYS[2], 'XX', now + lease, ARGV[1])
  keep_alive(KEYS[2], lease)
  keep_alive(KEYS[3], lease)
  return 1
end
return 0
"""
)


def extend(
    connection: RedisConnection,
    keys: LockKeys,
    token: str,
    lease_seconds: float,
    batch: ScriptBatch | None = None,
) -> Any:
    """Renew ``token``'s lease: 1 while it still holds the lock, 0 if not.

    With ``batch`` the call is only added (its reply comes from ``batch.send()``), so one
    round trip renews many leases.
    """
    return _run(
        connection,
        EXTEND,
        [keys.writer, keys.readers, keys.holders],
        [token, milliseconds(lease_seconds)],
        batch,
    )
