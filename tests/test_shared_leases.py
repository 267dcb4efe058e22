"""Shared leases kept between reads: hot reads skip Redis, yet writers still get in promptly."""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from pathlib import Path

import redis

from helpers.lock_processes import SPAWN
from helpers.target_processes import hold_lock_of, read_and_exit, read_repeatedly
from helpers.targets import locked_target
from locked_targets.locks import lock_for, lock_key_for
from locked_targets.rwlock import LockMode
from locked_targets.rwlock.releases import wait_until_sent
from locked_targets.settings import Settings
from locked_targets.target import keep_read_leases_ahead
from locked_targets.testing import RedisServer


def start_keeping_reader(path: str, settings: Settings) -> multiprocessing.process.BaseProcess:
    """Another process that loads ``path`` in a loop for 6 s, keeping its shared lease between loads."""
    started: multiprocessing.Queue[str] = SPAWN.Queue()
    reader = SPAWN.Process(target=read_repeatedly, args=(path, settings, 6.0, started))
    reader.start()
    assert started.get(timeout=30) == "reading"
    time.sleep(0.5)  # its listener has subscribed: the lease is now kept across loads
    return reader


def script_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))


def test_repeated_reads_in_one_process_ask_redis_about_once(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    settings = Settings(redis_url=private_redis.url)
    target = locked_target(str(tmp_path / "hot.pkl"), settings)
    target.dump("hot")
    target.load()
    # The dump's release and the first load's acquisition are theirs, not the repeated reads':
    # counted before (on a fresh server at a port an earlier test's server had, a script is
    # refused once and sent again, in the background too).
    assert wait_until_sent()
    client = private_redis.client()
    before = script_calls(client)
    for _ in range(200):
        assert target.load() == "hot"
    assert script_calls(client) - before <= 2


def test_keeping_leases_can_be_switched_off(tmp_path: Path, private_redis: RedisServer) -> None:
    settings = Settings(redis_url=private_redis.url, shared_lease_idle_seconds=0)
    target = locked_target(str(tmp_path / "cold.pkl"), settings)
    target.dump("cold")
    client = private_redis.client()
    before = script_calls(client)
    for _ in range(20):
        target.load()
    assert wait_until_sent()
    assert script_calls(client) - before >= 40  # acquire and release for every load


def test_a_writer_gets_in_while_another_process_keeps_reading(tmp_path: Path, settings: Settings) -> None:
    path = str(tmp_path / "hot.pkl")
    locked_target(path, settings).dump("before")
    reader = start_keeping_reader(path, settings)
    began = time.monotonic()
    writer = locked_target(path, settings)
    writer.remove()
    writer.dump("after")
    took = time.monotonic() - began
    reader.join(timeout=30)
    print(f"the writer got in after {took * 1000:.0f} ms (lease {settings.lease_seconds:.0f} s)")
    assert took < 2.0, "the reader's kept lease should be given back as soon as the writer asks"
    assert locked_target(path, settings).load() == "after"


def test_idle_kept_leases_are_given_back(
    tmp_path: Path, settings: Settings, redis_client: redis.Redis
) -> None:
    quick = dataclasses.replace(settings, shared_lease_idle_seconds=0.5)
    path = str(tmp_path / "idle.pkl")
    target = locked_target(path, quick)
    target.dump("x")
    target.load()  # starts this process's revocation listener
    time.sleep(0.2)
    target.load()  # kept: the listener is subscribed
    readers = lock_key_for(path, quick).readers
    assert redis_client.zcard(readers) == 1
    time.sleep(2.5)
    assert redis_client.zcard(readers) == 0


def test_a_process_that_exits_gives_back_its_kept_leases(
    tmp_path: Path, settings: Settings, redis_client: redis.Redis
) -> None:
    path = str(tmp_path / "exit.pkl")
    locked_target(path, dataclasses.replace(settings, shared_lease_idle_seconds=0)).dump("x")
    kept = SPAWN.Queue()
    process = SPAWN.Process(target=read_and_exit, args=(path, settings, kept))
    process.start()
    assert kept.get(timeout=30) == 1, "the process kept its shared lease while it ran"
    process.join(timeout=30)
    assert process.exitcode == 0
    assert redis_client.zcard(lock_key_for(path, settings).readers) == 0


def test_a_malformed_revocation_does_not_stop_the_listener(
    tmp_path: Path, settings: Settings, redis_client: redis.Redis
) -> None:
    path = str(tmp_path / "hot.pkl")
    locked_target(path, settings).dump("before")
    reader = start_keeping_reader(path, settings)
    redis_client.publish(b"junk\xff}:revoke", b"anyone on this Redis may publish this")
    time.sleep(0.2)
    began = time.monotonic()
    locked_target(path, settings).remove()
    took = time.monotonic() - began
    reader.join(timeout=30)
    assert took < 2.0, "the reader's listener should still hear the writer's revocation"


def test_a_forked_child_reads_under_a_lease_of_its_own_not_its_parents(
    tmp_path: Path, settings: Settings
) -> None:
    lock = lock_for(str(tmp_path / "x.pkl"), settings, wait_timeout_seconds=30)
    for _ in range(2):  # the parent now keeps its shared lease between reads
        with lock.shared():
            pass
    fork = multiprocessing.get_context("fork")
    reading, done = fork.Event(), fork.Event()

    def read_slowly() -> None:
        with lock.shared():
            reading.set()
            time.sleep(2.0)
            done.set()

    child = fork.Process(target=read_slowly)
    child.start()
    try:
        assert reading.wait(timeout=30), "the child did not start reading"
        with lock.exclusive():  # gives back the parent's lease; the child's own must still block
            assert done.is_set(), "a writer got in while the forked child was reading"
    finally:
        child.join(timeout=30)


def test_leases_kept_ahead_serve_the_checks_and_loads_that_follow_without_a_script(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    settings = Settings(redis_url=private_redis.url)
    targets = [locked_target(str(tmp_path / f"dependency-{index}.pkl"), settings) for index in range(5)]
    for index, target in enumerate(targets):
        target.dump(index)
    assert wait_until_sent()
    assert keep_read_leases_ahead(targets) == len(targets)
    client = private_redis.client()
    after_keeping = script_calls(client)
    assert all(target.exists() for target in targets)
    assert [target.load() for target in targets] == list(range(5))
    assert script_calls(client) == after_keeping


def test_a_writer_in_another_process_gets_a_file_whose_lease_is_kept_ahead(
    tmp_path: Path, settings: Settings
) -> None:
    path = str(tmp_path / "kept-ahead.pkl")
    target = locked_target(path, settings)
    target.dump("x")
    assert keep_read_leases_ahead([target]) == 1
    acquired = SPAWN.Event()
    writer = SPAWN.Process(
        target=hold_lock_of, args=(path, settings, LockMode.EXCLUSIVE.value, 0.1, acquired)
    )
    writer.start()
    try:
        # The writer's process starts and imports in a few seconds; without the revocation it
        # would wait out the lease (settings.lease_seconds).
        assert acquired.wait(timeout=min(20.0, settings.lease_seconds - 1))
    finally:
        writer.join(timeout=30)
    assert writer.exitcode == 0


def test_a_file_a_writer_holds_is_not_kept_ahead_and_nothing_waits(
    tmp_path: Path, settings: Settings
) -> None:
    other = locked_target(str(tmp_path / "free.pkl"), settings)
    other.dump("free")
    assert keep_read_leases_ahead([other]) == 1  # the listener listens: only the writer can refuse
    path = str(tmp_path / "written.pkl")
    target = locked_target(path, settings)
    acquired = SPAWN.Event()
    writer = SPAWN.Process(
        target=hold_lock_of, args=(path, settings, LockMode.EXCLUSIVE.value, 3.0, acquired)
    )
    writer.start()
    try:
        assert acquired.wait(timeout=30)
        began = time.monotonic()
        assert keep_read_leases_ahead([target]) == 0
        assert time.monotonic() - began < 1.0
    finally:
        writer.join(timeout=30)
