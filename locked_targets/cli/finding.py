"""Which locks a command looks at: one path's, a task's run locks, or every lock of the key prefix.

The locks live on the configured lock services: ``redis_url`` and the per-storage
``local_redis_url``, ``s3_redis_url``, ``gcs_redis_url``, each distinct URL one service. A
path's lock is looked for on its storage kind's service (``locks.lock_service_for``); every
lock, on every service.

A lock's key names its storage kind and namespace only through the configured prefixes
(``<key_prefix><storage prefix><namespace>:{<digest>}``), so a lock found by SCAN is sorted
into them by the longest prefix it starts with; what it protects is read from its holders'
descriptions.
"""

from __future__ import annotations

import dataclasses

from locked_targets.locks import LockNamespace, connection_for, lock_key_for, lock_service_for
from locked_targets.rwlock import RedisConnection
from locked_targets.rwlock.inspection import LockState, find_locks, glob_escaped, read_lock, read_locks
from locked_targets.settings import LOCK_SERVICE_SETTINGS, Settings
from locked_targets.storage import storage_kind_for

# Each storage kind by the name --storage takes, and a path of that kind (storage_kind_for).
STORAGE_EXAMPLE_PATHS = {"local": "/", "s3": "s3://bucket/", "gcs": "gs://bucket/"}
NAMESPACES = tuple(namespace.value for namespace in LockNamespace)


@dataclasses.dataclass(frozen=True)
class Service:
    """One lock service of the configuration: its connection, and the settings whose URL names it."""

    settings: tuple[str, ...]
    connection: RedisConnection

    @property
    def shown_url(self) -> str:
        """Its URL as it may be shown: without its password."""
        return self.connection.shown_url


def lock_services(settings: Settings) -> list[Service]:
    """Each distinct lock service ``settings`` name, in the order of ``LOCK_SERVICE_SETTINGS``."""
    named_by: dict[str, list[str]] = {}
    for name in LOCK_SERVICE_SETTINGS:
        url: str | None = getattr(settings, name)
        if url is not None:
            named_by.setdefault(url, []).append(name)
    return [Service(tuple(names), connection_for(url, names[0])) for url, names in named_by.items()]


@dataclasses.dataclass(frozen=True)
class FoundLock:
    """A lock as read, the service it was found on, and where its key says it belongs (None: a key the
    configuration did not make)."""

    state: LockState
    service: Service
    storage: str | None
    namespace: str | None

    @property
    def occupied(self) -> bool:
        """Whether anyone holds the lock or waits for it."""
        return bool(self.state.holders or self.state.waiting_writers)


class LockFinder:
    """Finds the locks of one configuration on its lock services."""

    def __init__(self, services: list[Service], settings: Settings) -> None:
        self.services = services
        self.settings = settings
        # (base prefix, storage, namespace), longest prefix first, so the most specific one wins.
        self._prefixes = sorted(
            (
                (
                    f"{settings.key_prefix}{storage_kind_for(path).key_prefix(settings)}{namespace}:{{",
                    storage,
                    namespace,
                )
                for storage, path in STORAGE_EXAMPLE_PATHS.items()
                for namespace in NAMESPACES
            ),
            key=lambda prefix: -len(prefix[0]),
        )

    def every_lock(self, *, storage: str | None = None, namespace: str | None = None) -> list[FoundLock]:
        """Every lock of the key prefix with holders or waiters, on every service, of ``storage`` and
        ``namespace`` if given."""
        pattern = glob_escaped(self.settings.key_prefix) + "*}"
        locks = [
            self._placed(state, service)
            for service in self.services
            for state in read_locks(service.connection, find_locks(service.connection, pattern))
        ]
        return [
            lock for lock in locks if storage in (None, lock.storage) and namespace in (None, lock.namespace)
        ]

    def lock_of(self, path: str, namespace: str = LockNamespace.TARGET.value) -> FoundLock:
        """The lock of the cache file at ``path``, in ``namespace``, on its storage kind's service."""
        keys = lock_key_for(path, self.settings, namespace)
        service = self.service_of(path)
        return FoundLock(
            state=read_lock(service.connection, keys),
            service=service,
            storage=storage_kind_for(path).name,
            namespace=namespace,
        )

    def service_of(self, path: str) -> Service:
        """The service that keeps the lock of the file at ``path`` (``locks.lock_service_for``)."""
        named = lock_service_for(path, self.settings)
        if named is None:
            kind = storage_kind_for(path).name
            raise ValueError(
                f"no lock service for {kind} files: neither {kind}_redis_url nor redis_url is set"
            )
        return next(service for service in self.services if service.connection is connection_for(named.url))

    def run_locks_of_task(self, task_id: str) -> list[FoundLock]:
        """The run locks that task ``task_id`` holds or waits for."""
        return [
            lock
            for lock in self.every_lock(namespace=LockNamespace.RUN.value)
            if any(holder.task == task_id for holder in (*lock.state.holders, *lock.state.waiting_writers))
        ]

    def _placed(self, state: LockState, service: Service) -> FoundLock:
        for prefix, storage, namespace in self._prefixes:
            if state.keys.base.startswith(prefix):
                return FoundLock(state=state, service=service, storage=storage, namespace=namespace)
        return FoundLock(state=state, service=service, storage=None, namespace=None)
