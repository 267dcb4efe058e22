"""Shared fixtures: a real Redis server for the whole run, fresh key prefixes per test.

The object-store fixtures (moto's S3 server, the GCS emulator) live in object_stores.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from object_stores import (  # noqa: F401 -- imported to register the object-store fixtures
    gcs_endpoint,
    gcs_root,
    gcs_settings,
    s3_endpoint,
    s3_root,
    s3_settings,
)

from locked_targets.factories import build_single_file_target
from locked_targets.settings import Settings
from locked_targets.target import LockedTarget
from locked_targets.testing import RedisServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` when set (an existing server), else a private server started for the run."""
    existing = os.environ.get("REDIS_URL")
    if existing:
        yield existing
        return
    server = RedisServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def key_prefix() -> str:
    """A key namespace of this test's own, so tests never see each other's locks."""
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=key_prefix, lease_seconds=30)


def keys_without_ttl(client: redis.Redis, prefix: str) -> list[bytes]:
    """Lock keys under ``prefix`` that would never expire: must always be empty."""
    return [key for key in client.scan_iter(match=f"{prefix}*") if client.pttl(key) < 0]


def locked_target(path: str, settings: Settings) -> LockedTarget:
    """A locked single-file target at ``path`` (format from its extension) using ``settings``."""
    return build_single_file_target(
        path, unique_id=None, processor=None, store_index_in_feather=True, settings=settings
    )
