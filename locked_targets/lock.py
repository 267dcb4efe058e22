"""A Redis read/write lock with leases, token ownership, writer preference and woken waiters.

Invariants, all enforced atomically by the Lua scripts below:

- At any time a lock has either one exclusive holder (``writer`` key) or any number of
  shared holders (``readers`` sorted set), never both.
- Every holder owns a random token and a lease; only the owner of a token can renew or
  release it, and a holder that stops renewing (crashed, paused) loses the lock when its
  lease ends, so nobody waits on a dead process for longer than one lease.
- Once a writer waits (``waiting_writers``), no new reader is admitted, so a stream of
  readers cannot starve a writer. A waiting writer's place also has a lease.
- A release publishes on the lock's channel; waiters sleep on that channel (bounded by
  the blocking holder's remaining lease) instead of polling.
- A writer blocked by readers publishes on the lock's revoke channel, so processes that
  keep shared leases between reads (``shared_leases``) give them back at once.
- Every key carries a TTL no shorter than the longest live lease in it.

Time is the Redis server's (``TIME``), so clients on different machines agree on leases.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import redis

from locked_targets.errors import BackendUnavailable, LockTimeout
from locked_targets.keys import TARGET_NAMESPACE, LockKeys, lock_key_for
from locked_targets.lease import HeldLock, lease_keeper
from locked_targets.redis_backend import RedisBackend, await_subscription, backend_for
from locked_targets.redis_retry import with_redis_retries
from locked_targets.settings import Settings
from locked_targets.shared_leases import shared_leases_for
from locked_targets.waiting import WaitReporter

logger = logging.getLogger("locked_targets")
_HOST = socket.gethostname()

# Shared Lua helpers, prepended to each script.
_LUA_HELPERS = """
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


# The fencing counter outlives the lock by this long, so tokens keep growing across uses.
_FENCE_KEPT_MS = 30 * 24 * 3600 * 1000


@dataclasses.dataclass(frozen=True)
class _Attempt:
    """The outcome of one acquisition attempt."""

    blocked: tuple[float, str] | None = None
    """None when granted; else (seconds the blocker's lease has left, who blocks)."""

    fencing_token: int | None = None


class LockMode(enum.Enum):
    """Shared holders may overlap each other; an exclusive holder overlaps nobody."""

    SHARED = "read"
    EXCLUSIVE = "write"


