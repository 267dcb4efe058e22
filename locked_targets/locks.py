"""From a cache path and the settings to its lock: the keys of a file, and the lock built on them.

A key is ``<key_prefix><storage key_prefix><namespace>:{<digest>}``: the digest is a
SHA-256 of the storage kind and the file's identity (a local file's real path), so
distinct files never share a lock by accident (gokart keyed by basename, so
``s3://a/x_1.pkl`` and ``gs://b/x_1.pkl`` collided), two names of one file share one, and
any path (braces, newlines, very long names) gives a short, safe key. The digest in
braces is the Redis Cluster hash tag that keeps every key of one lock in one slot.

gokart's five log files of one task share one lock (``lock_identity``): gokart writes all
five at every run, so one lock costs a task one acquisition and one release instead of five.
A coarser lock never lets two writers in; it only makes a reader of one of them wait for the
writing of the others.

A file's lock lives on the lock service of its storage kind (``lock_service_for``:
``<kind>_redis_url``, else ``redis_url``). The process keeps one ``RedisConnection`` per Redis
URL and one set of kept shared leases per connection (both in ``process_state``); kept leases
are given back at exit. Before its first lock on a service, a process checks that the server
can keep locks (``server_checks``), and judges every new lock by what it read then.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import multiprocessing.util
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

from locked_targets.process_state import ProcessLocal, ProcessLocalMap
from locked_targets.rwlock import (
    LeaseTerms,
    LockKeys,
    ReadWriteLock,
    RedisConnection,
    SharedLeases,
    server_checks,
    telemetry,
)
from locked_targets.settings import Settings
from locked_targets.storage import storage_kind_for
from locked_targets.storage.base import Identity

# The kinds of log file gokart writes for a task, each in a directory of its own:
# <workspace>/log/<kind>/<task class>_<unique id>.pkl (.txt for module_versions).
GOKART_LOG_KINDS = ("module_versions", "processing_time", "random_seed", "task_log", "task_params")
_ANY_GOKART_LOG_KIND = "{" + ",".join(GOKART_LOG_KINDS) + "}"


class LockNamespace(str, enum.Enum):
    """What a lock protects: the reads and writes of a cache file, or the run that computes it."""

    TARGET = "target"
    RUN = "run"


@dataclasses.dataclass(frozen=True)
class LockService:
    """The Redis a file's lock lives on, and the setting whose URL named it (for messages)."""

    setting: str
    url: str = dataclasses.field(repr=False)  # may hold a password


def lock_service_for(path: str, settings: Settings) -> LockService | None:
    """Where the lock of the file at ``path`` lives: its storage kind's own ``<kind>_redis_url``
    if set, else ``redis_url``; None when neither is (the file is not locked)."""
    kind = storage_kind_for(path)
    for setting in (f"{kind.name}_redis_url", "redis_url"):
        url: str | None = getattr(settings, setting)
        if url is not None:
            return LockService(setting=setting, url=url)
    return None


def lock_key_for(
    path: str, settings: Settings, namespace: LockNamespace | str = LockNamespace.TARGET
) -> LockKeys:
    """The lock keys of the cache file at ``path``, in ``namespace`` (targets, or task runs)."""
    kind = storage_kind_for(path)
    identity = lock_identity(path)
    namespace = LockNamespace(namespace)
    base = f"{settings.key_prefix}{kind.key_prefix(settings)}{namespace.value}:{{{identity.digest}}}"
    return LockKeys(path=identity.path, base=base)


def lock_identity(path: str) -> Identity:
    """What the lock of the cache file at ``path`` protects: the file (its identity), or, for one
    of gokart's log files, that file and the task's four other log files, named together as
    ``<workspace>/log/{module_versions,...,task_params}/<task class>_<unique id>``."""
    kind = storage_kind_for(path)
    identity = kind.identify(path)
    parts = identity.path.rsplit("/", 3)
    if len(parts) < 4 or parts[1] != "log" or parts[2] not in GOKART_LOG_KINDS:
        return identity
    head, _log, _kind, name = parts
    stem = name.rpartition(".")[0] or name
    return kind.with_digest(f"{head}/log/{_ANY_GOKART_LOG_KIND}/{stem}")


def lock_for(
    path: str,
    settings: Settings,
    *,
    namespace: LockNamespace = LockNamespace.TARGET,
    task: str | None = None,
    wait_timeout_seconds: float | None,
) -> ReadWriteLock:
    """The lock of the cache file at ``path`` in ``namespace``, on the lock service of its storage kind.

    luigi builds a task's targets again and again (18 times per task in a 1,000-task build)
    and a lock's keys cost a real path and a SHA-256, so the process remembers the most
    recent few thousand locks it built: a symbolic link on a cache path that changes while
    the process runs is not followed to its new file.
    """
    return _remembered(
        _remembered_locks.get(),
        (_where(path), namespace, task, wait_timeout_seconds),
        settings,
        lambda: _new_lock(path, settings, namespace, task, wait_timeout_seconds),
    )


_Remembered = TypeVar("_Remembered")


def _remembered(
    store: dict[tuple[object, ...], tuple[Settings, _Remembered]],
    key: tuple[object, ...],
    settings: Settings,
    build: Callable[[], _Remembered],
) -> _Remembered:
    """What ``build`` makes for ``key`` under ``settings``, made once and kept in ``store`` (emptied
    when full). The settings count by their id, not their value (hashing every field costs more than
    the lookup saves); each entry holds its settings, so no other object can take that id meanwhile."""
    full_key = (*key, id(settings))
    known = store.get(full_key)
    if known is not None:
        return known[1]
    made = build()
    if len(store) >= _MOST_REMEMBERED_LOCKS:
        store.clear()
    store[full_key] = (settings, made)
    return made


