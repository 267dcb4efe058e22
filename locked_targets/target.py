"""``LockedTarget``: a gokart cache target whose every access holds the file's Redis lock.

``exists`` and ``load`` hold the shared lock for the whole call, ``dump`` and ``remove``
the exclusive one. ``dump`` checks existence again under the lock and skips when
another application already produced the file, as gokart does; its storage commit
checks the locks again and publishes create-if-absent (see ``commit``). The wrapped target's
own gokart lock is bypassed (its ``_exists``/``_load``/``_dump``/``_remove`` are called
directly), so nothing is locked twice.

Publishing create-if-absent is the storage's part, so a target locked_targets did not
build is looked at first (``_publishing_create_if_absent``): gokart's single-file target
on a plain luigi local or S3 target is rebuilt on locked_targets' storage; any other is
kept as it is, and a warning (once per class and process) says it publishes its own way.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any

from gokart.required_task_output import RequiredTaskOutput
from gokart.target import SingleFileTarget, TargetOnKart
from gokart.utils import FlattenableItems

from locked_targets.errors import CommitRefused, ConfigurationError, LockError, LockLost
from locked_targets.locks import forget_lock, lock_for, lock_identity, lock_service_for
from locked_targets.process_state import Once
from locked_targets.run_lock import ensure_run_locks_held
from locked_targets.rwlock import (
    HeldLock,
    ReadWriteLock,
    keep_shared_ahead,
    take_ahead,
    taken_ahead,
    telemetry,
)
from locked_targets.settings import Settings
from locked_targets.storage import storage_kind_for
from locked_targets.storage.base import DumpAhead, StorageFileTarget
from locked_targets.storage.commit import CommitGuard, guarded_by
from locked_targets.storage.model_target import ModelTarget
from locked_targets.wrapped_target import WrappedTarget

logger = logging.getLogger(__name__)
_warned = Once()

# The luigi targets under gokart's single-file targets (gokart's make_target builds them): they
# publish by a rename (local) or a plain upload (S3), which replace an existing file. Named, not
# imported: luigi's S3 module imports boto3, which a local cache never needs.
_REBUILDABLE_LUIGI_TARGETS = frozenset({"luigi.local_target.LocalTarget", "luigi.contrib.s3.S3Target"})


class LockedTarget(WrappedTarget):
    """A cache file that applications sharing the cache can read, write and remove safely."""

    def __init__(
        self, target: TargetOnKart, *, settings: Settings | None = None, task: str | None = None
    ) -> None:
        self._settings = settings if settings is not None else Settings.from_luigi_config()
        super().__init__(_publishing_create_if_absent(target, self._settings))
        self._task = task
        # Built on the first call that locks (see _file_lock): luigi builds targets far more
        # often than it reads or writes them, and the lock's keys cost a realpath and a SHA-256.
        self._lock: ReadWriteLock | None = None
        # redis_url serves every storage kind without its own: no need to find the path's kind.
        self._locked = self._settings.redis_url is not None or (
            lock_service_for(self.path(), self._settings) is not None
        )
        if not self._locked:
            warn_unlocked_once(storage_kind_for(self.path()).name)

    def exists(self) -> bool:
        with self._hold_shared():
            return self._target._exists()

    def load(self) -> Any:
        with self._hold_shared():
            return self._target._load()

    def dump(
        self,
        obj: Any,
        lock_at_dump: bool = True,
        task_params: dict[str, str] | None = None,
        custom_labels: dict[str, str] | None = None,
        required_task_outputs: FlattenableItems[RequiredTaskOutput] | None = None,
    ) -> None:
        """Write ``obj`` unless another application already has, holding the exclusive lock.

        ``lock_at_dump`` is accepted for gokart compatibility and ignored: a dump is
        always locked, also inside a run lock, since readers rely on it.
        """
        write = functools.partial(
            self._target._dump,
            obj,
            task_params=task_params,
            custom_labels=custom_labels,
            required_task_outputs=required_task_outputs,
        )
        with self._dumping_ahead(obj, write) as ahead, self._hold_exclusive(ahead.meanwhile) as held:
            if self._target._exists():
                logger.debug(
                    "%s already exists: another application produced it, skipping the dump", self.path()
                )
                return
            guard = CommitGuard(
                check=functools.partial(self._ensure_ready_to_publish, held),
                fencing_token=held.fencing_token if held is not None else None,
                staging_name=held.keys.hash_tag if held is not None else None,
            )
            # Not worth writing without the locks. The path is checked at the commit, where it
            # counts, by a target locked_targets built; one that publishes its own way never asks.
            if _built_by_locked_targets(self._target):
                self._ensure_locks_held(held)
            else:
                self._ensure_ready_to_publish(held)
            try:
                with telemetry.commit(self._telemetry_labels()), guarded_by(guard):
                    ahead.publish()
            except CommitRefused:
                # Someone published while we wrote, so someone else held this lock: if it was
                # us who lost it, say so; if we hold it, a stale holder got there first and
                # the object is there (gokart's skip).
                if held is not None:
                    held.verify("the storage refused its commit: another holder had published first")
                logger.info("%s appeared while this dump was writing; keeping the existing one", self.path())

    def remove(self) -> None:
        with self._hold_exclusive() as held:
            if self._target._exists():
                self._ensure_ready_to_publish(held)
                self._target._remove()

    def path(self) -> str:
        return self._target.path()

    def last_modification_time(self) -> datetime:
        return self._target.last_modification_time()

    def _hold_shared(self) -> AbstractContextManager[HeldLock | None]:
        lock = self._file_lock()
        return lock.shared() if lock is not None else nullcontext()

    def _hold_exclusive(
        self, meanwhile: Callable[[], None] | None = None
    ) -> AbstractContextManager[HeldLock | None]:
        lock = self._file_lock()
        return lock.exclusive(meanwhile) if lock is not None else nullcontext()

    def _dumping_ahead(self, obj: Any, write: Callable[[], None]) -> DumpAhead:
        """The dump of ``obj``, written while its lock is asked for where the storage can
        (``StorageFileTarget.dumping_ahead``); ``write`` is its whole write under the lock."""
        target = self._target
        return target.dumping_ahead(obj, write) if isinstance(target, StorageFileTarget) else DumpAhead(write)

    def _telemetry_labels(self) -> Mapping[str, str]:
        return self._lock.telemetry_labels if self._lock is not None else telemetry.NO_LABELS

    def _ensure_locks_held(self, held: HeldLock | None) -> None:
        """The file lock (if any) and the run locks of the current run still hold, or LockLost."""
        if held is not None:
            held.ensure_held()
        ensure_run_locks_held()

    def _ensure_ready_to_publish(self, held: HeldLock | None) -> None:
        """``_ensure_locks_held``, and the path still names the file the lock was built for.

        The process remembers locks by path (``locks.lock_for``), and a symbolic link on the
        path may have been re-pointed since; then the lock is forgotten, by the process and by
        this target, so the next try locks the file named now.
        """
        self._ensure_locks_held(held)
        if held is not None:
            path = self.path()
            if lock_identity(path).digest != held.keys.hash_tag:
                forget_lock(path)
                self._lock = None
                raise LockLost(
                    lock_key=held.keys.base,
                    path=path,
                    reason="the path now names another file than when its lock was taken (a symbolic link "
                    "on it changed): nothing was written; try again, and the file it names now is locked",
                    lost_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                )

    def _file_lock(self) -> ReadWriteLock | None:
        """The lock of this target's file, built on first use and kept; None when nothing is locked."""
        if self._lock is None and self._locked:
            self._lock = lock_for(
                self.path(),
                self._settings,
                task=self._task,
                wait_timeout_seconds=self._settings.wait_timeout_seconds,
            )
        return self._lock