class ReadWriteLock:
    """The lock of one cache file (or one task run): shared for readers, exclusive for writers."""

    # KEYS[1] writer, KEYS[2] readers, KEYS[3] waiting_writers, KEYS[4] holders
    # ARGV[1] token, ARGV[2] lease in ms, ARGV[3] description of the holder
    # Returns {1} when acquired, else {0, ms until the blocking lease ends, the blocker's
    # description, 'holds' or 'waits'} (a reader is also blocked by a waiting writer).
    # A reader is admitted when there is no writer and no live waiting writer.
    ACQUIRE_SHARED = (
        _LUA_HELPERS
        + """
local now = now_ms()
local lease = tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then  -- a retry of an attempt whose reply was lost
  redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
  keep_alive(KEYS[2], lease)
  return {1}
end
local writer = redis.call('GET', KEYS[1])
if writer then
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

    # KEYS[1..4] and ARGV[1..3] as ACQUIRE_SHARED; KEYS[5] the fencing counter;
    # ARGV[4] the channel that asks readers to give their shared leases back; ARGV[5] how
    # long the fencing counter outlives its last grant (ms).
    # Returns {1, fencing token} when acquired, else as ACQUIRE_SHARED.
    # A writer is admitted when there is no writer and no live reader; otherwise it
    # (re)registers as waiting, with a lease, which shuts out new readers. When readers
    # block it, it asks them (through ARGV[4]) to give back leases they keep between reads.
    ACQUIRE_EXCLUSIVE = (
        _LUA_HELPERS
        + """
local now = now_ms()
local lease = tonumber(ARGV[2])
local blocker = redis.call('GET', KEYS[1])
local wait_ms = 0
if blocker == ARGV[1] then  -- a retry of an attempt whose reply was lost
  redis.call('PEXPIRE', KEYS[1], lease)
  return {1, tonumber(redis.call('GET', KEYS[5]) or '0')}
end
if blocker then
  wait_ms = redis.call('PTTL', KEYS[1])
else
  prune(KEYS[2], KEYS[4], now)
  local reader = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #reader > 0 then
    blocker = reader[1]
    wait_ms = tonumber(reader[2]) - now
    redis.call('PUBLISH', ARGV[4], 'writer waiting')
  end
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
redis.call('SET', KEYS[5], string.format('%d', fence), 'PX', ARGV[5])
return {1, fence}
"""
    )

    # KEYS[1] writer, KEYS[2] readers, KEYS[3] waiting_writers, KEYS[4] holders
    # ARGV[1] token, ARGV[2] channel to publish on when the lock may now be free
    # Returns 1 if the token held the lock (as writer, or as a reader not yet pruned: no
    # writer can have entered since), 0 if it had lost it. Also withdraws the token from
    # the waiting writers, so it can abandon an attempt whose reply was lost.
    RELEASE = """
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
  redis.call('PUBLISH', ARGV[2], 'released')
end
return released
"""

    # KEYS[1] waiting_writers, KEYS[2] holders
    # ARGV[1] token of a writer that stops waiting, ARGV[2] channel
    # Readers held back only by this writer may go on, so they are woken. Returns nothing.
    CANCEL_WAIT = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('PUBLISH', ARGV[2], 'cancelled')
end
"""

    # KEYS[1] writer, KEYS[2] readers, KEYS[3] holders
    # ARGV[1] token, ARGV[2] lease in ms
    # Returns 1 if the lease was extended, 0 if the token no longer holds the lock.
    EXTEND = (
        _LUA_HELPERS
        + """
local lease = tonumber(ARGV[2])
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

    def __init__(
        self,
        backend: RedisBackend,
        keys: LockKeys,
        *,
        lease_seconds: float,
        renewal_interval: float,
        wait_timeout_seconds: float | None = None,
        task: str | None = None,
        keep_shared_leases_seconds: float = 0.0,
        redis_retry_seconds: float | None = None,
    ) -> None:
        self._backend = backend
        self._redis_retry_seconds = redis_retry_seconds
        self._keep_shared_leases_seconds = keep_shared_leases_seconds
        self.keys = keys
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self._renewal_interval = renewal_interval
        self._wait_timeout = wait_timeout_seconds
        self._task = task
        self._acquire_script = {
            LockMode.SHARED: backend.script(self.ACQUIRE_SHARED),
            LockMode.EXCLUSIVE: backend.script(self.ACQUIRE_EXCLUSIVE),
        }

    @classmethod
    def for_path(
        cls,
        path: str,
        settings: Settings,
        *,
        namespace: str = TARGET_NAMESPACE,
        task: str | None = None,
        wait_timeout_seconds: float | None,
    ) -> ReadWriteLock:
        """The lock of the cache file at ``path`` in ``namespace``, on the Redis of ``settings``."""
        if settings.redis_url is None:
            raise ValueError("locking is not configured: settings.redis_url is None")
        return cls(
            backend_for(settings.redis_url),
            lock_key_for(path, settings, namespace),
            lease_seconds=settings.lease_seconds,
            renewal_interval=settings.renewal_interval,
            wait_timeout_seconds=wait_timeout_seconds,
            task=task,
            keep_shared_leases_seconds=settings.shared_lease_idle_seconds,
            redis_retry_seconds=settings.redis_retry_seconds,
        )

    def shared(self) -> AbstractContextManager[HeldLock]:
        """Hold the lock as one of possibly many readers for the duration of a ``with`` block.

        With ``keep_shared_leases_seconds``, the process keeps the shared lease between
        reads (see ``shared_leases``), so repeated reads cost no round trip.
        """
        if self._keep_shared_leases_seconds > 0:
            leases = shared_leases_for(self._backend, self._keep_shared_leases_seconds)
            return leases.hold(self.keys.base, self._acquire_shared)
        return self._shared_once()

    def _acquire_shared(self) -> HeldLock:
        return self.acquire(LockMode.SHARED)

    @contextmanager
    def _shared_once(self) -> Iterator[HeldLock]:
        held = self.acquire(LockMode.SHARED)
        try:
            yield held
        finally:
            held.release()

    @contextmanager
    def exclusive(self) -> Iterator[HeldLock]:
        """Hold the lock alone for the duration of the block."""
        if self._keep_shared_leases_seconds > 0:  # a shared lease this process keeps would block us
            shared_leases_for(self._backend, self._keep_shared_leases_seconds).revoke(self.keys.base)
        held = self.acquire(LockMode.EXCLUSIVE)
        try:
            yield held
        finally:
            held.release()

    def acquire(self, mode: LockMode) -> HeldLock:
        """Take the lock in ``mode``, waiting (woken by releases) up to the wait timeout.

        With ``on_redis_error = wait``, a failing Redis is retried up to its deadline.
        """
        return with_redis_retries(
            lambda: self._acquire_once(mode),
            what=f"acquiring the {self._label(mode)} of {self.keys.path}",
            deadline_seconds=self._redis_retry_seconds,
        )

    def _acquire_once(self, mode: LockMode) -> HeldLock:
        token = secrets.token_hex(16)
        description = self._describe_holder(mode)
        started = time.monotonic()
        try:
            with self._backend.errors_translated():
                attempt = self._try_acquire(mode, token, description)
                granted_at = started
                if attempt.blocked is not None:
                    # The lease runs from when the winning attempt was sent, not from when waiting began.
                    granted_at, attempt = self._wait(mode, token, description, started, attempt.blocked)
        except BackendUnavailable:
            self._abandon(token)
            raise
        return self._register(mode, token, granted_at, attempt.fencing_token)

    def _abandon(self, token: str) -> None:
        """Undo an attempt whose reply may have been lost, so it leaves no ghost holder for a lease."""
        try:
            self._backend.script(self.RELEASE)(
                keys=self.keys.all_keys, args=[token, self.keys.released_channel]
            )
        except (redis.RedisError, OSError) as error:
            logger.debug("could not abandon an attempt on %s: %s", self.keys.path, error)

    def _try_acquire(self, mode: LockMode, token: str, description: str) -> _Attempt:
        """One attempt: granted (with the fencing token of an exclusive grant), or who blocks it."""
        reply: list[Any] = self._acquire_script[mode](
            keys=[*self.keys.all_keys, self.keys.fence],
            args=[token, self._lease_ms, description, self.keys.revoke_channel, _FENCE_KEPT_MS],
        )
        if int(reply[0]) == 1:
            return _Attempt(fencing_token=int(reply[1]) if len(reply) > 1 else None)
        return _Attempt(blocked=(max(0.001, int(reply[1]) / 1000), _readable_holder(reply[2], reply[3])))

    def _wait(
        self,
        mode: LockMode,
        token: str,
        description: str,
        started: float,
        blocked: tuple[float, str],
    ) -> tuple[float, _Attempt]:
        """Retry each time a release is published; return when the winning attempt was sent, and it."""
        kind = self._label(mode)
        reporter = WaitReporter(path=self.keys.path, lock=kind, started=started)
        pubsub = self._backend.client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self.keys.released_channel)
            await_subscription(pubsub)
            while True:
                attempt_at = time.monotonic()
                attempt = self._try_acquire(mode, token, description)
                if attempt.blocked is None:
                    return attempt_at, attempt
                lease_left, holder = attempt.blocked
                reporter.still_waiting(holder)
                timeout = min(lease_left, self._renewal_interval, reporter.seconds_to_next_report())
                if self._wait_timeout is not None:
                    remaining = started + self._wait_timeout - time.monotonic()
                    if remaining <= 0:
                        raise LockTimeout(
                            path=self.keys.path,
                            lock_key=self.keys.base,
                            lock=kind,
                            holder=holder,
                            waited_seconds=time.monotonic() - started,
                        )
                    timeout = min(timeout, remaining)
                pubsub.get_message(timeout=timeout)
        except BaseException:
            if mode is LockMode.EXCLUSIVE:
                self._cancel_wait(token)
            raise
        finally:
            pubsub.close()

    def _cancel_wait(self, token: str) -> None:
        # Best effort: if Redis is gone, the waiting place expires with its lease anyway,
        # and the error that ended the wait is the one the caller must see.
        try:
            self._backend.script(self.CANCEL_WAIT)(
                keys=[self.keys.waiting_writers, self.keys.holders],
                args=[token, self.keys.released_channel],
            )
        except (redis.RedisError, OSError) as error:
            logger.debug("could not withdraw a waiting writer of %s: %s", self.keys.path, error)

    def _register(self, mode: LockMode, token: str, started: float, fencing_token: int | None) -> HeldLock:
        held = HeldLock(
            fencing_token=fencing_token,
            redis_retry_seconds=self._redis_retry_seconds,
            keys=self.keys,
            mode=mode.value,
            token=token,
            backend=self._backend,
            lease_seconds=self._lease_ms / 1000,
            renewal_interval=self._renewal_interval,
            lease_started=started,
            release_script=self._backend.script(self.RELEASE),
            extend_script=self._backend.script(self.EXTEND),
        )
        lease_keeper().keep(held)
        return held

    def _label(self, mode: LockMode) -> str:
        """'read lock' or 'write lock' for a file, 'run lock' for a task run."""
        if self.keys.namespace == TARGET_NAMESPACE:
            return f"{mode.value} lock"
        return f"{self.keys.namespace} lock"

    def _describe_holder(self, mode: LockMode) -> str:
        return json.dumps(
            {
                "host": _HOST,
                "pid": os.getpid(),
                "task": self._task,
                "lock": self._label(mode),
                "since": time.time(),
            }
        )


def _readable_holder(description: bytes, relation: bytes) -> str:
    """'pid 12 on host h (task T, write lock since ...)' from a stored holder description."""
    try:
        fields = json.loads(description)
    except ValueError:
        return "a holder whose lease has just ended"
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(fields.get("since", 0))))
    task = f"task {fields['task']}, " if fields.get("task") else ""
    verb = "waiting for" if relation == b"waits" else "holding"
    return (
        f"pid {fields.get('pid')} on host {fields.get('host')} "
        f"({task}{verb} the {fields.get('lock')} since {since})"
    )