def forget_lock(path: str) -> None:
    """Forget every lock this process remembers for ``path`` (the file it names has changed)."""
    remembered = _remembered_locks.get()
    where = _where(path)
    for key in [key for key in list(remembered) if key[0] == where]:
        remembered.pop(key, None)


def _where(path: str) -> str:
    """``path`` as the lock memory knows it: a relative path names another file after a chdir."""
    return path if os.path.isabs(path) or "://" in path else os.path.join(os.getcwd(), path)


def _new_lock(
    path: str,
    settings: Settings,
    namespace: LockNamespace,
    task: str | None,
    wait_timeout_seconds: float | None,
) -> ReadWriteLock:
    kind = storage_kind_for(path)
    parts = _lock_parts(kind.name, path, settings, namespace)
    return ReadWriteLock(
        parts.connection,
        lock_key_for(path, settings, namespace),
        parts.terms,
        wait_timeout_seconds=wait_timeout_seconds,
        task=task,
        label=None if namespace is LockNamespace.TARGET else f"{namespace.value} lock",
        shared_leases=parts.shared_leases,
        telemetry_labels=parts.telemetry_labels,
        min_replicas_acked=settings.min_replicas_acked,
        min_replicas_timeout_seconds=settings.min_replicas_timeout_seconds,
    )


@dataclasses.dataclass(frozen=True)
class _LockParts:
    """What every lock of one storage kind and namespace shares under one ``Settings``."""

    connection: RedisConnection
    terms: LeaseTerms
    shared_leases: Callable[[], SharedLeases] | None
    telemetry_labels: Mapping[str, str]


def _lock_parts(kind: str, path: str, settings: Settings, namespace: LockNamespace) -> _LockParts:
    """The parts of a new lock of ``path`` (of storage kind ``kind``), worked out once per settings:
    a dump of a new file builds its lock on the task's critical path."""
    return _remembered(
        _remembered_parts.get(),
        (kind, namespace),
        settings,
        lambda: _new_lock_parts(kind, path, settings, namespace),
    )


def _new_lock_parts(kind: str, path: str, settings: Settings, namespace: LockNamespace) -> _LockParts:
    service = lock_service_for(path, settings)
    if service is None:
        raise ValueError(
            f"locking is not configured for {kind} files: neither {kind}_redis_url nor redis_url"
        )
    connection = connection_for(service.url, service.setting)
    terms = lease_terms(settings)
    server_checks.ensure_fit_for_locks(
        connection,
        setting=service.setting,
        allow_eviction=settings.allow_eviction,
        redis_retry_deadline_seconds=terms.redis_retry_deadline_seconds,
    )
    keep_shared = namespace is LockNamespace.TARGET and settings.shared_lease_idle_seconds > 0
    return _LockParts(
        connection=connection,
        terms=terms,
        # Looked up at each use, not here: a lock built before a fork must not lend the parent's leases.
        shared_leases=(
            functools.partial(shared_leases_for, connection, settings.shared_lease_idle_seconds)
            if keep_shared
            else None
        ),
        telemetry_labels=telemetry.lock_labels(namespace=namespace.value, storage=kind),
    )


def lease_terms(settings: Settings) -> LeaseTerms:
    """What ``settings`` give every lock: lease, renewal interval, Redis retry deadline, fencing memory."""
    return LeaseTerms(
        lease_seconds=settings.lease_seconds,
        renewal_interval_seconds=settings.effective_renewal_interval_seconds,
        redis_retry_deadline_seconds=(
            settings.redis_retry_deadline_seconds if settings.on_redis_error == "wait" else None
        ),
        fencing_memory_seconds=settings.fencing_memory_seconds,
    )


_MOST_REMEMBERED_LOCKS = 4096
# A forked child starts with none: a lock refers to its process's connection.
_remembered_locks: ProcessLocal[dict[tuple[object, ...], tuple[Settings, ReadWriteLock]]] = ProcessLocal(dict)
_remembered_parts: ProcessLocal[dict[tuple[object, ...], tuple[Settings, _LockParts]]] = ProcessLocal(dict)
_connections: ProcessLocalMap[str, RedisConnection] = ProcessLocalMap()
_kept_shared_leases: ProcessLocalMap[tuple[RedisConnection, float], SharedLeases] = ProcessLocalMap()


def connection_for(redis_url: str, setting: str = "redis_url") -> RedisConnection:
    """The process's connection to ``redis_url``, made on first use; its messages name ``setting``, the
    first setting to ask for that URL (several settings may name one Redis)."""
    return _connections.get(redis_url, lambda: RedisConnection(redis_url, setting))


def shared_leases_for(connection: RedisConnection, shared_lease_idle_seconds: float) -> SharedLeases:
    """The shared leases this process keeps on ``connection``, made on first use."""

    def start_keeping() -> SharedLeases:
        leases = SharedLeases(connection, shared_lease_idle_seconds)
        # Given back at exit; a Finalize also runs at the end of multiprocessing children, which skip atexit.
        multiprocessing.util.Finalize(None, leases.release_all, exitpriority=10)
        return leases

    return _kept_shared_leases.get((connection, shared_lease_idle_seconds), start_keeping)
