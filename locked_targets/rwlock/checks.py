"""Trying a lock service out before a first run: the lock's scripts and channels, and the server's facts.

For ``locked-targets doctor``, which turns these facts into advice (the version and eviction
policy that the start-up checks read are theirs: ``server_checks``). The trials run the very
scripts a lock runs (through their functions in ``scripts``) and the pub/sub commands its
waiters and kept shared leases use, so an ACL that refuses any of them is caught before a
pipeline meets it. They write only to a scratch lock of their own under the key prefix
(``<key_prefix>{doctor-<hex>}``), whose leases last a few seconds, and remove its keys at
the end: no real lock is touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import re
import uuid
from collections.abc import Callable
from typing import Any

import redis
from redis.cluster import RedisCluster

from locked_targets.rwlock import scripts
from locked_targets.rwlock.clock import SYSTEM_CLOCK, Clock
from locked_targets.rwlock.connection import RedisConnection
from locked_targets.rwlock.holders import describe_holder
from locked_targets.rwlock.keys import REVOKE_CHANNEL_PATTERN, LockKeys
from locked_targets.rwlock.subscription import subscription_to

SCRATCH_LEASE_SECONDS = 5.0
"""The scratch lock's leases and fencing memory: whatever a trial leaves behind expires this soon."""
CLUSTER_SLOTS = 16384

# How a Redis server words a refusal by its ACL. A refused EVALSHA, or any refused command
# outside a script, is a NOPERM error; 6.2 words a refusal inside a script as a script error.
_REFUSED_IN_SCRIPT = "The user executing the script can't"
_NAMED_COMMAND = re.compile(r"'([^']+)' command")
# The commands a script calls, as its source spells them.
_CALLED_COMMAND = re.compile(r"redis\.call\('([A-Z]+)'")


@dataclasses.dataclass(frozen=True)
class Trial:
    """One thing a lock does, tried on the scratch lock, and how the server answered."""

    name: str
    """A script's name (``ACQUIRE_SHARED``), or a pub/sub command (``PUBLISH``)."""
    commands: tuple[str, ...]
    """The commands it sends, or that its script calls, in upper case (``SCRIPT|LOAD``: a subcommand)."""
    pattern: str | None = None
    """The channel pattern it subscribes to: an ACL allows a pattern only if it lists it literally."""
    error: str | None = None
    """What the server answered if it did not do it; None if it did."""
    refusal: Refusal | None = None
    """What the ACL refused; None if nothing was refused (``error`` may still say another failure)."""
    refused_commands: tuple[str, ...] = ()
    """For a refused command: the one the server named, else every command it may have been."""


class Refusal(enum.Enum):
    """What a server's ACL refused a trial: a command, a key or a channel."""

    COMMAND = "command"
    KEY = "key"
    CHANNEL = "channel"


def lock_trials(connection: RedisConnection, key_prefix: str) -> list[Trial]:
    """Load and run every lock script, publish and subscribe as locks do, on a scratch lock; each outcome.

    Failures to reach the server raise ``BackendUnavailable``; everything the server refuses
    or answers with an error is an outcome.
    """
    scratch = f"{key_prefix}{{doctor-{uuid.uuid4().hex}}}"
    keys = LockKeys(path=f"locked-targets doctor's scratch lock {scratch}", base=scratch)
    with connection.errors_translated():
        try:
            return [
                _script_loading(connection),
                *_scripts_run(connection, keys),
                *_pub_sub_trials(connection, keys),
            ]
        finally:
            # A user the ACL keeps from these keys cannot delete them either: they expire in seconds.
            with contextlib.suppress(redis.ResponseError):
                connection.client.delete(*keys.every_key)


# Each script the lock runs, by the name of its source in ``scripts``.
_SCRIPTS = {
    "ACQUIRE_SHARED": scripts.ACQUIRE_SHARED,
    "ACQUIRE_EXCLUSIVE": scripts.ACQUIRE_EXCLUSIVE,
    "RELEASE": scripts.RELEASE,
    "EXTEND": scripts.EXTEND,
    "CANCEL_WAIT": scripts.CANCEL_WAIT,
    "DOWNGRADE": scripts.DOWNGRADE,
}


