"""A task's write locks taken together (``take_ahead``): all or none, used by the thread's
later writes and reads, given back when unused, and free of deadlock between applications."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from helpers.applications import Applications
from helpers.lock_processes import Holders, make_lock
from helpers.waiting import eventually
from locked_targets.rwlock import LockMode, ReadWriteLock, take_ahead, taken_ahead
from locked_targets.rwlock.releases import wait_until_sent
from locked_targets.settings import Settings


@pytest.fixture
def holders(redis_url: str, key_prefix: str) -> Iterator[Holders]:
    started = Holders(redis_url, f"{key_prefix}{{busy}}")
    yield started
    started.stop()


@pytest.fixture
def free_locks(redis_url: str, key_prefix: str) -> Iterator[list[ReadWriteLock]]:
    locks = [make_lock(redis_url, f"{key_prefix}{{free-{number}}}") for number in range(3)]
    yield locks
    taken_ahead().release_mine()


def test_locks_are_taken_ahead_only_all_together(
    holders: Holders, free_locks: list[ReadWriteLock], redis_url: str, redis_client: redis.Redis
) -> None:
    holders.start("reader", "read")
    holders.expect("reader", "acquired")
    busy = make_lock(redis_url, holders.base)
    assert not take_ahead([*free_locks, busy])
    assert wait_until_sent()
    for lock in free_locks:
        assert redis_client.get(lock.keys.writer) is None, "a lock taken ahead was kept though one was busy"
    assert redis_client.zcard(busy.keys.waiting_writers) == 0, "taking ahead never waits in line"
    holders.release("reader")
    holders.expect("reader", "released")
    # The reader's process sends its release in the background: wait until Redis has it.
    eventually(
        lambda: not redis_client.zcard(busy.keys.readers), "the reader's release to reach Redis", 5, 0.01
    )
    assert take_ahead([*free_locks, busy])
    for lock in [*free_locks, busy]:
        assert redis_client.get(lock.keys.writer) is not None


def test_the_threads_writes_and_reads_use_the_locks_taken_ahead(
    free_locks: list[ReadWriteLock], redis_client: redis.Redis
) -> None:
    assert take_ahead(free_locks)
    first = free_locks[0]
    token = redis_client.get(first.keys.writer)
    with first.shared() as reading:
        assert reading.mode is LockMode.EXCLUSIVE, "a read under the thread's own write lock"
    assert redis_client.zcard(first.keys.readers) == 0
    with first.exclusive() as writing:
        assert writing.token.encode() == token, "the write used the lock taken ahead"
    assert taken_ahead().peek(first.keys.base) is None, "a lock taken ahead serves one write"


def test_a_lock_several_files_share_is_taken_once_and_serves_each_of_their_writes(
    free_locks: list[ReadWriteLock], redis_url: str, redis_client: redis.Redis
) -> None:
    shared = free_locks[0]
    same = [make_lock(redis_url, shared.keys.base) for _ in range(2)]  # one lock, as three files build it
    assert take_ahead([shared, *same, free_locks[1]])
    token = redis_client.get(shared.keys.writer)
    for lock in (shared, *same):
        with lock.shared() as reading:
            assert reading.token.encode() == token, "a read between the writes reads under it"
        with lock.exclusive() as writing:
            assert writing.token.encode() == token, "each write used the one lock taken ahead"
        assert wait_until_sent()
        written_last = lock is same[-1]
        assert (redis_client.get(shared.keys.writer) is None) == written_last, (
            "the lock ends with the last of the writes it serves, not before"
        )
    taken_ahead().release_mine()
    assert wait_until_sent()
    assert redis_client.get(free_locks[1].keys.writer) is None


def test_a_lock_taken_ahead_for_several_writes_is_given_back_after_fewer(
    free_locks: list[ReadWriteLock], redis_url: str, redis_client: redis.Redis
) -> None:
    shared = free_locks[0]
    assert take_ahead([shared, make_lock(redis_url, shared.keys.base)])
    with shared.exclusive():
        pass
    assert taken_ahead().peek(shared.keys.base) is not None, "kept for the write it still serves"
    taken_ahead().release_mine()  # the task ended without it
    assert wait_until_sent()
    assert redis_client.get(shared.keys.writer) is None


def test_a_lock_taken_ahead_for_several_writes_and_lost_is_acquired_afresh_by_the_next(
    free_locks: list[ReadWriteLock], redis_url: str, redis_client: redis.Redis
) -> None:
    shared = free_locks[0]
    assert take_ahead([shared, make_lock(redis_url, shared.keys.base)])
    with shared.exclusive() as writing:
        lost_token = writing.token
        writing.mark_lost("its lease ended before it could be renewed")  # as the renewals find it
    assert taken_ahead().peek(shared.keys.base) is None, "a lost lock serves no more writes"
    with shared.exclusive() as writing:
        assert writing.token != lost_token
        assert redis_client.get(shared.keys.writer) == writing.token.encode()


def test_locks_taken_ahead_and_unused_are_given_back(
    free_locks: list[ReadWriteLock], redis_client: redis.Redis
) -> None:
    assert take_ahead(free_locks)
    taken_ahead().release_mine()
    assert wait_until_sent()
    for lock in free_locks:
        assert redis_client.get(lock.keys.writer) is None


def test_applications_without_run_locks_racing_through_one_pipeline_all_finish(
    tmp_path: Path, settings: Settings
) -> None:
    applications = Applications(tmp_path, settings, retrying=False)
    applications.run(str(tmp_path / "cache"), ["free-pipeline"] * 4, task_seconds=0.2, builder="gokart")
    assert applications.returned() == [repr(sum(range(4)))] * 4
    assert all(applications.complete())
