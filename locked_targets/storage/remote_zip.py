"""gokart's zip client for object stores: a multi-file target packed into one archive and moved whole."""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Protocol

from gokart.zip_client import ZipClient

from locked_targets.storage.write_once import Publish


class ObjectStoreClient(Protocol):
    """What a remote zip client asks of its store: luigi's ``S3Client`` and ``GcsFileSystem`` answer it."""

    def exists(self, path: str, /) -> bool: ...

    def get(self, path: str, destination_local_path: str, /) -> None: ...

    def remove(self, path: str, /) -> bool: ...


class RemoteZipClient(ZipClient):
    """A model or large-DataFrame target on an object store, uploaded and downloaded as one archive.

    As in gokart, the archive sits beside the caller's temporary directory (``<directory>.zip``),
    so it is as private as that directory; unlike gokart, it is deleted once moved. ``publish``
    uploads it create-if-absent, so the archive appears only complete, and never over another.
    """

    def __init__(
        self, path: str, temporary_directory: str, store: ObjectStoreClient, publish: Publish
    ) -> None:
        self._path = path
        self._temporary_directory = temporary_directory.rstrip("/")
        self._store = store
        self._publish = publish
        self._extension = os.path.splitext(path)[1]

    @property
    def path(self) -> str:
        return self._path

    def exists(self) -> bool:
        return self._store.exists(self._path)

    def make_archive(self) -> None:
        if not os.path.isdir(self._temporary_directory):
            # shutil.make_archive would archive the current directory instead of failing.
            raise FileNotFoundError(f"Temporary directory {self._temporary_directory} is not found.")
        archive = shutil.make_archive(
            base_name=self._temporary_directory,
            format=self._extension[1:],
            root_dir=self._temporary_directory,
        )
        try:
            self._publish(archive, self._path)
        finally:
            os.remove(archive)

    def unpack_archive(self) -> None:
        os.makedirs(self._temporary_directory, exist_ok=True)
        archive = self._temporary_directory + self._extension
        try:
            self._store.get(self._path, archive)
            shutil.unpack_archive(archive, extract_dir=self._temporary_directory, format=self._extension[1:])
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(archive)

    def remove(self) -> None:
        self._store.remove(self._path)
