"""What every storage kind provides: a stable identity for lock keys, and gokart's file targets on it."""

from __future__ import annotations

import abc
import dataclasses
import functools
import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import luigi
import luigi.format
from gokart.conflict_prevention_lock.task_lock import TaskLockParams, make_task_lock_params
from gokart.file_processor import FileProcessor
from gokart.target import SingleFileTarget, TargetOnKart
from gokart.zip_client import ZipClient

from locked_targets.settings import Settings

UNLOCKED_PARAMS: TaskLockParams = make_task_lock_params(file_path="", unique_id=None)
"""gokart lock parameters that switch gokart's own lock off: locked_targets locks instead. One
value for every file (building them per target costs a few µs): gokart reads the key only
when its lock is on.
"""

Write = Callable[[], None]
"""A dump's whole write, which publishes its file (gokart's ``_dump``)."""
DumpInto = Callable[[Any], None]
"""A file processor's dump of one object, into the file it is given."""

# The module of gokart's own file processors (pickle, csv, parquet...): they record no fencing token.
_GOKART_PROCESSORS = "gokart.file_processor"


@dataclasses.dataclass(frozen=True)
class Identity:
    """Which file a cache path names: equal for every name of one file, distinct for distinct files."""

    path: str
    """The normalized, complete name of the file (for a local file, its real path)."""

    digest: str
    """32 hex digits of SHA-256 over the storage kind and ``path``: they name the file's lock
    and the staging directory of its locked dumps."""


class StorageKind(abc.ABC):
    """One place a cache file can live (local disk or NFS, S3, GCS)."""

    name: ClassVar[str]
    """Short name used in lock keys and in messages: ``local``, ``s3`` or ``gcs``."""

    key_prefix_setting: ClassVar[str]
    """The ``[locked_targets]`` setting that holds this kind's own key prefix."""

    def key_prefix(self, settings: Settings) -> str:
        prefix: str = getattr(settings, self.key_prefix_setting)
        return prefix

    @abc.abstractmethod
    def identity(self, path: str) -> str:
        """The normalized, complete name of ``path``: equal for the same file, distinct otherwise."""

    def identify(self, path: str) -> Identity:
        """The identity of ``path`` and its digest."""
        return self.with_digest(self.identity(path))

    def with_digest(self, identity: str) -> Identity:
        """``identity`` (a file's, or a name that stands for several files of this kind) and its digest."""
        named = f"{self.name}\0{identity}".encode("utf-8", "surrogatepass")
        return Identity(path=identity, digest=hashlib.sha256(named).hexdigest()[:32])

    @abc.abstractmethod
    def file_system_target(
        self, path: str, file_format: luigi.format.Format, settings: Settings
    ) -> luigi.target.FileSystemTarget:
        """A luigi file target for ``path`` whose writes become visible only once complete."""

    @abc.abstractmethod
    def zip_client(self, path: str, temporary_directory: str, settings: Settings) -> ZipClient:
        """gokart's zip client for a multi-file (model or large-DataFrame) target at ``path``."""

    @abc.abstractmethod
    def last_modification_time(self, path: str, settings: Settings) -> datetime:
        """When the object at ``path`` was last written."""

    def dumping_ahead(
        self, target: luigi.target.FileSystemTarget, write: Write, dump_into: DumpInto
    ) -> DumpAhead:
        """A dump of ``target`` (one this kind built) whose write is done ahead of its lock where this
        kind can; by default it is done under the lock. ``write`` is the dump's whole write (it
        publishes), ``dump_into`` the processor's, into a file it is given."""
        return DumpAhead(write)

    def single_file_target(self, path: str, processor: FileProcessor, settings: Settings) -> TargetOnKart:
        """gokart's single-file target on this storage, with gokart's own lock off."""
        return StorageFileTarget(
            self.file_system_target(path, processor.format(), settings), processor, self, settings
        )


class StorageFileTarget(SingleFileTarget):
    """gokart's single-file target, its modification time asked of the storage kind that holds it.

    gokart asks its own default clients, which know nothing of the configured endpoints.
    """

    def __init__(
        self,
        target: luigi.target.FileSystemTarget,
        processor: FileProcessor,
        kind: StorageKind,
        settings: Settings,
    ) -> None:
        super().__init__(target=target, processor=processor, task_lock_params=UNLOCKED_PARAMS)
        self._kind = kind
        self._settings = settings

    def _last_modification_time(self) -> datetime:
        return self._kind.last_modification_time(self._path(), self._settings)

    def dumping_ahead(self, obj: Any, write: Write) -> DumpAhead:
        """The dump of ``obj``, whose whole write is ``write``, written ahead where its storage can
        (``StorageKind.dumping_ahead``). Only with gokart's own processors, a custom one may record
        the dump's fencing token (``commit.current_fencing_token``), which only the lock gives; and
        only gokart's plain write, which a subclass's own ``_dump`` may add to."""
        module = type(self._processor).__module__
        if module != _GOKART_PROCESSORS and not module.startswith(f"{_GOKART_PROCESSORS}."):
            return DumpAhead(write)
        if type(self)._dump is not SingleFileTarget._dump:  # a subclass's write does more (GCS's)
            return DumpAhead(write)
        return self._kind.dumping_ahead(self._target, write, functools.partial(self._processor.dump, obj))


class DumpAhead:
    """A dump whose write is done, where the storage can, while its lock is asked for (``meanwhile``):
    into a file no one can see or reach, so it needs no lock, published under the lock (``publish``).

    This one does nothing ahead: ``publish`` writes. As a context manager, it lets go of what was
    written ahead and not published (the dump skipped, or failed) when the block ends.
    """

    meanwhile: Callable[[], None] | None = None
    """The write done ahead, for the lock's acquisition to run once its request is on its way
    (``ReadWriteLock.exclusive``); None: nothing is done ahead."""

    def __init__(self, write: Write) -> None:
        self._write = write

    def publish(self) -> None:
        """Publish the dump, under its lock and once its checks passed: what was written ahead, or
        else the whole write, now."""
        self._write()

    def let_go(self) -> None:
        """Let go of what was written ahead and not published (nothing, here)."""

    def __enter__(self) -> DumpAhead:
        return self

    def __exit__(self, *raised: object) -> None:
        self.let_go()