def _script_loading(connection: RedisConnection) -> Trial:
    """SCRIPT LOAD of every script: what a lock does when the server forgot them (a restart)."""

    def load_every_script() -> None:
        for source in _SCRIPTS.values():
            connection.client.script_load(source)

    return _tried("SCRIPT LOAD", ("SCRIPT|LOAD",), load_every_script)


def _scripts_run(connection: RedisConnection, keys: LockKeys) -> list[Trial]:
    """Every script, in an order that takes each through its main path: a reader, a writer in line, ..."""
    reader, writer = uuid.uuid4().hex, uuid.uuid4().hex
    lease = SCRATCH_LEASE_SECONDS
    description = describe_holder(
        path=keys.path, task=None, lock="doctor's scratch lock", since=SYSTEM_CLOCK.wall()
    )

    def acquire_exclusive() -> Any:
        return scripts.acquire_exclusive(
            connection, keys, writer, lease, description, fencing_memory_seconds=lease
        )

    steps: list[tuple[str, Callable[[], object]]] = [
        ("ACQUIRE_SHARED", lambda: scripts.acquire_shared(connection, keys, reader, lease, description)),
        ("EXTEND", lambda: scripts.extend(connection, keys, reader, lease)),
        ("ACQUIRE_EXCLUSIVE", acquire_exclusive),  # blocked by the reader: waits in line, asks for it back
        ("CANCEL_WAIT", lambda: scripts.cancel_wait(connection, keys, writer)),
        ("RELEASE", lambda: scripts.release(connection, keys, reader)),
        ("ACQUIRE_EXCLUSIVE", acquire_exclusive),  # granted now
        ("DOWNGRADE", lambda: scripts.downgrade(connection, keys, writer, lease, description)),
        ("RELEASE", lambda: scripts.release(connection, keys, writer)),
    ]
    outcomes: dict[str, Trial] = {}
    for name, step in steps:
        outcome = _tried(name, ("EVALSHA", *_called_commands(_SCRIPTS[name])), step)
        if outcome.error is not None or name not in outcomes:
            outcomes[name] = outcome  # a script's first refusal, else its first outcome
    return list(outcomes.values())


def _called_commands(source: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_CALLED_COMMAND.findall(source)))


def _pub_sub_trials(connection: RedisConnection, keys: LockKeys) -> list[Trial]:
    """Publish and listen as a lock does: wake-ups by SPUBLISH/SSUBSCRIBE where the connection's
    pub/sub is sharded (a Redis 7+ cluster), else PUBLISH/SUBSCRIBE; revocations always classic."""
    sharded = connection.sharded_pubsub
    publish, subscribe = ("SPUBLISH", "SSUBSCRIBE") if sharded else ("PUBLISH", "SUBSCRIBE")

    def wake() -> None:
        (connection.client.spublish if sharded else connection.client.publish)(
            keys.released_channel, "doctor"
        )

    trials = [_tried(publish, (publish,), wake)]
    if sharded:  # writers ask for kept shared leases back by classic PUBLISH on every server
        trials.append(
            _tried("PUBLISH", ("PUBLISH",), lambda: connection.client.publish(keys.revoke_channel, "doctor"))
        )
    return [
        *trials,
        _tried(subscribe, (subscribe,), lambda: _subscribe(connection, keys.released_channel, pattern=False)),
        _tried(
            "PSUBSCRIBE",
            ("PSUBSCRIBE",),
            lambda: _subscribe(connection, REVOKE_CHANNEL_PATTERN, pattern=True),
            pattern=REVOKE_CHANNEL_PATTERN,
        ),
    ]


def _subscribe(connection: RedisConnection, channel: str, *, pattern: bool) -> None:
    """Listen as waiters and kept shared leases do; a refusal arrives as the confirmation would."""
    subscription_to(connection, channel, pattern=pattern).close()


def _tried(
    name: str, commands: tuple[str, ...], attempt: Callable[[], object], pattern: str | None = None
) -> Trial:
    trial = Trial(name=name, commands=commands, pattern=pattern)
    try:
        attempt()
    except redis.ResponseError as error:
        return _refused(trial, error)
    return trial


