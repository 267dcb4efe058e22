"""``locked-targets doctor``: whether a lock service and the cache's storage are fit for locking, and the fix.

Each check ends ok, info (neither good nor bad, such as whether TLS is used), skipped
(nothing to check), warning or problem, with what it saw and, unless ok, what to do. A
problem makes the command exit 1; warnings alone do not.

Nothing real is changed: the lock service is tried on a scratch lock (``checks``), and
each storage with scratch files or objects named ``.locked_targets-doctor-<hex>``, next to
the cache, removed afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gokart
import redis
from redis.cluster import RedisCluster
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from locked_targets.cli.report import HEALTHY_ROLE
from locked_targets.errors import BackendUnavailable, CommitRefused, ConfigurationError
from locked_targets.rwlock import RedisConnection
from locked_targets.rwlock.checks import (
    CLUSTER_SLOTS,
    Durability,
    Refusal,
    Trial,
    clock_offset,
    durability,
    lock_trials,
    slot_coverage,
)
from locked_targets.rwlock.connection import CLUSTER_ACL_RULE, SHARDED_PUBSUB_ACL_RULE
from locked_targets.rwlock.inspection import ServerHealth, glob_escaped, server_health
from locked_targets.rwlock.server_checks import EVICTION_FREE_POLICY, ServerFacts, version_problem
from locked_targets.settings import Settings
from locked_targets.storage import storage_kind_for
from locked_targets.storage.local import _NO_HARD_LINKS
from locked_targets.storage.staging import STAGING_PREFIX

SCRATCH_PREFIX = f"{STAGING_PREFIX}doctor-"
"""What every scratch file or object doctor writes is named after: never a cache file's name."""
OLDEST_TESTED_VERSION = (6, 2)
CLOCK_OFFSET_WARNING_SECONDS = 1.0
# What a restart that forgets every lock leaves covered, said by the persistence check.
_AFTER_A_RESTART = (
    "Holders learn of it at their next renewal (LockLost); until then another application may take "
    "the same lock. The write-once commit still keeps each output written once and whole where the "
    "storage enforces create-if-absent (the storage checks); not covered meanwhile: a task may be "
    "computed twice under the run lock, and a remove() may overlap a load()"
)


class Status(str, enum.Enum):
    """How a check ended."""

    OK = "ok"
    INFO = "info"
    SKIPPED = "skipped"
    WARNING = "warning"
    PROBLEM = "problem"


_STATUS_STYLES = {
    Status.OK: "green",
    Status.INFO: "cyan",
    Status.SKIPPED: "dim",
    Status.WARNING: "yellow",
    Status.PROBLEM: "bold red",
}


@dataclasses.dataclass(frozen=True)
class Check:
    """One check's outcome: what it looked at, what it saw, and what to do about it."""

    subject: str
    """The lock service (its URL, without password) or the storage path it checked."""
    name: str
    status: Status
    detail: str
    fix: str | None = None
    server: str | None = None
    """For a check of one server of the lock service (on a cluster, one per master): its address."""


def doctor_checks(
    connections: Sequence[RedisConnection], settings: Settings, paths: Sequence[str]
) -> list[Check]:
    """Every check of each lock service, then of the storage of each path."""
    return [
        check for connection in connections for check in lock_service_checks(connection, settings.key_prefix)
    ] + [storage_check(path, settings) for path in dict.fromkeys(paths)]


def lock_service_checks(connection: RedisConnection, key_prefix: str) -> list[Check]:
    """Connection, TLS, version, role, eviction policy, persistence (each master's, on a cluster), clock,
    Cluster, ACL: one lock service's."""
    check = functools.partial(Check, connection.shown_url)
    tls = _tls_check(connection, check)
    try:
        with connection.errors_translated():
            connection.client.ping()
    except (BackendUnavailable, ConfigurationError) as error:
        return [
            check(
                "connection",
                Status.PROBLEM,
                str(error),
                f"check the host, port, password and TLS of {connection.setting}",
            ),
            tls,
        ]
    trials = lock_trials(connection, key_prefix)
    kept = {each.address: each for each in durability(connection)}
    per_server = [
        each
        for health in server_health(connection)
        for each in _server_checks(health, kept[health.address], connection.setting, check)
    ]
    return [
        check("connection", Status.OK, f"Redis at {connection.address} answered"),
        tls,
        *per_server,
        _clock_check(connection, check),
        _cluster_check(connection, check),
        _permission_check(
            "scripts",
            [trial for trial in trials if trial.name not in _PUB_SUB],
            connection,
            key_prefix,
            check,
        ),
        _permission_check(
            "channels", [trial for trial in trials if trial.name in _PUB_SUB], connection, key_prefix, check
        ),
    ]


