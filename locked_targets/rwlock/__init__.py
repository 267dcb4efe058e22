"""The lock core: a Redis read/write lock with leases, fencing tokens and kept shared leases.

It knows nothing of gokart, luigi or storage: it locks ``LockKeys`` on a
``RedisConnection``. Modules, from the bottom up: ``clock``, ``keys``, ``telemetry``
(metrics and spans), ``redis_urls`` (checking a ``redis_url``), ``error_replies`` (what an
error reply means), ``connection`` (the client and its error translation), ``script_batch``
and ``subscription`` (script calls sent together, listening to a lock's channels), ``scripts``
(the Lua protocol), ``retry``,
``holders``, ``waiting``, ``releases`` (sent in the background), ``lease`` (held locks and
their renewal), ``shared_leases`` (kept between reads), ``taken_ahead`` (a task's write
locks, taken together), ``inspection`` and ``checks`` (looking at locks from outside, for
the command line), ``server_checks`` (whether a lock service can keep locks, checked once
per process before its first lock there) and ``lock`` (``ReadWriteLock``). Every duration is
in seconds.
"""

from locked_targets.rwlock.clock import SYSTEM_CLOCK, Clock
from locked_targets.rwlock.connection import RedisConnection
from locked_targets.rwlock.keys import LockKeys
from locked_targets.rwlock.lease import HeldLock, LeaseTerms, LockMode
from locked_targets.rwlock.lock import ReadWriteLock, keep_shared_ahead, take_ahead
from locked_targets.rwlock.redis_urls import redis_address
from locked_targets.rwlock.shared_leases import SharedLeases
from locked_targets.rwlock.taken_ahead import taken_ahead

__all__ = [
    "SYSTEM_CLOCK",
    "Clock",
    "HeldLock",
    "LeaseTerms",
    "LockKeys",
    "LockMode",
    "ReadWriteLock",
    "RedisConnection",
    "SharedLeases",
    "keep_shared_ahead",
    "redis_address",
    "take_ahead",
    "taken_ahead",
]
