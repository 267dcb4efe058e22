"""Amazon S3, or any S3-compatible endpoint, through luigi's boto3 client; objects are written once.

A finished file is published with ``If-None-Match: *``: by ``PutObject`` up to
``MULTIPART_THRESHOLD`` bytes, above it by a multipart upload whose
``CompleteMultipartUpload`` carries the condition. S3 answers 412 ``PreconditionFailed``
if the key exists, so an object is never replaced. Stores that ignore the header (older
S3-compatible servers) replace silently: write-once is then not enforced.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlsplit

import luigi
import luigi.format
from botocore.exceptions import ClientError
from gokart.s3_config import S3Config
from gokart.zip_client import ZipClient
from luigi.contrib.s3 import S3Client, S3Target

from locked_targets.errors import CommitRefused
from locked_targets.process_state import ProcessLocalMap
from locked_targets.settings import Settings
from locked_targets.storage.base import StorageKind
from locked_targets.storage.commit import before_commit, commit_metadata, holds_exclusive_lock
from locked_targets.storage.remote_zip import RemoteZipClient
from locked_targets.storage.staging import refused_if_cleared
from locked_targets.storage.write_once import WriteOnceFile

logger = logging.getLogger(__name__)

MEBIBYTE = 2**20
MULTIPART_THRESHOLD = 8 * MEBIBYTE
"""Files larger than this go as multipart uploads (a single PUT takes at most 5 GiB)."""
_PART_BYTES = 8 * MEBIBYTE  # S3's minimum is 5 MiB, except for the last part
_MAX_PARTS = 10_000  # S3's limit: larger files get larger parts
_PART_UPLOADERS = 8
_CONFLICT_ATTEMPTS = 5
_CONFLICT_BACKOFF_SECONDS = 0.2

# boto3 clients do not survive a fork: one per endpoint and process.
_clients: ProcessLocalMap[str, S3Client] = ProcessLocalMap()


def s3_client(settings: Settings) -> S3Client:
    """luigi's S3 client for ``settings``: one per endpoint and process (boto3 does not survive a fork).

    Without ``s3_endpoint_url`` it is gokart's own client, so luigi's ``[s3]`` section and
    ``AWS_ENDPOINT_URL`` apply as they do for gokart.
    """
    if settings.s3_endpoint_url is None:
        return S3Config().get_s3_client()
    endpoint_url = settings.s3_endpoint_url
    return _clients.get(endpoint_url, lambda: S3Client(endpoint_url=endpoint_url))  # type: ignore[no-untyped-call]


class S3Storage(StorageKind):
    """Objects in S3 buckets, uploaded when their file is closed: they appear only complete, and only once."""

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
        return WriteOnceS3Target(path, format=file_format, client=s3_client(settings))  # type: ignore[no-untyped-call]

    def zip_client(self, path: str, temporary_directory: str, settings: Settings) -> ZipClient:
        client = s3_client(settings)
        return RemoteZipClient(path, temporary_directory, client, functools.partial(put_once, client))

    def last_modification_time(self, path: str, settings: Settings) -> datetime:
        return last_modified(s3_client(settings), path)


def last_modified(client: S3Client, path: str) -> datetime:
    summary = client.get_key(path)  # type: ignore[no-untyped-call]
    if summary is None:
        raise FileNotFoundError(f"No such file or directory: {path}")
    return cast(datetime, summary.last_modified)


class WriteOnceS3Target(S3Target):
    """luigi's S3 target, whose written file is uploaded create-if-absent (luigi's own upload replaces)."""

    def open(self, mode: str = "r") -> Any:
        if mode != "w":
            return super().open(mode)  # type: ignore[no-untyped-call]
        return self.format.pipe_writer(
            WriteOnceFile(self.path, functools.partial(put_once, cast(S3Client, self.fs)), S3Storage())
        )


def put_once(client: S3Client, local_path: str, destination_path: str) -> None:
    """Upload a local file to ``destination_path`` unless that key exists, with the commit's metadata.

    ``CommitRefused`` if it exists; an incomplete multipart upload is aborted.
    """
    before_commit()
    bucket, key = client._path_to_bucket_and_key(destination_path)  # type: ignore[no-untyped-call]
    s3 = client.s3.meta.client
    metadata = commit_metadata()
    try:
        with refused_if_cleared(destination_path, client.exists):
            if os.path.getsize(local_path) <= MULTIPART_THRESHOLD:
                with open(local_path, "rb") as file:
                    body = file.read()
                _unless_conflicting(
                    lambda: s3.put_object(
                        Bucket=bucket, Key=key, Body=body, IfNoneMatch="*", Metadata=metadata
                    )
                )
            else:
                _put_multipart_once(s3, local_path, bucket, key, metadata)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "PreconditionFailed":
            raise CommitRefused(destination_path) from error
        raise


def _put_multipart_once(s3: Any, local_path: str, bucket: str, key: str, metadata: dict[str, str]) -> None:
    """Parts in parallel, then one conditional completion: the object appears only then, or never.

    boto3's managed transfer does not pass ``IfNoneMatch`` to the completion, hence this.
    """
    size = os.path.getsize(local_path)
    part_bytes = max(_PART_BYTES, math.ceil(size / _MAX_PARTS))
    if holds_exclusive_lock():
        _abort_unfinished_uploads(s3, bucket, key)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)["UploadId"]

    def upload_part(number: int) -> dict[str, Any]:
        with open(local_path, "rb") as file:
            file.seek((number - 1) * part_bytes)
            body = file.read(part_bytes)
        reply = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": reply["ETag"]}

    try:
        with ThreadPoolExecutor(max_workers=_PART_UPLOADERS) as pool:
            parts = list(pool.map(upload_part, range(1, math.ceil(size / part_bytes) + 1)))
        _unless_conflicting(
            lambda: s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
            )
        )
    except BaseException:
        with contextlib.suppress(ClientError):
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise


def _abort_unfinished_uploads(s3: Any, bucket: str, key: str) -> None:
    """Abort the multipart uploads of ``key`` that writers which died (or lost their lease) left.

    Called under the key's exclusive lock, so none is a live holder's. Their parts are billed
    until aborted; a writer whose upload is aborted fails at its next part or at completion.
    """
    try:
        pages = list(s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key))
    except ClientError as error:  # no s3:ListBucketMultipartUploads, or a store without the API
        logger.debug("could not list the unfinished uploads of s3://%s/%s: %s", bucket, key, error)
        return
    for page in pages:
        for upload in page.get("Uploads", []):
            if upload["Key"] == key:
                with contextlib.suppress(ClientError):  # its writer completed or aborted it meanwhile
                    s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])


def _unless_conflicting(request: Callable[[], object]) -> None:
    """Send a conditional write, again while S3 answers 409 ``ConditionalRequestConflict``.

    S3 answers so while another conditional write of the key is in flight; that one may still
    fail, so the answer is not "the key exists" and a retry learns which it is (412 or success).
    """
    for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
        try:
            request()
            return
        except ClientError as error:
            conflicting = error.response.get("Error", {}).get("Code") == "ConditionalRequestConflict"
            if not conflicting or attempt == _CONFLICT_ATTEMPTS:
                raise
        time.sleep(_CONFLICT_BACKOFF_SECONDS * attempt)
        before_commit()  # the wait may have outlasted the lease