_PUB_SUB = ("PUBLISH", "SUBSCRIBE", "PSUBSCRIBE", "SPUBLISH", "SSUBSCRIBE")
_CheckOf = Callable[..., Check]


def _server_checks(health: ServerHealth, kept: Durability, setting: str, check: _CheckOf) -> list[Check]:
    """Version, role, eviction policy and persistence of one server (on a cluster, of one master)."""
    of_server = functools.partial(check, server=health.address)
    return [
        _version_check(health, of_server),
        _role_check(health.role, setting, of_server),
        _eviction_check(health.maxmemory_policy, of_server),
        _persistence_check(kept, of_server),
    ]


def _tls_check(connection: RedisConnection, check: _CheckOf) -> Check:
    client = connection.client
    if isinstance(client, RedisCluster):
        client = client.get_redis_connection(client.get_default_node())  # type: ignore[no-untyped-call]
    pool = client.connection_pool
    if not issubclass(pool.connection_class, redis.connection.SSLConnection):
        return check(
            "tls",
            Status.INFO,
            "not in use: commands, lock descriptions and the password cross the network unencrypted",
        )
    verified = pool.connection_kwargs.get("ssl_cert_reqs", "required")
    return check("tls", Status.INFO, f"in use (rediss://); the server's certificate is checked: {verified}")


def _judged(
    check: _CheckOf,
    name: str,
    *,
    healthy: bool,
    seen: str,
    harm: str,
    fix: str,
    status: Status = Status.PROBLEM,
) -> Check:
    """What a check saw: ok if ``healthy``, else ``status`` with the harm it does and the fix."""
    if healthy:
        return check(name, Status.OK, seen)
    return check(name, status, f"{seen}: {harm}", fix)


def _version_check(health: ServerHealth, check: _CheckOf) -> Check:
    facts = ServerFacts(version=health.version, maxmemory_policy=health.maxmemory_policy)
    major_minor = facts.major_minor
    oldest = ".".join(map(str, OLDEST_TESTED_VERSION))
    return _judged(
        check,
        "version",
        healthy=major_minor is not None and major_minor >= OLDEST_TESTED_VERSION,
        seen=f"Redis {health.version or 'of an unknown version'}",
        harm=version_problem(facts)
        or f"older than {oldest}, the oldest the lock is tested on: `ls` finds locks by SCAN TYPE (6.0), "
        "and ACL users (6.0) and channel permissions (6.2) are how a shared server keeps other users off "
        "the locks",
        fix=f"upgrade the server to Redis {oldest} or newer",
    )


def _role_check(role: str | None, setting: str, check: _CheckOf) -> Check:
    return _judged(
        check,
        "role",
        healthy=role == HEALTHY_ROLE,
        seen=str(role),
        harm="a replica refuses the lock's writes (READONLY), and locks must be taken where replicas follow",
        fix=f"point {setting} at the master",
    )


def _eviction_check(policy: str | None, check: _CheckOf) -> Check:
    return _judged(
        check,
        "maxmemory_policy",
        healthy=policy == EVICTION_FREE_POLICY,
        seen=f"{policy} (INFO memory)",
        harm="when memory runs short Redis may evict a lock's keys, which gives a held lock away to the "
        "next application",
        fix=f"set maxmemory-policy {EVICTION_FREE_POLICY} (in redis.conf, or CONFIG SET maxmemory-policy "
        f"{EVICTION_FREE_POLICY})",
    )


def _persistence_check(kept: Durability, check: _CheckOf) -> Check:
    if kept.append_only:
        return check("persistence", Status.OK, "append-only file on: a restart keeps the locks")
    if kept.snapshot_schedule is None:
        seen = "no append-only file, and the snapshot schedule is not known (CONFIG GET refused)"
    elif kept.snapshot_schedule:
        seen = (
            f"RDB snapshots only (save {kept.snapshot_schedule}): a restart forgets the locks taken "
            "since the last snapshot"
        )
    else:
        seen = "none (INFO persistence): a restart forgets every lock"
    return check(
        "persistence",
        Status.WARNING,
        f"{seen}. {_AFTER_A_RESTART}",
        "to keep locks across a restart, turn on the append-only file (appendonly yes)",
    )


def _clock_check(connection: RedisConnection, check: _CheckOf) -> Check:
    offset = clock_offset(connection)
    direction = "ahead of" if offset.seconds > 0 else "behind"
    return _judged(
        check,
        "clock_offset",
        healthy=abs(offset.seconds) - offset.uncertainty_seconds <= CLOCK_OFFSET_WARNING_SECONDS,
        seen=f"Redis's clock is {abs(offset.seconds):.3f} s (± {offset.uncertainty_seconds:.3f} s) "
        f"{direction} this host's",
        harm="leases are counted on Redis's clock, but holders' 'since' and the records of breaks on their "
        "own, so times shown do not line up",
        fix="keep both clocks synchronized (NTP: chrony or ntpd), slewed rather than stepped",
        status=Status.WARNING,
    )


