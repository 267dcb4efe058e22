"""Failover, honestly handled: grants the replicas acknowledge (``min_replicas_acked``), holders a
failover forgot, releases sent to a master that is gone, and fencing tokens across a failover.

The servers are real: a standalone ``redis-server`` without replicas, and Sentinel deployments (a
master, a replica, three sentinels: ``locked_targets.testing.SentinelDeployment``) whose master is
failed over by ``SENTINEL FAILOVER`` or killed, with replication to the replica stalled where a
failover must lose what the master wrote.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import locked_targets
from helpers.lock_processes import SPAWN
from helpers.target_processes import hold_lock_of
from helpers.waiting import eventually
from locked_targets import BackendUnavailable, ConfigurationError, LockLost, Settings
from locked_targets.locks import connection_for, lease_terms, lock_key_for
from locked_targets.rwlock import HeldLock, LockMode, ReadWriteLock, take_ahead, taken_ahead
from locked_targets.rwlock.releases import wait_until_sent
from locked_targets.testing import RedisServer, SentinelDeployment

# Generous: every wait in these tests is bounded by it.
BOUND_SECONDS = 30.0
SHORT_WAIT_FOR_REPLICAS_SECONDS = 0.05


@pytest.fixture
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    """A deployment of the test's own: a failover changes which server is the master, a stall its replica."""
    with SentinelDeployment(str(tmp_path_factory.mktemp("sentinels"))) as started:
        yield started


@pytest.fixture
def asking_a_replica_of_none(private_redis: RedisServer, key_prefix: str) -> Settings:
    """Settings that ask one replica to acknowledge each grant, of a server that has none."""
    return Settings(
        redis_url=private_redis.url,
        key_prefix=key_prefix,
        min_replicas_acked=1,
        min_replicas_timeout_seconds=SHORT_WAIT_FOR_REPLICAS_SECONDS,
    )


def lock_of(path: str, settings: Settings) -> ReadWriteLock:
    """The lock of the file at ``path``, with the lease and the replicas ``settings`` ask for."""
    assert settings.redis_url is not None
    return ReadWriteLock(
        connection_for(settings.redis_url),
        lock_key_for(path, settings),
        lease_terms(settings),
        min_replicas_acked=settings.min_replicas_acked,
        min_replicas_timeout_seconds=settings.min_replicas_timeout_seconds,
    )


def through_sentinels(deployment: SentinelDeployment, key_prefix: str, **overrides: Any) -> Settings:
    return Settings(redis_url=deployment.url, key_prefix=key_prefix, **{"lease_seconds": 30, **overrides})


def lock_a_failover_will_forget(deployment: SentinelDeployment, path: str, key_prefix: str) -> ReadWriteLock:
    """A lock renewed every 2 s, on a deployment whose replica receives nothing the master writes from now."""
    settings = through_sentinels(deployment, key_prefix, renewal_interval_seconds=2)
    deployment.stall_replication()
    return lock_of(path, settings)


def wait_commands(client: redis.Redis) -> int:
    """How many WAIT commands the server ran since its statistics were last reset."""
    calls: int = client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
    return calls


def held_lock_keys(client: redis.Redis, lock: ReadWriteLock) -> int:
    """How many of the keys that hold, or wait for, ``lock`` exist on the server of ``client``."""
    keys = lock.keys
    found: int = client.exists(keys.writer, keys.readers, keys.waiting_writers, keys.holders)
    return found


def test_no_wait_is_sent_while_min_replicas_acked_is_0(
    private_redis: RedisServer, tmp_path: Path, key_prefix: str
) -> None:
    lock = lock_of(
        str(tmp_path / "unacknowledged.pkl"), Settings(redis_url=private_redis.url, key_prefix=key_prefix)
    )
    with redis.Redis.from_url(private_redis.url) as client:
        client.config_resetstat()

        lock.acquire(LockMode.EXCLUSIVE).release()
        lock.acquire(LockMode.SHARED).release()

        assert "cmdstat_evalsha" in client.info("commandstats")
        assert wait_commands(client) == 0


@pytest.mark.parametrize("mode", [LockMode.EXCLUSIVE, LockMode.SHARED], ids=str)
def test_a_grant_no_replica_acknowledges_is_given_back_as_backend_unavailable(
    private_redis: RedisServer, asking_a_replica_of_none: Settings, tmp_path: Path, mode: LockMode
) -> None:
    lock = lock_of(str(tmp_path / "unreplicated.pkl"), asking_a_replica_of_none)

    with pytest.raises(BackendUnavailable) as refused:
        lock.acquire(mode)

    message = str(refused.value)
    assert f"127.0.0.1:{private_redis.port}/0" in message
    assert "0 of the 1 replicas min_replicas_acked asks for acknowledged" in message
    assert f"min_replicas_timeout_seconds ({SHORT_WAIT_FOR_REPLICAS_SECONDS:g} s)" in message
    with redis.Redis.from_url(private_redis.url) as client:
        assert held_lock_keys(client, lock) == 0