def _refused(trial: Trial, error: redis.ResponseError) -> Trial:
    """``trial`` with the server's error, and what its ACL refused if that is what it was."""
    message = str(error)
    refused = dataclasses.replace(trial, error=message)
    if not (isinstance(error, redis.exceptions.NoPermissionError) or _REFUSED_IN_SCRIPT in message):
        return refused
    named = _NAMED_COMMAND.search(message)
    if named is not None:
        command = named[1].upper()
        matching = tuple(known for known in trial.commands if known.split("|")[0] == command.split("|")[0])
        return dataclasses.replace(refused, refusal=Refusal.COMMAND, refused_commands=matching or (command,))
    if "channel" in message:
        return dataclasses.replace(refused, refusal=Refusal.CHANNEL)
    if "key" in message:
        return dataclasses.replace(refused, refusal=Refusal.KEY)
    # Refused inside a script without a name: any command the script calls.
    return dataclasses.replace(
        refused, refusal=Refusal.COMMAND, refused_commands=tuple(c for c in trial.commands if c != "EVALSHA")
    )


@dataclasses.dataclass(frozen=True)
class Durability:
    """What of its data a Redis server keeps across a restart."""

    address: str
    """Which server (on a cluster, which master)."""
    append_only: bool
    """Whether it writes every change to its append-only file (``INFO persistence``)."""
    snapshot_schedule: str | None
    """Its RDB ``save`` schedule ('' for none), or None when it would not say (``CONFIG GET`` refused)."""


def durability(connection: RedisConnection) -> list[Durability]:
    """Whether each server that keeps locks (every master of a cluster) keeps an append-only file, and its
    snapshot schedule where it tells it."""
    kept = []
    with connection.errors_translated():
        for address, client in connection.primaries():
            persistence: dict[str, Any] = client.info("persistence")
            try:
                schedule: str | None = str(client.config_get("save").get("save", ""))
            except redis.ResponseError:  # CONFIG refused by the ACL, or renamed away by a managed service
                schedule = None
            kept.append(
                Durability(
                    address=address,
                    append_only=persistence.get("aof_enabled") == 1,
                    snapshot_schedule=schedule,
                )
            )
    return kept


@dataclasses.dataclass(frozen=True)
class SlotCoverage:
    """How much of a Redis Cluster's key space its nodes serve (``CLUSTER INFO``)."""

    state: str
    slots_assigned: int
    slots_ok: int

    @property
    def complete(self) -> bool:
        return self.state == "ok" and self.slots_ok == CLUSTER_SLOTS


def slot_coverage(connection: RedisConnection) -> SlotCoverage | None:
    """The cluster's slot coverage, or None for a server that is not in a cluster (``INFO cluster``)."""
    with connection.errors_translated():
        client = connection.client
        info: dict[str, Any]
        if isinstance(client, RedisCluster):
            info = client.cluster_info(target_nodes=RedisCluster.RANDOM)
        elif client.info("cluster").get("cluster_enabled") != 1:
            return None
        else:
            info = client.cluster("INFO")
    return SlotCoverage(
        state=str(info.get("cluster_state")),
        slots_assigned=int(info.get("cluster_slots_assigned", 0)),
        slots_ok=int(info.get("cluster_slots_ok", 0)),
    )


@dataclasses.dataclass(frozen=True)
class ClockOffset:
    """How far this host's clock is from the server's (``TIME``), and how precisely that is known."""

    seconds: float
    """Positive: the server's clock is ahead of this host's."""
    uncertainty_seconds: float
    """Half the round trip: the server read its clock somewhere within it."""


def clock_offset(connection: RedisConnection, clock: Clock = SYSTEM_CLOCK) -> ClockOffset:
    """The server's ``TIME`` less this host's clock at the middle of the round trip."""
    with connection.errors_translated():
        sent = clock.wall()
        seconds, microseconds = connection.client.time()
        received = clock.wall()
    return ClockOffset(
        seconds=seconds + microseconds / 1e6 - (sent + received) / 2,
        uncertainty_seconds=(received - sent) / 2,
    )