def _cluster_check(connection: RedisConnection, check: _CheckOf) -> Check:
    coverage = slot_coverage(connection)
    if coverage is None:
        return check("cluster_slots", Status.SKIPPED, "not a cluster")
    return _judged(
        check,
        "cluster_slots",
        healthy=coverage.complete,
        seen=f"{coverage.slots_ok} of {CLUSTER_SLOTS} slots served, cluster state {coverage.state}",
        harm="a lock whose hash tag falls in a slot nobody serves cannot be taken",
        fix="assign every slot to a master (redis-cli --cluster fix)",
    )


def _permission_check(
    name: str, trials: Sequence[Trial], connection: RedisConnection, key_prefix: str, check: _CheckOf
) -> Check:
    """One check over trials on the scratch lock: ok if every one went through."""
    failed = [trial for trial in trials if trial.error is not None]
    tried = ", ".join(dict.fromkeys(trial.name for trial in trials))
    if not failed:
        return check(name, Status.OK, f"{tried} went through on a scratch lock under {key_prefix!r}")
    refused_with: dict[str | None, list[str]] = {}
    for trial in failed:
        refused_with.setdefault(trial.error, []).append(trial.name)
    rules = " ".join(dict.fromkeys(rule for trial in failed for rule in _acl_rules(trial, key_prefix)))
    if rules and connection.is_cluster:  # what redis-py's cluster client sends, and sharded pub/sub
        rules += f" (and, as on every cluster, {CLUSTER_ACL_RULE}"
        rules += f" {SHARDED_PUBSUB_ACL_RULE})" if connection.sharded_pubsub else ")"
    # Redis 6.2 does not name a command it refuses inside a script: any the script calls may be it.
    unnamed = any(len(trial.refused_commands) > 1 for trial in failed)
    return check(
        name,
        Status.PROBLEM,
        "; ".join(f"{', '.join(names)} refused: {error}" for error, names in refused_with.items()),
        (f"add to the ACL user of {connection.setting}: {rules}" if rules else "see what the server answered")
        + (" (those it lacks: the server did not say which command it refused)" if unnamed else ""),
    )


def _acl_rules(trial: Trial, key_prefix: str) -> list[str]:
    """The ACL rules that would let ``trial`` through; none for a failure the ACL did not cause."""
    if trial.refusal is Refusal.COMMAND:
        return [f"+{command.lower()}" for command in trial.refused_commands]
    if trial.refusal is Refusal.KEY:
        return [f"~{glob_escaped(key_prefix)}*"]
    if trial.refusal is Refusal.CHANNEL:
        return [f"&{trial.pattern}" if trial.pattern else f"&{glob_escaped(key_prefix)}*"]
    return []


def storage_check(path: str, settings: Settings) -> Check:
    """Whether the storage of ``path`` refuses to replace an existing file, as the write-once commit needs."""
    kind = storage_kind_for(path).name
    if kind == "s3":
        return _object_store_check(path, _s3(settings))
    if kind == "gcs":
        return _object_store_check(path, _gcs(settings))
    return _hard_link_check(path)


def _scratch_name() -> str:
    return f"{SCRATCH_PREFIX}{uuid.uuid4().hex}"


def _existing_directory(path: str) -> str:
    """Where a cache at ``path`` lives: ``path``, the file's directory, or the nearest that exists."""
    directory = os.path.abspath(path)
    if os.path.isfile(directory):
        return os.path.dirname(directory)
    while not os.path.isdir(directory):
        directory = os.path.dirname(directory)
    return directory


def _hard_link_check(path: str) -> Check:
    directory = _existing_directory(path)
    scratch = os.path.join(directory, _scratch_name())
    link = f"{scratch}.link"
    check = functools.partial(Check, path, "hard_links")
    try:
        with _removed_afterwards(scratch, link):
            with open(scratch, "xb"):
                pass
            os.link(scratch, link)
    except OSError as error:
        if error.errno in _NO_HARD_LINKS:
            return check(
                Status.PROBLEM,
                f"the file system of {directory} has no hard links ({error.strerror}): dumps there "
                "publish by an existence check and a rename, so a writer that lost its lock without "
                "noticing can replace another's file",
                "put the cache on a file system with hard links (ext4, xfs, NFS ...)",
            )
        return check(
            Status.PROBLEM,
            f"could not write a scratch file in {directory}: {error}",
            f"let the applications' user write in {directory}",
        )
    return check(
        Status.OK, f"a scratch file in {directory} was hard-linked: a dump there never replaces a file"
    )


@contextlib.contextmanager
def _removed_afterwards(*paths: str) -> Iterator[None]:
    try:
        yield
    finally:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


