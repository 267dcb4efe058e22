"""Unfinished S3 multipart uploads, as a writer that died mid-upload leaves them, seen through boto3."""

from __future__ import annotations

import boto3


def bucket_and_key(path: str) -> tuple[str, str]:
    bucket, key = path.removeprefix("s3://").split("/", 1)
    return bucket, key


def unfinished_uploads(endpoint: str, path: str) -> list[str]:
    """The multipart uploads of the S3 object at ``path`` that were neither completed nor aborted."""
    bucket, key = bucket_and_key(path)
    listing = boto3.client("s3", endpoint_url=endpoint).list_multipart_uploads(Bucket=bucket, Prefix=key)
    return [upload["UploadId"] for upload in listing.get("Uploads", []) if upload["Key"] == key]


def leave_unfinished_upload(endpoint: str, path: str) -> None:
    """Start a multipart upload of ``path`` and upload a part, then stop, as a killed writer does."""
    bucket, key = bucket_and_key(path)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"half a part")
