"""Start-up checks of a lock service, once per process and service: can this Redis keep locks?

A Redis whose ``maxmemory-policy`` lets it evict keys gives a held lock away when its memory
runs short, and one older than 5.0 cannot run the lock's scripts. A process reads both facts
from one ``INFO`` per server (on a cluster, per master: each keeps the locks of its slots;
``server_facts``; never ``CONFIG``, which managed services block) the first time it
builds a lock on a service, remembers them while it lives once they pass, and judges every
new lock by them without a round trip: acquisitions never pay for the check. A
server refused is asked again at the next new lock, so an operator's fix needs no restart. A
forked child has connections of its own and reads the facts again, once.

- A policy other than ``noeviction`` raises ``ConfigurationError``, unless the setting
  ``allow_eviction`` accepts the risk: then one WARNING per process and service says what it is.
- A server too old for the scripts raises ``ConfigurationError`` naming its version.
- A user whose ACL refuses ``INFO`` (a lock needs none) is not failed: one INFO line per
  process and service says the checks were skipped, and how to have them made.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import redis

from locked_targets.errors import ConfigurationError
from locked_targets.process_state import Once, ProcessLocal
from locked_targets.rwlock.connection import RedisConnection
from locked_targets.rwlock.retry import with_redis_retries

logger = logging.getLogger(__name__)

SCRIPTS_NEED_VERSION = (5, 0)
"""The oldest Redis that runs the lock's scripts. They write after reading the server's clock
(``TIME``), which a script may do only from 5.0 on, where scripts replicate their effects;
before, Redis refuses the write ("Write commands not allowed after non deterministic commands").
Every other command they call is older (``ZADD XX``: 3.0.2)."""

EVICTION_FREE_POLICY = "noeviction"
"""The one ``maxmemory-policy`` under which Redis evicts no key: an evicted lock key is a lock given away."""


@dataclasses.dataclass(frozen=True)
class ServerFacts:
    """What a Redis server tells of itself that decides whether it can keep locks."""

    version: str | None
    """``redis_version`` (``7.0.15``); None if the server did not say."""
    maxmemory_policy: str | None
    """``noeviction``, ``allkeys-lru``, ...; None if the server did not say (a proxy may not)."""
    address: str | None = None
    """Which server told them (on a cluster, which master); None when not known."""

    @classmethod
    def from_info(cls, info: dict[str, Any], address: str | None = None) -> ServerFacts:
        """The facts of a server from its ``INFO`` reply (as redis-py parses it)."""
        version, policy = info.get("redis_version"), info.get("maxmemory_policy")
        return cls(
            version=None if version is None else str(version),
            maxmemory_policy=policy if isinstance(policy, str) else None,
            address=address,
        )

    @property
    def major_minor(self) -> tuple[int, int] | None:
        """The version's first two numbers, ``(7, 0)``; None if it has none to read."""
        parts = (self.version or "").split(".")
        if len(parts) < 2 or not all(part.isdigit() for part in parts[:2]):
            return None
        return int(parts[0]), int(parts[1])


def server_facts(connection: RedisConnection) -> list[ServerFacts] | None:
    """The version and eviction policy of each server that keeps locks (every master of a cluster),
    from one ``INFO`` each (never ``CONFIG``, which managed services block); None when the ACL refuses
    ``INFO`` to the user, which a lock does not need.

    Failures to reach a server raise ``BackendUnavailable``.
    """
    with connection.errors_translated():
        try:
            return [
                ServerFacts.from_info(client.info(), address) for address, client in connection.primaries()
            ]
        except redis.exceptions.NoPermissionError:
            return None


# What each connection's server told (None: its ACL refused INFO) once it passed, per process.
_facts: ProcessLocal[dict[RedisConnection, list[ServerFacts] | None]] = ProcessLocal(dict)
_told = Once()
# The services each passed, with the allow_eviction they passed under, per process: a new lock on
# one of them then costs a lookup, not a judgement of every master's facts again.
_passed: ProcessLocal[set[tuple[RedisConnection, bool]]] = ProcessLocal(set)