@dataclasses.dataclass(frozen=True)
class _ObjectStore:
    """An object store's create-if-absent publish, as its storage kind does it, and how to undo it."""

    condition: str
    """What the publish carries so that it is refused if the object exists."""
    publish: Callable[[str, str], None]
    """Upload a local file to a path, ``CommitRefused`` if an object is there."""
    remove: Callable[[str], object]
    failures: tuple[type[BaseException], ...]
    """What its client raises when it cannot write at all (no credentials, no bucket, unreachable)."""
    fix: str
    """What to do if it replaces an object."""


# The object stores' modules are imported on first use, as storage_kind_for does: checking a
# local cache never pays for importing boto3 or gcsfs.


def _s3(settings: Settings) -> _ObjectStore:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    from locked_targets.storage.s3 import put_once, s3_client  # noqa: PLC0415

    client = s3_client(settings)
    return _ObjectStore(
        condition="If-None-Match: *",
        publish=functools.partial(put_once, client),
        remove=functools.partial(client.remove, recursive=False),
        failures=(BotoCoreError, ClientError),
        fix="use an S3 endpoint that honours If-None-Match on PutObject (AWS S3 does)",
    )


def _gcs(settings: Settings) -> _ObjectStore:
    from gcsfs.retry import HttpError  # noqa: PLC0415

    from locked_targets.storage.gcs import gcs_file_system  # noqa: PLC0415

    file_system = gcs_file_system(settings)
    return _ObjectStore(
        condition="ifGenerationMatch=0",
        publish=file_system.publish,
        remove=functools.partial(file_system.remove, recursive=False),
        failures=(OSError, HttpError),
        fix="use GCS itself, which honours ifGenerationMatch (emulators may not)",
    )


def _object_store_check(path: str, store: _ObjectStore) -> Check:
    """Upload a scratch object twice as the storage publishes (create-if-absent): the second must fail."""
    scratch = f"{path.rstrip('/')}/{_scratch_name()}"
    check = functools.partial(Check, path, "create_if_absent")
    with tempfile.NamedTemporaryFile(prefix=SCRATCH_PREFIX) as local:
        local.write(b"locked-targets doctor\n")
        local.flush()
        try:
            store.publish(local.name, scratch)
        except store.failures as error:
            return check(
                Status.PROBLEM,
                f"could not write the scratch object {scratch} with {store.condition}: {error}",
                f"let these credentials write under {path}, and check the endpoint settings",
            )
        try:
            store.publish(local.name, scratch)
        except CommitRefused:
            return check(
                Status.OK,
                f"a second upload of a scratch object with {store.condition} was refused: an existing "
                "object is never replaced",
            )
        except store.failures as error:
            return check(
                Status.PROBLEM, f"a second upload with {store.condition} failed otherwise: {error}", store.fix
            )
        finally:
            store.remove(scratch)
    return check(
        Status.PROBLEM,
        f"the endpoint replaced the scratch object {scratch} although the upload carried {store.condition}: "
        "write-once is not enforced there, so a writer that lost its lock without noticing can replace "
        "another's output",
        store.fix,
    )


def doctor_document(services: Sequence[dict[str, Any]], checks: Sequence[Check]) -> dict[str, Any]:
    """What ``doctor --json`` prints: the lock services it checked (``redis``: the first), and the checks."""
    return {
        "redis": services[0]["redis"],
        "services": list(services),
        "checks": [{**dataclasses.asdict(check), "status": check.status.value} for check in checks],
    }


def problems_of(checks: Sequence[Check]) -> list[str]:
    return [
        f"{check.subject}: {check.name}: {check.detail}" for check in checks if check.status is Status.PROBLEM
    ]


def doctor_table(checks: Sequence[Check]) -> RenderableType:
    """One table per subject: each check's status, what it saw and, below that, the fix."""
    tables = []
    for subject in dict.fromkeys(check.subject for check in checks):
        table = Table(title=subject, title_justify="left", box=box.SIMPLE_HEAD)
        table.add_column("status")
        table.add_column("check")
        table.add_column("what it saw, and the fix", overflow="fold")
        for check in checks:
            if check.subject == subject:
                seen = Text(check.detail)
                if check.fix:
                    seen.append(f"\nfix: {check.fix}", style="bold")
                table.add_row(Text(check.status.value, style=_STATUS_STYLES[check.status]), check.name, seen)
        tables.append(table)
    return Group(*tables)


def workspace_directory() -> str:
    """gokart's cache directory as gokart reads it: ``[TaskOnKart] workspace_directory``, or its default."""
    parameter = gokart.TaskOnKart.workspace_directory
    return str(parameter.task_value("TaskOnKart", "workspace_directory"))  # type: ignore[no-untyped-call]
