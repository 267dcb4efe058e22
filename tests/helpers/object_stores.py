"""Real object stores for tests: moto's S3 server and gcp-storage-emulator on free ports, with fixtures."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Protocol

import boto3
import gcsfs.core
import pytest
from gcp_storage_emulator.server import create_server
from moto.server import ThreadedMotoServer

from locked_targets.settings import Settings
from locked_targets.testing import free_port

__all__ = ["gcs_endpoint", "gcs_root", "gcs_settings", "s3_endpoint", "s3_root", "s3_settings"]

HOST = "127.0.0.1"
GCS_TOKEN = "anon"
GCS_PROJECT = "test"
DUMMY_AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_START_ATTEMPTS = 5
_START_TIMEOUT_SECONDS = 10.0


class Server(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def start_on_free_port(make_server: Callable[[int], Server]) -> tuple[Server, int]:
    """Start a server on a port that was free a moment ago, and on another if someone took it meanwhile.

    Neither server reports a failed bind: its serving thread dies and ``start()`` waits for
    ever, so each start is given a bounded time.
    """
    for _attempt in range(_START_ATTEMPTS):
        port = free_port()
        server = make_server(port)
        starter = threading.Thread(target=server.start, daemon=True)
        starter.start()
        starter.join(_START_TIMEOUT_SECONDS)
        if not starter.is_alive():
            return server, port
    raise RuntimeError(f"could not start {make_server} on a free port")


def unique_bucket_name() -> str:
    """A valid S3 and GCS bucket name no other test uses."""
    return f"test-{uuid.uuid4().hex}"


def independent_gcs(endpoint: str) -> gcsfs.core.GCSFileSystem:
    """A gcsfs client with a listing cache of its own, as another process would have."""
    return gcsfs.core.GCSFileSystem(
        endpoint_url=endpoint, token=GCS_TOKEN, project=GCS_PROJECT, skip_instance_cache=True
    )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server for the run; dummy AWS credentials are set for the whole process."""
    with pytest.MonkeyPatch.context() as environment:
        for name, value in DUMMY_AWS_ENVIRONMENT.items():
            environment.setenv(name, value)
        server, port = start_on_free_port(
            lambda port: ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
        )
        try:
            yield f"http://{HOST}:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """The URL of an in-memory GCS emulator for the run."""
    server, port = start_on_free_port(lambda port: create_server(HOST, port, in_memory=True))
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_root(s3_endpoint: str) -> Iterator[str]:
    """``s3://<bucket>`` for a bucket of this test's own, emptied and deleted afterwards."""
    name = unique_bucket_name()
    bucket = boto3.resource("s3", endpoint_url=s3_endpoint).Bucket(name)
    bucket.create()
    yield f"s3://{name}"
    bucket.objects.all().delete()
    bucket.delete()


@pytest.fixture
def gcs_root(gcs_endpoint: str) -> Iterator[str]:
    """``gs://<bucket>`` for a bucket of this test's own, emptied and deleted afterwards."""
    name = unique_bucket_name()
    gcs = independent_gcs(gcs_endpoint)
    gcs.mkdir(name)
    yield f"gs://{name}"
    gcs.rm(name, recursive=True)


@pytest.fixture
def s3_settings(s3_endpoint: str) -> Settings:
    return Settings(s3_endpoint_url=s3_endpoint)


@pytest.fixture
def gcs_settings(gcs_endpoint: str) -> Settings:
    return Settings(gcs_endpoint_url=gcs_endpoint, gcs_token=GCS_TOKEN, gcs_project=GCS_PROJECT)