def test_a_server_that_does_not_run_wait_is_a_configuration_error_and_keeps_no_lock(
    key_prefix: str, tmp_path: Path
) -> None:
    server = RedisServer(directives=["--rename-command", "WAIT", ""]).start()
    try:
        settings = Settings(redis_url=server.url, key_prefix=key_prefix, min_replicas_acked=1)
        lock = lock_of(str(tmp_path / "no-wait.pkl"), settings)

        with pytest.raises(ConfigurationError, match="does not answer WAIT"):
            lock.acquire(LockMode.EXCLUSIVE)

        with redis.Redis.from_url(server.url) as client:
            assert held_lock_keys(client, lock) == 0
    finally:
        server.stop()


def test_a_locked_target_asks_for_the_replicas_its_settings_name(
    asking_a_replica_of_none: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "unreplicated.pkl"

    with pytest.raises(BackendUnavailable, match="min_replicas_acked"):
        locked_targets.make_target(str(path), settings=asking_a_replica_of_none).dump({"written": True})

    assert not path.exists()


def test_locks_taken_ahead_are_not_kept_unless_the_replicas_acknowledge_them(
    private_redis: RedisServer, asking_a_replica_of_none: Settings, tmp_path: Path
) -> None:
    locks = [lock_of(str(tmp_path / name), asking_a_replica_of_none) for name in ("first.pkl", "second.pkl")]
    with redis.Redis.from_url(private_redis.url) as client:
        client.config_resetstat()

        assert not take_ahead(locks)

        assert wait_commands(client) >= 1, "the replicas were not asked"
        for lock in locks:
            assert taken_ahead().peek(lock.keys.base) is None
            assert held_lock_keys(client, lock) == 0


def test_locks_taken_ahead_are_kept_once_the_replica_acknowledges_them(
    deployment: SentinelDeployment, tmp_path: Path, key_prefix: str
) -> None:
    settings = through_sentinels(deployment, key_prefix, min_replicas_acked=1)
    locks = [lock_of(str(tmp_path / name), settings) for name in ("first.pkl", "second.pkl")]
    master = deployment.client(deployment.master_port())
    master.config_resetstat()

    assert take_ahead(locks)

    assert wait_commands(master) >= 1, "the replica was not asked"
    for lock in locks:
        assert taken_ahead().peek(lock.keys.base) is not None
    taken_ahead().release_mine()


def test_a_shared_grant_is_acknowledged_in_its_own_round_trip(
    deployment: SentinelDeployment, tmp_path: Path, key_prefix: str
) -> None:
    """``WAIT`` follows the shared attempt on its connection: no renewal to confirm the grant."""
    lock = lock_of(
        str(tmp_path / "read.pkl"), through_sentinels(deployment, key_prefix, min_replicas_acked=1)
    )
    lock.acquire(LockMode.SHARED).release()  # the master loads the scripts
    assert wait_until_sent()
    master = deployment.client(deployment.master_port())
    master.config_resetstat()

    held = lock.acquire(LockMode.SHARED)

    stats = master.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 1, "only the attempt"
    assert wait_commands(master) == 1
    held.release()


def test_under_on_redis_error_wait_an_unacknowledged_grant_is_retried_until_the_replica_has_it(
    deployment: SentinelDeployment, tmp_path: Path, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = through_sentinels(
        deployment,
        key_prefix,
        on_redis_error="wait",
        redis_retry_deadline_seconds=BOUND_SECONDS,
        min_replicas_acked=1,
        min_replicas_timeout_seconds=SHORT_WAIT_FOR_REPLICAS_SECONDS,
    )
    lock = lock_of(str(tmp_path / "retried.pkl"), settings)
    acquired: list[HeldLock] = []
    acquiring = threading.Thread(target=lambda: acquired.append(lock.acquire(LockMode.EXCLUSIVE)))
    deployment.stall_replication()
    try:
        acquiring.start()
        eventually(
            lambda: any("0 of the 1 replicas" in record.getMessage() for record in caplog.records),
            "a grant to be given back and tried again",
            BOUND_SECONDS,
        )
        assert acquired == []
    finally:
        deployment.resume_replication()
    acquiring.join(BOUND_SECONDS)

    (held,) = acquired
    assert deployment.client(deployment.replica_port()).get(lock.keys.writer) == held.token.encode()
    held.release()


def test_a_holder_the_new_master_does_not_know_learns_it_at_its_next_renewal(
    deployment: SentinelDeployment, tmp_path: Path, key_prefix: str
) -> None:
    lock = lock_a_failover_will_forget(deployment, str(tmp_path / "forgotten.pkl"), key_prefix)
    held = lock.acquire(LockMode.EXCLUSIVE)

    deployment.fail_over()

    eventually(lambda: held.lost, "a renewal on the new master", BOUND_SECONDS)
    with pytest.raises(LockLost, match="no longer knew this holder at renewal"):
        held.release()


def test_a_release_that_fails_never_replaces_the_outcome_its_block_decided(
    deployment: SentinelDeployment, tmp_path: Path, key_prefix: str
) -> None:
    lock = lock_a_failover_will_forget(deployment, str(tmp_path / "decided.pkl"), key_prefix)
    new_master = deployment.replica_port()

    with (  # noqa: PT012
        pytest.raises(LockLost, match="no longer knew this holder at renewal"),
        lock.exclusive() as held,
    ):
        deployment.kill_master()
        deployment.await_master(new_master)
        eventually(lambda: held.lost, "a renewal on the new master", BOUND_SECONDS)
        deployment.kill_master()  # the release meets no server at all
        held.ensure_held()


def test_fencing_tokens_grow_across_a_failover_that_kept_the_counter(
    deployment: SentinelDeployment, tmp_path: Path, key_prefix: str
) -> None:
    """The old master's tokens ran an hour ahead of the new master's clock: the counter carries them.

    The new master has no replica left once the old one is dead, so its grant asks for none.
    """
    settings = through_sentinels(
        deployment, key_prefix, on_redis_error="wait", redis_retry_deadline_seconds=BOUND_SECONDS
    )
    lock = lock_of(str(tmp_path / "fenced.pkl"), settings)
    an_hour_ahead = int((time.time() + 3600) * 1_000_000)
    deployment.client(deployment.master_port()).set(lock.keys.fence, an_hour_ahead)
    with dataclasses.replace(lock, min_replicas_acked=1).exclusive() as held:
        before = held.fencing_token
    wait_until_sent()
    new_master = deployment.replica_port()

    deployment.kill_master()
    deployment.await_master(new_master)

    with lock.exclusive() as held:
        after = held.fencing_token
    assert before is not None
    assert before > an_hour_ahead
    assert after is not None
    assert after > before


def test_fencing_tokens_grow_across_a_failover_that_lost_the_counter(
    deployment: SentinelDeployment, tmp_path: Path, key_prefix: str
) -> None:
    settings = through_sentinels(
        deployment, key_prefix, on_redis_error="wait", redis_retry_deadline_seconds=BOUND_SECONDS
    )
    lock = lock_of(str(tmp_path / "fenced.pkl"), settings)
    deployment.stall_replication()
    with lock.exclusive() as held:
        before = held.fencing_token
    wait_until_sent()
    new_master = deployment.replica_port()

    deployment.kill_master()
    deployment.await_master(new_master)

    assert deployment.client(new_master).get(lock.keys.fence) is None
    with lock.exclusive() as held:
        after = held.fencing_token
    assert before is not None
    assert after is not None
    # The sentinels waited down-after-milliseconds before failing over: the clock floor's margin.
    assert after - before >= deployment.down_after_seconds * 1_000_000


@pytest.mark.parametrize("failover", ["forced", "master killed"])
def test_a_waiter_on_the_new_master_gets_the_lock_well_within_a_lease_of_a_release_sent_to_the_old_one(
    deployment: SentinelDeployment, tmp_path: Path, key_prefix: str, failover: str
) -> None:
    """The holder's release meets the demoted master's closed connections, or a dead master, and is sent
    again every 0.2 s until it reaches the new one: the waiter gets the lock about then, plus its own
    retry pause under ``on_redis_error = wait`` (which doubles while the master is down), not a lease later.
    """
    lease_seconds = 60.0
    settings = through_sentinels(
        deployment,
        key_prefix,
        lease_seconds=lease_seconds,
        on_redis_error="wait",
        redis_retry_deadline_seconds=lease_seconds,
        min_replicas_acked=1,  # the new master knows the lock, and so blocks the waiter
    )
    path = str(tmp_path / "contended.pkl")
    lock = lock_of(path, settings)
    held = lock.acquire(LockMode.EXCLUSIVE)
    acquired = SPAWN.Event()
    waiter = SPAWN.Process(
        target=hold_lock_of, args=(path, settings, LockMode.EXCLUSIVE.value, 0.0, acquired)
    )
    waiter.start()
    try:
        master = deployment.client(deployment.master_port())
        eventually(lambda: master.zcard(lock.keys.waiting_writers) == 1, "the waiter to wait", BOUND_SECONDS)
        new_master = deployment.replica_port()
        failing_over = time.monotonic()
        if failover == "forced":
            deployment.fail_over()
        else:
            deployment.kill_master()
        released = time.monotonic()
        held.release()
        deployment.await_master(new_master)
        promoted = time.monotonic()

        assert acquired.wait(lease_seconds / 2)
        granted = time.monotonic()
    finally:
        waiter.join(BOUND_SECONDS)
        if waiter.is_alive():
            waiter.terminate()
    print(
        f"{failover}: failover {promoted - failing_over:.2f} s; the waiter got the lock "
        f"{granted - released:.2f} s after the release, {granted - promoted:.2f} s after the promotion"
    )
