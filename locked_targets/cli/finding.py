"""Which locks a command looks at: one path's, a task's run locks, or every lock of the key prefix.

A lock's key names its storage kind and namespace only through the configured prefixes
(``<key_prefix><storage prefix><namespace>:{<digest>}``), so a lock found by SCAN is sorted
into them by the longest prefix it starts with; what it protects is read from its holders'
descriptions.
"""

from __future__ import annotations

import dataclasses

from locked_targets.locks import LockNamespace, lock_key_for
from locked_targets.rwlock import RedisConnection
from locked_targets.rwlock.inspection import LockState, find_locks, glob_escaped, read_lock, read_locks
from locked_targets.settings import Settings
from locked_targets.storage import storage_kind_for

# Each storage kind by the name --storage takes, and a path of that kind (storage_kind_for).
STORAGE_EXAMPLE_PATHS = {"local": "/", "s3": "s3://bucket/", "gcs": "gs://bucket/"}
NAMESPACES = tuple(namespace.value for namespace in LockNamespace)


@dataclasses.dataclass(frozen=True)
class FoundLock:
    """A lock as read, and where its key says it belongs (None: a key the configuration did not make)."""

    state: LockState
    storage: str | None
    namespace: str | None

    @property
    def occupied(self) -> bool:
        """Whether anyone holds the lock or waits for it."""
        return bool(self.state.holders or self.state.waiting_writers)


class LockFinder:
    """Finds the locks of one configuration on its Redis server."""

    def __init__(self, connection: RedisConnection, settings: Settings) -> None:
        self.connection = connection
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
        """Every lock of the key prefix with holders or waiters, of ``storage`` and ``namespace`` if given."""
        found = find_locks(self.connection, glob_escaped(self.settings.key_prefix) + "*}")
        locks = [self._placed(state) for state in read_locks(self.connection, found)]
        return [
            lock for lock in locks if storage in (None, lock.storage) and namespace in (None, lock.namespace)
        ]

    def lock_of(self, path: str, namespace: str = LockNamespace.TARGET.value) -> FoundLock:
        """The lock of the cache file at ``path``, in ``namespace``."""
        keys = lock_key_for(path, self.settings, namespace)
        return FoundLock(
            state=read_lock(self.connection, keys),
            storage=storage_kind_for(path).name,
            namespace=namespace,
        )

    def run_locks_of_task(self, task_id: str) -> list[FoundLock]:
        """The run locks that task ``task_id`` holds or waits for."""
        return [
            lock
            for lock in self.every_lock(namespace=LockNamespace.RUN.value)
            if any(holder.task == task_id for holder in (*lock.state.holders, *lock.state.waiting_writers))
        ]

    def _placed(self, state: LockState) -> FoundLock:
        for prefix, storage, namespace in self._prefixes:
            if state.keys.base.startswith(prefix):
                return FoundLock(state=state, storage=storage, namespace=namespace)
        return FoundLock(state=state, storage=None, namespace=None)
