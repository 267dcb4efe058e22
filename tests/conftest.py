"""Shared fixtures: a real Redis server for the whole run, fresh key prefixes per test.

Only fixtures live here; the tests' helpers are in the ``helpers`` package. The object-store
fixtures (moto's S3 server, the GCS emulator) live in ``helpers/object_stores.py`` and are
registered by importing them here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import luigi
import luigi.configuration
import pytest
import redis

from helpers.object_stores import (  # noqa: F401 -- imported to register the object-store fixtures
    gcs_endpoint,
    gcs_root,
    gcs_settings,
    s3_endpoint,
    s3_root,
    s3_settings,
)
from locked_targets.settings import Settings
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
def private_redis() -> Iterator[RedisServer]:
    """A server of this test's own, so command counts are not disturbed by other tests."""
    server = RedisServer().start()
    yield server
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


@pytest.fixture
def luigi_config() -> Iterator[luigi.configuration.LuigiConfigParser]:
    """luigi's configuration, emptied of our sections for the test and restored after."""
    config = luigi.configuration.get_config()  # type: ignore[no-untyped-call]
    saved = {
        section: dict(config.items(section))
        for section in ("locked_targets", "TaskOnKart")
        if config.has_section(section)
    }
    for section in ("locked_targets", "TaskOnKart"):
        config.remove_section(section)
        config.add_section(section)
    yield config
    for section in ("locked_targets", "TaskOnKart"):
        config.remove_section(section)
        if section in saved:
            config.add_section(section)
            for name, value in saved[section].items():
                config.set(section, name, value)
