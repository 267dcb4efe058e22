"""Errors a user can act on: Redis down, wrong or missing password, a lock that never frees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.targets import locked_target
from locked_targets import BackendUnavailable, LockTimeout, Settings
from locked_targets.locks import connection_for, lock_key_for
from locked_targets.rwlock import LeaseTerms, ReadWriteLock
from locked_targets.testing import RedisServer, free_port


@pytest.fixture(scope="module")
def password_server() -> Iterator[RedisServer]:
    server = RedisServer(password="correct-horse").start()
    yield server
    server.stop()


def test_unreachable_redis_names_host_and_port(tmp_path: Path) -> None:
    port = free_port()
    target = locked_target(str(tmp_path / "x.pkl"), Settings(redis_url=f"redis://127.0.0.1:{port}/0"))
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}/0"):
        target.exists()


def test_wrong_password_is_reported_without_the_password(
    tmp_path: Path, password_server: RedisServer
) -> None:
    target = locked_target(
        str(tmp_path / "x.pkl"),
        Settings(redis_url=f"redis://:not-the-password@127.0.0.1:{password_server.port}/0"),
    )
    with pytest.raises(BackendUnavailable, match="authentication failed") as raised:
        target.dump({"a": 1})
    assert "not-the-password" not in str(raised.value)
    assert not (tmp_path / "x.pkl").exists()


def test_missing_password_is_reported(tmp_path: Path, password_server: RedisServer) -> None:
    target = locked_target(
        str(tmp_path / "x.pkl"), Settings(redis_url=f"redis://127.0.0.1:{password_server.port}/0")
    )
    with pytest.raises(BackendUnavailable, match=r"requires a password|authentication"):
        target.load()


def test_a_lock_that_never_frees_times_out_naming_path_key_and_holder(
    tmp_path: Path, settings: Settings
) -> None:
    path = str(tmp_path / "busy.pkl")
    impatient = Settings(
        redis_url=settings.redis_url, key_prefix=settings.key_prefix, wait_timeout_seconds=0.3
    )
    assert settings.redis_url is not None
    holder = ReadWriteLock(
        connection_for(settings.redis_url),
        lock_key_for(path, settings),
        LeaseTerms(lease_seconds=30, renewal_interval_seconds=10),
        task="Producer_abc123",
    )
    with holder.exclusive():
        target = locked_target(path, impatient)
        with pytest.raises(LockTimeout) as raised:
            target.load()
    message = str(raised.value)
    assert path in message
    assert lock_key_for(path, settings).base in message
    assert "task Producer_abc123" in message
    assert "holding the write lock" in message


def test_redis_going_down_surfaces_as_backend_unavailable(tmp_path: Path) -> None:
    server = RedisServer().start()
    settings = Settings(redis_url=server.url, lease_seconds=30)
    target = locked_target(str(tmp_path / "x.pkl"), settings)
    target.dump({"a": 1})
    server.kill()
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{server.port}"):
        target.load()
