"""What every storage kind provides: a stable identity for lock keys, and gokart's file targets on it."""

from __future__ import annotations

import abc
import dataclasses
import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import ClassVar

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

    def preparing_write(
        self, target: luigi.target.FileSystemTarget
    ) -> AbstractContextManager[Callable[[], None] | None]:
        """Work that gets the next write of ``target`` (one this kind built) ready and needs no lock,
        for a dump to do while its lock is asked for, its leftovers let go of when the block ends;
        None (the default) when there is nothing worth doing ahead."""
        return nullcontext()

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

    def preparing_dump(self) -> AbstractContextManager[Callable[[], None] | None]:
        """``StorageKind.preparing_write`` for this target's next dump."""
        return self._kind.preparing_write(self._target)
