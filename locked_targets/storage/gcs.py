"""Google Cloud Storage through gcsfs, which (unlike gokart's google-api client) also talks to an emulator."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import gcsfs.core
import luigi
import luigi.format
from gokart.file_processor import FileProcessor
from gokart.gcs_obj_metadata_client import GCSObjectMetadataClient
from gokart.required_task_output import RequiredTaskOutput
from gokart.target import TargetOnKart
from gokart.utils import FlattenableItems
from gokart.zip_client import ZipClient
from luigi.target import FileSystem, FileSystemTarget

from locked_targets.errors import CommitRefused
from locked_targets.settings import Settings
from locked_targets.storage.base import StorageFileTarget, StorageKind
from locked_targets.storage.commit import before_commit, commit_metadata
from locked_targets.storage.remote_zip import RemoteZipClient
from locked_targets.storage.staging import refused_if_cleared
from locked_targets.storage.write_once import WriteOnceFile


def gcs_file_system(settings: Settings) -> GcsFileSystem:
    """The GCS file system for ``settings``; unset values take gcsfs's defaults.

    fsspec keeps one ``GCSFileSystem`` per set of arguments and per process, so this is cheap
    and a forked child never reuses its parent's event loop.
    """
    options = {
        "endpoint_url": settings.gcs_endpoint_url,
        "token": settings.gcs_token,
        "project": settings.gcs_project,
    }
    # gcsfs.core's class, not the package's default one, which first probes each bucket over gRPC.
    return GcsFileSystem(
        gcsfs.core.GCSFileSystem(**{name: value for name, value in options.items() if value is not None})
    )


class GcsFileSystem(FileSystem):
    """A GCS bucket as luigi sees it.

    Existence and modification times are asked of GCS each time, never of gcsfs's listing
    cache: other processes write the same bucket.
    """

    def __init__(self, gcs: gcsfs.core.GCSFileSystem) -> None:
        self._gcs = gcs

    def exists(self, path: str) -> bool:
        try:
            self._fresh_info(path)
        except FileNotFoundError:
            return False
        return True

    def remove(self, path: str, recursive: bool = True, skip_trash: bool = True) -> bool:
        """Remove the object at ``path`` (if ``recursive``, all under it too); False if there was none."""
        self._gcs.invalidate_cache(path)
        try:
            self._gcs.rm(path, recursive=recursive)
        except FileNotFoundError:
            return False
        return True

    def publish(self, local_path: str, destination_path: str) -> None:
        """Upload a local file create-if-absent (``ifGenerationMatch=0``), with the commit's metadata.

        A large file goes as a resumable upload, which GCS publishes only when finalized. GCS
        answers 412 if the object exists, and gcsfs raises ``FileExistsError``: ``CommitRefused``.
        gcp-storage-emulator ignores the precondition; the tests check that it is sent.
        """
        before_commit()
        try:
            with refused_if_cleared(destination_path, self.exists):
                self._gcs.put_file(
                    local_path, destination_path, metadata=commit_metadata() or None, mode="create"
                )
        except FileExistsError as error:
            raise CommitRefused(destination_path) from error

    def get(self, path: str, destination_local_path: str) -> None:
        self._gcs.get_file(path, destination_local_path)

    def open_for_reading(self, path: str) -> Any:
        return self._gcs.open(path, "rb")

    def modification_time(self, path: str) -> datetime:
        return cast(datetime, self._fresh_info(path)["mtime"])

    def add_metadata(self, path: str, metadata: dict[str, str]) -> None:
        """Add custom metadata to an object, keeping the keys it has.

        A direct PATCH rather than gcsfs's ``setxattrs``, whose keyword arguments would swallow
        keys such as ``path`` or ``content_type``.
        """
        bucket, key, _generation = self._gcs.split_path(path)
        self._gcs.call("PATCH", "b/{}/o/{}", bucket, key, fields="metadata", json={"metadata": metadata})

    def _fresh_info(self, path: str) -> dict[str, Any]:
        self._gcs.invalidate_cache(path)
        return cast(dict[str, Any], self._gcs.info(path))


class GcsTarget(FileSystemTarget):
    """One GCS object as a luigi file target; a written object appears only complete, never over another."""

    def __init__(
        self, path: str, file_system: GcsFileSystem, file_format: luigi.format.Format | None = None
    ) -> None:
        super().__init__(path)  # type: ignore[no-untyped-call]
        self.format = file_format or luigi.format.get_default_format()  # type: ignore[no-untyped-call]
        self._file_system = file_system

    @property
    def fs(self) -> GcsFileSystem:
        return self._file_system

    def open(self, mode: str = "r") -> Any:
        if mode == "r":
            return self.format.pipe_reader(self._file_system.open_for_reading(self.path))
        if mode == "w":
            return self.format.pipe_writer(WriteOnceFile(self.path, self._file_system.publish, GcsStorage()))
        raise ValueError(f"Unsupported open mode {mode!r}: use 'r' or 'w'")


class GcsFileTarget(StorageFileTarget):
    """gokart's single-file target on GCS, with gokart's labels written through gcsfs.

    gokart does both with its google-api client, which cannot reach an emulator. The labels are
    the object metadata gokart would write, added just after the upload as gokart does.
    """

    def __init__(
        self, target: GcsTarget, processor: FileProcessor, kind: StorageKind, settings: Settings
    ) -> None:
        super().__init__(target, processor, kind, settings)
        self._file_system = target.fs

    def _dump(
        self,
        obj: Any,
        task_params: dict[str, str] | None = None,
        custom_labels: dict[str, str] | None = None,
        required_task_outputs: FlattenableItems[RequiredTaskOutput] | None = None,
    ) -> None:
        with self._target.open("w") as file:  # type: ignore[no-untyped-call]
            self._processor.dump(obj, file)
        if GCSObjectMetadataClient._is_log_related_path(self._path()):
            return
        # The object was just created with the commit's metadata only. The patch repeats it:
        # GCS merges a patch's keys, but the emulator replaces them all.
        committed = commit_metadata()
        labels = GCSObjectMetadataClient._get_patched_obj_metadata(
            committed, task_params, custom_labels, required_task_outputs
        )
        if labels != committed:
            self._file_system.add_metadata(self._path(), labels)


class GcsStorage(StorageKind):
    """Objects in GCS buckets, reached through gcsfs."""

    name = "gcs"
    key_prefix_setting = "gcs_key_prefix"

    def identity(self, path: str) -> str:
        """``path`` itself: GCS object names are literal, so ``a//b`` and ``a/./b`` are different objects."""
        bucket, _, _key = path.removeprefix("gs://").partition("/")
        if not bucket:
            raise ValueError(f"GCS path {path!r} has no bucket: expected gs://bucket/object")
        return path

    def file_system_target(
        self, path: str, file_format: luigi.format.Format, settings: Settings
    ) -> luigi.target.FileSystemTarget:
        return GcsTarget(path, gcs_file_system(settings), file_format)

    def zip_client(self, path: str, temporary_directory: str, settings: Settings) -> ZipClient:
        file_system = gcs_file_system(settings)
        return RemoteZipClient(path, temporary_directory, file_system, file_system.publish)

    def last_modification_time(self, path: str, settings: Settings) -> datetime:
        return gcs_file_system(settings).modification_time(path)

    def single_file_target(self, path: str, processor: FileProcessor, settings: Settings) -> TargetOnKart:
        target = GcsTarget(path, gcs_file_system(settings), processor.format())
        return GcsFileTarget(target, processor, self, settings)