def ensure_fit_for_locks(
    connection: RedisConnection,
    *,
    setting: str,
    allow_eviction: bool,
    redis_retry_deadline_seconds: float | None,
) -> None:
    """Raise ``ConfigurationError`` if a server of ``connection`` (any master of a cluster) cannot keep locks.

    ``setting`` is the setting whose URL named the server, for the message. The servers are
    asked until it passes, then never again; one that cannot be reached raises
    ``BackendUnavailable``, retried as an acquisition is for ``redis_retry_deadline_seconds``
    (None: at once).
    """
    passed = _passed.get()
    if (connection, allow_eviction) in passed:
        return
    remembered = _facts.get()
    if connection in remembered:
        facts = remembered[connection]
    else:
        facts = with_redis_retries(
            lambda: server_facts(connection),
            what=f"checking the lock service at {connection.address}",
            redis_retry_deadline_seconds=redis_retry_deadline_seconds,
        )
    if facts is None:
        _tell_once(
            connection.address,
            logging.INFO,
            "the ACL of its user refuses INFO. A lock needs no INFO; add +info to the user's rules to "
            "have the server checked when a process starts locking on it",
        )
    else:
        for each in facts:
            _judge(each, connection, setting=setting, allow_eviction=allow_eviction)
    # Only what passed: a server refused is asked again at the next lock, so fixing it needs no restart.
    remembered[connection] = facts
    passed.add((connection, allow_eviction))


def _judge(facts: ServerFacts, connection: RedisConnection, *, setting: str, allow_eviction: bool) -> None:
    """Raise ``ConfigurationError`` if ``facts`` say their server cannot keep locks; log what must be said."""
    address = facts.address or connection.address
    too_old = version_problem(facts)
    if too_old is not None:
        raise ConfigurationError(setting, connection.shown_url, f"the server at {address} {too_old}")
    policy = facts.maxmemory_policy
    if policy is None:
        _tell_once(
            address,
            logging.INFO,
            f"its INFO does not tell its maxmemory-policy: make sure it is {EVICTION_FREE_POLICY}, since an "
            "evicted lock key is a held lock given away",
        )
    elif policy != EVICTION_FREE_POLICY:
        if not allow_eviction:
            raise ConfigurationError(setting, connection.shown_url, _eviction_refusal(address, policy))
        if _told.first_time((address, "eviction allowed")):
            logger.warning(
                "locked_targets: the lock service at %s has maxmemory-policy %s, and allow_eviction = true "
                "accepts it: %s. The write-once commit still keeps each output whole and written once where "
                "the storage enforces create-if-absent; not covered: a task may be computed twice under the "
                "run lock, and a remove() may overlap a load()",
                address,
                policy,
                _eviction_harm(policy),
            )


def version_problem(facts: ServerFacts) -> str | None:
    """Why a server of ``facts.version`` cannot run the lock's scripts; None if it can or did not say."""
    version = facts.major_minor
    if version is None or version >= SCRIPTS_NEED_VERSION:
        return None
    needed = ".".join(map(str, SCRIPTS_NEED_VERSION))
    return (
        f"runs Redis {facts.version}, and the lock's scripts need Redis {needed} or newer: they write "
        f"after reading the server's clock (TIME), which Redis lets a script do from {needed} on. Upgrade "
        "the server (locked_targets is tested on 6.2 and 7)"
    )


def _eviction_harm(policy: str) -> str:
    """What a policy other than noeviction does to locks."""
    if policy.startswith("volatile-"):
        evicts = "it evicts keys that have a TTL, and every lock key has one"
    else:
        evicts = "it may evict any key, a lock's among them"
    return (
        f"when its memory runs short {evicts}, and an evicted lock key is a held lock given to the next taker"
    )


def _eviction_refusal(address: str, policy: str) -> str:
    return (
        f"the server at {address} has maxmemory-policy {policy}: {_eviction_harm(policy)}. "
        f"Set maxmemory-policy {EVICTION_FREE_POLICY} on the server (in redis.conf, with CONFIG SET, or in "
        "a managed service's parameters); or, to accept that risk, set allow_eviction = true in "
        "[locked_targets], and locking goes on with one WARNING per process"
    )


def _tell_once(address: str, level: int, why: str) -> None:
    """Log, once per process and server, that the server at ``address`` was not checked, and ``why``."""
    if _told.first_time((address, why)):
        logger.log(level, "locked_targets: the lock service at %s was not checked: %s", address, why)
