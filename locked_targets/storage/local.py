"""Local disk or NFS: files named by their absolute, normalized path."""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime

import luigi
import luigi.format
from gokart.zip_client import ZipClient, _unzip_file

from locked_targets.settings import Settings
from locked_targets.storage.base import StorageKind


class LocalStorage(StorageKind):
    """Files on a local or network file system; luigi writes them to a temporary file and renames."""

    name = "local"
    key_prefix_setting = "local_key_prefix"

    def identity(self, path: str) -> str:
        return os.path.normpath(os.path.abspath(path))

    def file_system_target(
        self, path: str, file_format: luigi.format.Format, settings: Settings
    ) -> luigi.target.FileSystemTarget:
        return luigi.LocalTarget(path, format=file_format)  # type: ignore[no-untyped-call]

    def zip_client(self, path: str, temporary_directory: str, settings: Settings) -> ZipClient:
        return LocalZipArchive(path, temporary_directory)

    def last_modification_time(self, path: str, settings: Settings) -> datetime:
        return datetime.fromtimestamp(os.path.getmtime(path))


class LocalZipArchive(ZipClient):
    """A directory zipped into one local file that appears whole or not at all.

    gokart's ``LocalZipClient`` writes the archive in place (a crash leaves half a zip)
    and its ``remove`` leaves the file behind (it calls ``rmtree`` on a file).
    """

    def __init__(self, file_path: str, temporary_directory: str) -> None:
        self._file_path = file_path
        self._temporary_directory = temporary_directory

    def exists(self) -> bool:
        return os.path.exists(self._file_path)

    def make_archive(self) -> None:
        directory = os.path.dirname(os.path.abspath(self._file_path))
        os.makedirs(directory, exist_ok=True)
        extension = os.path.splitext(self._file_path)[1]
        with tempfile.TemporaryDirectory(dir=directory, prefix=".locked_targets-") as staging:
            archive = shutil.make_archive(
                base_name=os.path.join(staging, "archive"),
                format=extension[1:],
                root_dir=self._temporary_directory,
            )
            os.replace(archive, self._file_path)

    def unpack_archive(self) -> None:
        _unzip_file(fp=self._file_path, extract_dir=self._temporary_directory)

    def remove(self) -> None:
        os.remove(self._file_path)

    @property
    def path(self) -> str:
        return self._file_path