def take_write_locks_ahead(targets: Iterable[TargetOnKart]) -> bool:
    """Take the exclusive locks of the ``LockedTarget``s among ``targets`` together, in one
    round trip, for this thread's coming dumps; True if it got them all (see ``taken_ahead``)."""
    locks = _locks_of(targets)
    return bool(locks) and take_ahead(locks)


def keep_read_leases_ahead(targets: Iterable[TargetOnKart]) -> int:
    """Keep the shared leases of the ``LockedTarget``s among ``targets``, acquired together in one
    round trip, for this process's coming reads (see ``keep_shared_ahead``); how many are kept.

    Only a saving: a failure (a lock service that cannot be reached or is misconfigured) keeps
    nothing, and each read meets it on its own.
    """
    try:
        return keep_shared_ahead(_locks_of(targets))
    except (LockError, ConfigurationError) as error:
        logger.debug("kept no read leases ahead: %s", error)
        return 0


def _locks_of(targets: Iterable[TargetOnKart]) -> list[ReadWriteLock]:
    return [
        lock
        for target in targets
        if isinstance(target, LockedTarget) and (lock := target._file_lock()) is not None
    ]


def release_write_locks_taken_ahead() -> None:
    """Give back the locks this thread took ahead and did not use (its task has ended)."""
    taken_ahead().release_mine()


def _publishing_create_if_absent(target: TargetOnKart, settings: Settings) -> TargetOnKart:
    """``target`` made to publish create-if-absent where it can be; otherwise as it is, with a warning.

    A target locked_targets built (wrapped or not) already does. gokart's single-file target
    on a plain luigi local or S3 target is rebuilt, with its processor, on locked_targets'
    storage kind for its path. Any other (gokart's model target, a GCS target of gokart's, a
    custom one) cannot be rebuilt without losing what it does.
    """
    if _built_by_locked_targets(target):
        return target
    if type(target) is SingleFileTarget:
        luigi_target = type(target._target)
        if f"{luigi_target.__module__}.{luigi_target.__qualname__}" in _REBUILDABLE_LUIGI_TARGETS:
            path = target.path()
            return storage_kind_for(path).single_file_target(path, target._processor, settings)
    if _warned.first_time(("publishes its own way", type(target))):
        logger.warning(
            "locked_targets: LockedTarget cannot publish a %s (such as %s) create-if-absent: locked_targets "
            "did not build it and cannot rebuild it, so its dump publishes the way that class does (gokart's "
            "own targets replace an existing file). The lock still keeps writers apart, but a "
            "writer that lost its lock without noticing can replace another's file. Build it with "
            "locked_targets.make_target, make_model_target or make_large_data_frame_target instead.",
            type(target).__qualname__,
            target.path(),
        )
    return target


def _built_by_locked_targets(target: TargetOnKart) -> bool:
    while isinstance(target, WrappedTarget):
        target = target.wrapped
    return isinstance(target, StorageFileTarget | ModelTarget)


def warn_unlocked_once(storage: str) -> None:
    """Warn, once per process and storage kind, that no Redis locks the kind's files."""
    if _warned.first_time(("unlocked", storage)):
        logger.warning(
            "locked_targets: no Redis configured for %s files ([locked_targets] %s_redis_url or redis_url, "
            "or [TaskOnKart] redis_host and redis_port): cache targets there are NOT locked",
            storage,
            storage,
        )
