"""Errors a user can act on: Redis down, silent or not Redis, a wrong password, a lock that never frees.

No message, repr or log line of these tests shows a password they use.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import luigi.configuration
import luigi.task_register
import pytest

import locked_targets
from helpers.targets import locked_target
from helpers.tcp_peers import TcpPeer
from locked_targets import BackendUnavailable, ConfigurationError, LockTimeout, Settings
from locked_targets.locks import connection_for, lock_key_for
from locked_targets.rwlock import LeaseTerms, ReadWriteLock
from locked_targets.testing import RedisServer, free_port

PASSWORDS = ("correct-horse", "not-the-password", "typo-s3cret", "query-s3cret")
# Far below the 62 s redis-py's retries once took, far above the 5 s connect timeout (twice:
# an acquisition that fails also withdraws its attempt).
PROMPT_SECONDS = 20.0


@pytest.fixture(autouse=True)
def no_log_line_shows_a_password(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every log line of every test here, at every level, is searched for the passwords used."""
    with caplog.at_level(logging.DEBUG):
        yield
    assert [line for line in caplog.messages if any(password in line for password in PASSWORDS)] == []


def shown_without_passwords(error: BaseException) -> str:
    """The message of ``error``, once it, its repr and its pickle are found free of every password."""
    shown = [str(error), repr(error), repr(pickle.loads(pickle.dumps(error)).__dict__)]
    assert [text for text in shown if any(password in text for password in PASSWORDS)] == []
    return str(error)


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
    shown_without_passwords(raised.value)
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


def settings_used(redis_url: str, path: str) -> Settings:
    """Settings for ``redis_url``, after their repr is checked, used for one dump of ``path``."""
    settings = Settings(redis_url=redis_url, shared_lease_idle_seconds=0)
    assert not any(password in repr(settings) for password in PASSWORDS)
    locked_target(path, settings).dump({"a": 1})
    return settings


@pytest.mark.parametrize(
    "url",
    [
        "redis://:not-the-password@127.0.0.1:{port}/0",
        "redis://someone:not-the-password@127.0.0.1:{port}/0",
        "redis://127.0.0.1:{port}/0?password=query-s3cret",
        "rediss//user:typo-s3cret@127.0.0.1:{port}/0",
        "redis:/user:typo-s3cret@127.0.0.1:{port}/0",
        "redis://user:typo-s3cret@127.0.0.1:{port}/0?socket_timeout=abc",
        "redis://:typo-s3cret@127.0.0.1:{port}/16",
    ],
)
def test_no_message_of_a_refused_url_or_password_shows_the_password(
    tmp_path: Path, password_server: RedisServer, url: str
) -> None:
    with pytest.raises((ConfigurationError, BackendUnavailable)) as raised:
        settings_used(url.format(port=password_server.port), str(tmp_path / "x.pkl"))
    assert "redis_url" in shown_without_passwords(raised.value) or "Redis at 127.0.0.1" in str(raised.value)


def test_a_server_that_never_answers_is_reported_promptly_naming_it(tmp_path: Path) -> None:
    with TcpPeer() as silent:
        settings = Settings(redis_url=f"redis://127.0.0.1:{silent.port}/0", shared_lease_idle_seconds=0)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match=f"Redis at 127.0.0.1:{silent.port}/0 is unavailable"):
            locked_target(str(tmp_path / "x.pkl"), settings).exists()
    assert time.monotonic() - started < PROMPT_SECONDS


def test_tls_to_a_plain_redis_port_is_reported_promptly_naming_it(tmp_path: Path) -> None:
    plain = RedisServer().start()
    try:
        url = f"rediss://127.0.0.1:{plain.port}/0?ssl_cert_reqs=none"
        settings = Settings(redis_url=url, shared_lease_idle_seconds=0)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match=f"Redis at 127.0.0.1:{plain.port}/0 is unavailable"):
            locked_target(str(tmp_path / "x.pkl"), settings).exists()
        assert time.monotonic() - started < PROMPT_SECONDS
    finally:
        plain.stop()


class TaskOfTheGokartSection(locked_targets.TaskOnKart[int]):
    """A task whose Redis comes from ``[TaskOnKart]``, as in a project configured for gokart's lock."""

    def run(self) -> None:
        self.dump(1)


GokartOption = Callable[[str, str], None]


@pytest.fixture
def gokart_option() -> Iterator[GokartOption]:
    """Sets an option of ``[TaskOnKart]``, emptied for the test and restored after it."""
    config = luigi.configuration.get_config()  # type: ignore[no-untyped-call]
    saved = dict(config.items("TaskOnKart")) if config.has_section("TaskOnKart") else None
    config.remove_section("TaskOnKart")
    config.add_section("TaskOnKart")
    luigi.task_register.Register.clear_instance_cache()  # type: ignore[no-untyped-call]
    yield lambda name, value: config.set("TaskOnKart", name, value)
    config.remove_section("TaskOnKart")
    if saved is not None:
        config.add_section("TaskOnKart")
        for name, value in saved.items():
            config.set("TaskOnKart", name, value)
    luigi.task_register.Register.clear_instance_cache()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("option", "value"),
    [("redis_port", "abc"), ("redis_port", "70000"), ("redis_timeout", "1.5"), ("redis_timeout", "0")],
)
def test_a_task_with_a_bad_gokart_redis_option_raises_configuration_error_naming_it(
    gokart_option: GokartOption, option: str, value: str
) -> None:
    gokart_option("redis_host", "127.0.0.1")
    gokart_option("redis_port", "6379")
    gokart_option(option, value)
    with pytest.raises(ConfigurationError, match=rf"\[TaskOnKart\] {option}='{value}'"):
        TaskOfTheGokartSection()


def test_a_task_option_given_to_the_task_is_not_read_from_the_section(gokart_option: GokartOption) -> None:
    gokart_option("redis_port", "abc")
    assert TaskOfTheGokartSection(redis_port=6379).redis_port == 6379
