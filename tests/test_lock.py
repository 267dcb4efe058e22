"""The read/write lock's contract, against a real redis-server, with holders in separate processes."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from helpers.lock_processes import SPAWN, Holders, die_with_release_unsent, make_lock
from helpers.paused_redis import requests_held_back, writes_paused
from helpers.redis_keys import keys_without_ttl
from helpers.waiting import eventually
from locked_targets.errors import LockLost, LockTimeout
from locked_targets.locks import connection_for
from locked_targets.rwlock import LockMode, scripts, take_ahead, taken_ahead
from locked_targets.rwlock.releases import wait_until_sent
from locked_targets.testing import RedisServer


@pytest.fixture
def holders(redis_url: str, key_prefix: str) -> Iterator[Holders]:
    group = Holders(redis_url, f"{key_prefix}{{{uuid.uuid4().hex}}}")
    yield group
    group.stop()


def test_readers_hold_the_lock_together(holders: Holders) -> None:
    holders.start("reader-1", "read")
    holders.expect("reader-1", "acquired")
    holders.start("reader-2", "read")
    holders.expect("reader-2", "acquired")


def test_writer_waits_for_active_readers(holders: Holders) -> None:
    holders.start("reader", "read")
    holders.expect("reader", "acquired")
    holders.start("writer", "write")
    holders.nothing_happens(2.0)
    holders.release("reader")
    released_at = holders.expect("reader", "released")
    acquired_at = holders.expect("writer", "acquired")
    assert acquired_at >= released_at


def test_reader_waits_for_a_writer(holders: Holders) -> None:
    holders.start("writer", "write")
    holders.expect("writer", "acquired")
    holders.start("reader", "read")
    holders.nothing_happens(2.0)
    holders.release("writer")
    holders.expect("writer", "released")
    holders.expect("reader", "acquired")


def test_new_readers_wait_behind_a_waiting_writer(holders: Holders) -> None:
    holders.start("reader-1", "read")
    holders.expect("reader-1", "acquired")
    holders.start("writer", "write")
    holders.nothing_happens(2.0)  # the writer is now registered as waiting
    holders.start("reader-2", "read")
    holders.nothing_happens(2.0)  # and the new reader queues behind it
    holders.release("reader-1")
    holders.expect("reader-1", "released")
    holders.expect("writer", "acquired")
    holders.nothing_happens(0.5)
    holders.release("writer")
    holders.expect("writer", "released")
    holders.expect("reader-2", "acquired")


def test_waiter_acquires_within_50_ms_of_the_release(holders: Holders) -> None:
    holders.start("writer", "write")
    holders.expect("writer", "acquired")
    holders.start("waiter", "write")
    holders.nothing_happens(2.0)
    holders.release("writer")
    released_at = holders.expect("writer", "released")
    acquired_at = holders.expect("waiter", "acquired")
    # The holder's release went to its background thread; the waiter is woken when it is sent.
    assert acquired_at - released_at < 0.050


def test_a_holder_killed_before_its_release_was_sent_blocks_others_one_lease_at_most(
    redis_url: str, key_prefix: str, redis_client: redis.Redis
) -> None:
    lease_seconds = 2.0
    base = f"{key_prefix}{{killed-releasing}}"
    doomed = SPAWN.Process(target=die_with_release_unsent, args=(redis_url, base, lease_seconds))
    doomed.start()
    doomed.join(timeout=30)
    assert doomed.exitcode == -signal.SIGKILL
    lock = make_lock(redis_url, base)
    assert redis_client.pttl(lock.keys.writer) > 0, "the release was to be still unsent at the kill"
    began = time.monotonic()
    held = lock.acquire(LockMode.EXCLUSIVE)
    waited = time.monotonic() - began
    held.release()
    print(f"waited {waited:.2f} s for a lock whose holder died with its release unsent")
    assert waited <= lease_seconds + 0.5


def test_a_killed_holder_frees_the_lock_when_its_lease_ends(holders: Holders) -> None:
    holders.start_to_be_killed("doomed", "write", lease_seconds=2)
    holders.expect_of_killed("doomed", "acquired")
    holders.processes[0].kill()
    killed_at = time.monotonic()
    holders.start("next", "write")
    acquired_at = holders.expect("next", "acquired", timeout=10)
    assert acquired_at - killed_at < 2.0 + 1.0


def test_wait_timeout_names_path_key_holder_and_wait(holders: Holders, redis_url: str) -> None:
    holders.start("writer", "write")
    holders.expect("writer", "acquired")
    lock = make_lock(redis_url, holders.base, wait_timeout_seconds=0.5)
    with pytest.raises(LockTimeout) as raised:
        lock.acquire(LockMode.SHARED)
    message = str(raised.value)
    assert f"/cache/{holders.base}" in message
    assert holders.base in message
    assert "task TestTask_0123" in message
    assert f"pid {holders.processes[0].pid} on host" in message
    assert "after 0.5 s" in message


def test_a_writer_that_gives_up_lets_readers_in(holders: Holders, redis_url: str) -> None:
    holders.start("reader-1", "read")
    holders.expect("reader-1", "acquired")
    impatient = make_lock(redis_url, holders.base, wait_timeout_seconds=0.3)
    with pytest.raises(LockTimeout):
        impatient.acquire(LockMode.EXCLUSIVE)
    holders.start("reader-2", "read")
    holders.expect("reader-2", "acquired")


def test_lease_is_renewed_while_held(redis_url: str, key_prefix: str) -> None:
    lock = make_lock(redis_url, f"{key_prefix}{{renewed}}", lease_seconds=1.5)
    held = lock.acquire(LockMode.EXCLUSIVE)
    time.sleep(4.0)
    held.ensure_held()
    other = make_lock(redis_url, f"{key_prefix}{{renewed}}", wait_timeout_seconds=0.2)
    with pytest.raises(LockTimeout):
        other.acquire(LockMode.SHARED)
    held.release()


def test_a_lock_taken_away_is_reported_lost(
    redis_url: str, key_prefix: str, redis_client: redis.Redis
) -> None:
    lock = make_lock(redis_url, f"{key_prefix}{{lost}}", lease_seconds=1.5)
    held = lock.acquire(LockMode.EXCLUSIVE)
    redis_client.delete(lock.keys.writer)  # as if Redis restarted and forgot it
    time.sleep(1.0)  # a renewal runs every 0.5 s
    with pytest.raises(LockLost, match="no longer knew this holder"):
        held.ensure_held()
    with pytest.raises(LockLost, match=lock.keys.base.replace("{", r"\{").replace("}", r"\}")):
        held.release()


def test_only_the_owner_can_release(redis_url: str, key_prefix: str, redis_client: redis.Redis) -> None:
    lock = make_lock(redis_url, f"{key_prefix}{{owned}}")
    held = lock.acquire(LockMode.EXCLUSIVE)
    assert not scripts.release(connection_for(redis_url), lock.keys, "not-the-token")
    assert redis_client.get(lock.keys.writer) == held.token.encode()
    held.release()
    assert wait_until_sent()
    assert redis_client.get(lock.keys.writer) is None


def test_every_lock_key_has_a_ttl_while_held_and_none_remain_after(
    holders: Holders, redis_client: redis.Redis, key_prefix: str
) -> None:
    holders.start("reader", "read")
    holders.expect("reader", "acquired")
    holders.start("writer", "write")
    holders.nothing_happens(1.0)
    assert redis_client.keys(f"{key_prefix}*")
    assert keys_without_ttl(redis_client, key_prefix) == []
    holders.stop()
    assert keys_without_ttl(redis_client, key_prefix) == []


def test_a_lock_granted_after_a_long_wait_gets_a_whole_lease(holders: Holders, redis_url: str) -> None:
    holders.start("writer", "write", lease_seconds=30)
    holders.expect("writer", "acquired")
    patient = make_lock(redis_url, holders.base, lease_seconds=3)
    release_later = threading.Timer(4.0, holders.release, args=("writer",))
    release_later.start()
    held = patient.acquire(LockMode.SHARED)  # waits about 4 s, longer than its own lease
    held.ensure_held()
    held.release()


def test_an_attempt_retried_after_a_lost_reply_is_granted_not_blocked_by_itself(
    redis_url: str, key_prefix: str
) -> None:
    lock = make_lock(redis_url, f"{key_prefix}{{retried}}")
    for mode in (LockMode.EXCLUSIVE, LockMode.SHARED):
        token = f"token-{mode.value}"
        assert isinstance(lock._try_acquire(mode, token, "{}", None), scripts.Granted)
        # the same attempt, sent again
        assert isinstance(lock._try_acquire(mode, token, "{}", None), scripts.Granted)
        lock._abandon(token)


def test_a_retried_grant_gets_its_own_fencing_token_back_with_a_memory_shorter_than_the_lease(
    redis_url: str, key_prefix: str
) -> None:
    connection = connection_for(redis_url)
    keys = make_lock(redis_url, f"{key_prefix}{{retried-fence}}").keys
    granted = scripts.acquire_exclusive(connection, keys, "lost-reply", 30, "{}", fencing_memory_seconds=0.05)
    time.sleep(0.2)  # the memory has passed, the lease has not
    retried = scripts.acquire_exclusive(connection, keys, "lost-reply", 30, "{}", fencing_memory_seconds=0.05)
    assert isinstance(granted, scripts.Granted)
    assert retried == granted
    scripts.release(connection, keys, "lost-reply")


def test_each_exclusive_grant_gets_a_larger_fencing_token(
    redis_url: str, key_prefix: str, redis_client: redis.Redis
) -> None:
    lock = make_lock(redis_url, f"{key_prefix}{{fenced}}")
    tokens: list[int] = []
    for _ in range(3):
        held = lock.acquire(LockMode.EXCLUSIVE)
        assert held.fencing_token is not None
        tokens.append(held.fencing_token)
        held.release()
    redis_client.delete(lock.keys.fence)  # as if Redis restarted without persistence
    held = lock.acquire(LockMode.EXCLUSIVE)
    assert held.fencing_token is not None
    tokens.append(held.fencing_token)
    held.release()
    assert tokens == sorted(set(tokens)), f"fencing tokens must only grow: {tokens}"
    assert redis_client.pttl(lock.keys.fence) > 0
    shared = lock.acquire(LockMode.SHARED)
    assert shared.fencing_token is None
    shared.release()


def test_work_given_to_an_acquisition_runs_while_its_request_waits_in_redis(
    private_redis: RedisServer,
) -> None:
    lock = make_lock(private_redis.url, "{meanwhile}")
    lock.acquire(LockMode.EXCLUSIVE).release()  # the scripts are loaded: the next request is the lock's own
    assert wait_until_sent()
    observer = redis.Redis.from_url(private_redis.url)
    held_back_meanwhile: list[int] = []

    def meanwhile() -> None:
        deadline = time.monotonic() + 10
        while not requests_held_back(observer) and time.monotonic() < deadline:
            time.sleep(0.01)
        held_back_meanwhile.append(requests_held_back(observer))
        observer.client_unpause()

    with writes_paused(observer):
        started = time.monotonic()
        with lock.exclusive(meanwhile):
            took = time.monotonic() - started
    # Run once, after the request was sent (the server held it back), before its reply was read
    # (only the unpause in the work let the reply come; the pause lasts longer than 10 s).
    assert held_back_meanwhile == [1]
    assert took < 10
    observer.close()


def test_work_given_to_a_lock_taken_ahead_is_not_run(redis_url: str, key_prefix: str) -> None:
    lock = make_lock(redis_url, f"{key_prefix}{{taken}}")
    assert take_ahead([lock])
    runs: list[str] = []
    with lock.exclusive(lambda: runs.append("run")):
        pass  # no request was sent for it: nothing ran while one was on its way
    taken_ahead().release_mine()
    assert runs == []


def test_a_grant_whose_lease_the_work_meanwhile_half_used_is_renewed_before_the_block(
    redis_url: str, key_prefix: str, redis_client: redis.Redis
) -> None:
    lock = make_lock(redis_url, f"{key_prefix}{{half-used}}", lease_seconds=2.0)
    with lock.exclusive(lambda: time.sleep(1.3)) as held:
        # Renewed from the block's start: no renewal was planned for before the lease would end.
        assert held.lease_left_seconds() > 1.5
        assert redis_client.pttl(lock.keys.writer) > 1500
        assert redis_client.get(lock.keys.writer) == held.token.encode()


def test_a_grant_whose_lease_the_work_meanwhile_outlasted_is_asked_for_again(
    redis_url: str, key_prefix: str, redis_client: redis.Redis
) -> None:
    base = f"{key_prefix}{{outlasted}}"
    lock = make_lock(redis_url, base, lease_seconds=1.0)
    other = Holders(redis_url, base)
    other_released: list[float] = []

    def outlast_the_lease() -> None:
        # Granted, its reply unread: another process takes the lock once the lease lapses.
        other.start("other", "write")
        other.expect("other", "acquired")
        other.release("other")
        other_released.append(other.expect("other", "released"))

    try:
        with lock.exclusive(outlast_the_lease) as held:
            held.ensure_held()
            assert redis_client.get(lock.keys.writer) == held.token.encode()
    finally:
        other.stop()
    assert len(other_released) == 1  # the other process held the lock while the work went on


def test_a_blocked_attempt_carrying_work_leaves_no_waiting_writer_to_keep_readers_out(
    redis_url: str, key_prefix: str, redis_client: redis.Redis
) -> None:
    base = f"{key_prefix}{{no-place}}"
    lock = make_lock(redis_url, base)
    holders = Holders(redis_url, base)
    waiting_writers_during_the_work: list[int] = []

    def work() -> None:
        # Once Redis has run the attempt (blocked by the holder), no writer waits in the lock:
        # readers may still come in, should the holder let go while the work goes on.
        eventually(lambda: evalsha_calls(redis_client) >= 1, "the attempt to run", 10)
        waiting_writers_during_the_work.append(redis_client.zcard(lock.keys.waiting_writers))
        holders.release("holder")

    try:
        holders.start("holder", "write")
        holders.expect("holder", "acquired")
        redis_client.config_resetstat()
        with lock.exclusive(work) as held:
            assert redis_client.get(lock.keys.writer) == held.token.encode()
    finally:
        holders.stop()
    assert waiting_writers_during_the_work == [0]


def evalsha_calls(client: redis.Redis) -> int:
    """How many scripts the server ran since its statistics were last reset."""
    calls: int = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    return calls


def test_the_work_done_meanwhile_is_not_counted_in_the_wait_timeout(redis_url: str, key_prefix: str) -> None:
    base = f"{key_prefix}{{patient}}"
    lock = make_lock(redis_url, base, wait_timeout_seconds=1.0)
    holders = Holders(redis_url, base)

    def work() -> None:
        time.sleep(1.5)  # longer than the wait timeout; the holder lets go half a second after it
        threading.Timer(0.5, holders.release, args=("holder",)).start()

    try:
        holders.start("holder", "write")
        holders.expect("holder", "acquired")
        with lock.exclusive(work):
            pass
    finally:
        holders.stop()


def test_work_is_done_once_when_its_acquisition_is_retried_after_a_failing_redis(
    private_redis: RedisServer,
) -> None:
    lock = make_lock(private_redis.url, "{retried}")
    retrying = dataclasses.replace(
        lock, terms=dataclasses.replace(lock.terms, redis_retry_deadline_seconds=10.0)
    )
    observer = redis.Redis.from_url(private_redis.url)
    runs: list[str] = []

    def cut_the_connection() -> None:
        runs.append("run")
        # The request waits in Redis, unrun: its connection is cut, and the acquisition retried.
        eventually(lambda: requests_held_back(observer), "the request to wait in Redis", 10)
        observer.client_kill_filter(_type="normal", skipme=True)
        observer.client_unpause()

    lock.acquire(LockMode.EXCLUSIVE).release()  # the scripts are loaded: the next request is the lock's own
    assert wait_until_sent()
    with writes_paused(observer), retrying.exclusive(cut_the_connection) as held:
        assert observer.get(lock.keys.writer) == held.token.encode()
    assert runs == ["run"]
    observer.close()


def test_a_release_handed_over_is_not_held_back_by_work_on_another_lock(
    redis_url: str, key_prefix: str
) -> None:
    first = make_lock(redis_url, f"{key_prefix}{{first}}")
    second = make_lock(redis_url, f"{key_prefix}{{second}}")
    took: list[float] = []

    def take_the_first_again_from_another_thread() -> None:
        def take() -> None:
            started = time.monotonic()
            first.acquire(LockMode.EXCLUSIVE).release()
            took.append(time.monotonic() - started)

        thread = threading.Thread(target=take)
        thread.start()
        thread.join(timeout=10)
        time.sleep(1.0)  # the work on the second lock goes on

    first.acquire(LockMode.EXCLUSIVE).release()  # handed over: it could ride with the next request
    with second.exclusive(take_the_first_again_from_another_thread):
        pass
    # Had it ridden with the second lock's request, it would have been on its way until the work
    # ended, and the other thread's request for the first lock would have waited for it (1 s).
    assert len(took) == 1
    assert took[0] < 0.5


class _Interrupted(BaseException):
    """Stands for an interrupt (Ctrl-C, a signal handler's exit) raised in the work run meanwhile."""


def test_an_attempt_whose_work_meanwhile_raises_is_given_back(redis_url: str, key_prefix: str) -> None:
    def interrupted() -> None:
        raise _Interrupted

    lock = make_lock(redis_url, f"{key_prefix}{{interrupted}}")
    with pytest.raises(_Interrupted), lock.exclusive(interrupted):
        pass
    assert wait_until_sent()
    # Granted, its reply unread: given back, not left to its 30 s lease.
    make_lock(redis_url, lock.keys.base, wait_timeout_seconds=1.0).acquire(LockMode.EXCLUSIVE).release()
