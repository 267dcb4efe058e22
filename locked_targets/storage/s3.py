"""Amazon S3, or any S3-compatible endpoint, through luigi's boto3 client."""

from __future__ import annotations

import os
from datetime import datetime
from typing import cast
from urllib.parse import urlsplit

import luigi
import luigi.format
from gokart.file_processor import FileProcessor
from gokart.s3_config import S3Config
from gokart.target import SingleFileTarget, TargetOnKart
from gokart.zip_client import ZipClient
from luigi.contrib.s3 import S3Client, S3Target

from locked_targets.settings import Settings
from locked_targets.storage.base import StorageKind, unlocked_params
from locked_targets.storage.remote_zip import RemoteZipClient

_clients: dict[tuple[int, str], S3Client] = {}


def s3_client(settings: Settings) -> S3Client:
    """luigi's S3 client for ``settings``: one per endpoint and process (boto3 does not survive a fork).

    Without ``s3_endpoint_url`` it is gokart's own client, so luigi's ``[s3]`` section and
    ``AWS_ENDPOINT_URL`` apply as they do for gokart.
    """
    if settings.s3_endpoint_url is None:
        return S3Config().get_s3_client()
    key = (os.getpid(), settings.s3_endpoint_url)
    client = _clients.get(key)
    if client is None:
        client = _clients.setdefault(key, S3Client(endpoint_url=settings.s3_endpoint_url))  # type: ignore[no-untyped-call]
    return client


class S3Storage(StorageKind):
    """Objects in S3 buckets; luigi uploads a written file on close, so an object appears only complete."""

    name = "s3"
    key_prefix_setting = "s3_key_prefix"

    def identity(self, path: str) -> str:
        """``path`` itself: S3 keys are literal, so ``a//b`` and ``a/./b`` are different objects."""
        if not urlsplit(path, allow_fragments=False).netloc:
            raise ValueError(f"S3 path {path!r} has no bucket: expected s3://bucket/key")
        return path

    def file_system_target(
        self, path: str, file_format: luigi.format.Format, settings: Settings
    ) -> luigi.target.FileSystemTarget:
        return S3Target(path, format=file_format, client=s3_client(settings))  # type: ignore[no-untyped-call]

    def zip_client(self, path: str, temporary_directory: str, settings: Settings) -> ZipClient:
        return RemoteZipClient(path, temporary_directory, s3_client(settings))

    def last_modification_time(self, path: str, settings: Settings) -> datetime:
        return last_modified(s3_client(settings), path)

    def single_file_target(self, path: str, processor: FileProcessor, settings: Settings) -> TargetOnKart:
        return S3FileTarget(
            target=self.file_system_target(path, processor.format(), settings),
            processor=processor,
            task_lock_params=unlocked_params(path),
        )


class S3FileTarget(SingleFileTarget):
    """gokart's single-file target on S3, its modification time asked of the client that wrote it.

    gokart asks its default client, which does not know about ``s3_endpoint_url``.
    """

    def _last_modification_time(self) -> datetime:
        return last_modified(self._target.fs, self._path())


def last_modified(client: S3Client, path: str) -> datetime:
    summary = client.get_key(path)  # type: ignore[no-untyped-call]
    if summary is None:
        raise FileNotFoundError(f"No such file or directory: {path}")
    return cast(datetime, summary.last_modified)
