"""Releases sent in the background: per server, retried while the server says "not now",
never stopped by a failing callback, and a downgrade that can be sent twice; held back while
no waiter asks (then sent at once), and riding along with the process's next acquisitions."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from redis.client import PubSub

from helpers.lock_processes import Holders, make_lock
from helpers.monitored import scripts_sent_for
from helpers.waiting import eventually
from locked_targets.locks import connection_for, shared_leases_for
from locked_targets.rwlock import LockMode, releases, scripts, shared_leases
from locked_targets.rwlock.lock import take_ahead
from locked_targets.rwlock.releases import Handover, releaser_for, wait_until_sent
from locked_targets.rwlock.taken_ahead import taken_ahead
from locked_targets.testing import RedisServer


@pytest.fixture
def second_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.resume()  # in case a test left it stopped
    server.stop()


def writer_gone_within(client: redis.Redis, key: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.get(key) is None:
            return True
        time.sleep(0.01)
    return False


def test_a_hung_server_does_not_hold_back_another_servers_releases(
    private_redis: RedisServer, second_redis: RedisServer, key_prefix: str
) -> None:
    hung = make_lock(private_redis.url, f"{key_prefix}{{hung}}")
    healthy = make_lock(second_redis.url, f"{key_prefix}{{healthy}}")
    on_hung, on_healthy = hung.acquire(LockMode.EXCLUSIVE), healthy.acquire(LockMode.EXCLUSIVE)
    private_redis.pause()
    try:
        on_hung.release()  # its sending thread now waits on a server that does not answer
        on_healthy.release()
        assert writer_gone_within(second_redis.client(), healthy.keys.writer, 2.0)
    finally:
        private_redis.resume()
    assert wait_until_sent(timeout_seconds=30)
    assert private_redis.client().get(hung.keys.writer) is None


def run_a_script_that_spins(redis_url: str) -> None:
    """Keep the server busy until SCRIPT KILL ends the script."""
    with pytest.raises(redis.ResponseError, match="killed"):
        redis.Redis.from_url(redis_url).eval("while true do end", 0)


def test_a_release_the_server_answers_busy_is_sent_again_once_it_can(
    private_redis: RedisServer, key_prefix: str
) -> None:
    client = private_redis.client()
    client.config_set("lua-time-limit", 100)
    lock = make_lock(private_redis.url, f"{key_prefix}{{busy}}")
    held = lock.acquire(LockMode.EXCLUSIVE)
    spinning = threading.Thread(target=run_a_script_that_spins, args=(private_redis.url,))
    spinning.start()
    time.sleep(0.3)  # past lua-time-limit: every other command is answered BUSY
    held.release()
    time.sleep(0.5)  # the release is answered BUSY meanwhile: dropped, its lock would stay 30 s
    client.script_kill()
    spinning.join(timeout=10)
    assert writer_gone_within(client, lock.keys.writer, 2.0)


def test_a_failing_callback_does_not_stop_the_servers_releases(redis_url: str, key_prefix: str) -> None:
    connection = connection_for(redis_url)
    lock = make_lock(redis_url, f"{key_prefix}{{after-a-bug}}")

    def broken(reply: object) -> None:
        raise RuntimeError("a bug in whoever hears the reply")

    releaser_for(connection).hand_over(
        Handover(
            connection=connection,
            lock=lock.keys.base,
            add=lambda batch: scripts.release(connection, lock.keys, "nobody", batch=batch),
            answered=broken,
            give_up_at=time.monotonic() + 5,
        )
    )
    assert wait_until_sent()
    lock.acquire(LockMode.EXCLUSIVE).release()
    assert writer_gone_within(redis.Redis.from_url(redis_url), lock.keys.writer, 2.0)


def test_a_downgrade_sent_twice_is_granted_twice(redis_url: str, key_prefix: str) -> None:
    connection = connection_for(redis_url)
    lock = make_lock(redis_url, f"{key_prefix}{{downgraded-twice}}")
    token = "downgraded-twice"
    assert isinstance(lock._try_acquire(LockMode.EXCLUSIVE, token, "{}", None), scripts.Granted)
    assert scripts.downgrade(connection, lock.keys, token, 30, "{}") == 1
    assert scripts.downgrade(connection, lock.keys, token, 30, "{}") == 1, "a resend whose reply was lost"
    assert scripts.downgrade(connection, lock.keys, "someone-else", 30, "{}") == 0
    scripts.release(connection, lock.keys, token)


def test_a_lock_released_a_moment_ago_is_free_to_this_process_even_without_waiting(
    redis_url: str, key_prefix: str
) -> None:
    impatient = make_lock(redis_url, f"{key_prefix}{{again}}", wait_timeout_seconds=0)
    for _ in range(50):  # each release is still on its way when the next acquisition starts
        impatient.acquire(LockMode.EXCLUSIVE).release()
        impatient.acquire(LockMode.SHARED).release()


def test_a_release_is_sent_on_a_connection_other_than_the_acquiring_threads(
    private_redis: RedisServer, key_prefix: str
) -> None:
    """The background thread sends releases through a pool of its own: the thread running tasks
    never opens a connection (a greeting of round trips) because the releaser holds one."""
    lock = make_lock(private_redis.url, f"{key_prefix}{{own-connection}}")

    def acquire_and_release_three_times() -> None:
        for _ in range(3):
            lock.acquire(LockMode.EXCLUSIVE).release()
            assert wait_until_sent()

    senders_by_script: dict[str, set[str]] = {}
    for script, port in scripts_sent_for(
        private_redis.client(), lock.keys.base, acquire_and_release_three_times
    ):
        senders_by_script.setdefault(script, set()).add(port)
    # One script acquires, another releases; each always from one connection, never the same one.
    acquiring, releasing = senders_by_script.values()
    assert len(acquiring) == len(releasing) == 1
    assert acquiring != releasing


@pytest.fixture
def held_back_for_a_minute(monkeypatch: pytest.MonkeyPatch, private_redis: RedisServer) -> Iterator[None]:
    """Releases to ``private_redis`` held back for a minute unless a waiter asks: its revocation
    listener is up (it starts with the first lease kept ahead), and the hold-back is long
    enough that only a waiter's request can explain a release sent sooner."""
    monkeypatch.setattr(releases, "_HOLD_BACK_SECONDS", 60.0)
    leases = shared_leases_for(connection_for(private_redis.url), shared_lease_idle_seconds=60)
    assert leases.noted_for_keeping_ahead() is not None, "the revocation listener did not start"
    yield
    assert wait_until_sent()


def asked_for(revoke_channel: PubSub, timeout: float) -> bool:
    """Whether a waiter asked for the lock on its revoke channel (subscribed to) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = revoke_channel.get_message(timeout=deadline - time.monotonic())
        if message is not None and message["type"] == "message":
            return True
    return False


@pytest.mark.parametrize("waiter_mode", [LockMode.SHARED.value, LockMode.EXCLUSIVE.value])
@pytest.mark.parametrize("waiter_arrives", ["before the release", "after the release"])
def test_a_release_held_back_goes_at_once_when_a_waiter_in_another_process_asks(
    private_redis: RedisServer,
    key_prefix: str,
    held_back_for_a_minute: None,
    waiter_mode: str,
    waiter_arrives: str,
) -> None:
    lock = make_lock(private_redis.url, f"{key_prefix}{{asked-for}}")
    held = lock.acquire(LockMode.EXCLUSIVE)
    waiter = Holders(private_redis.url, lock.keys.base)
    revoke_channel = private_redis.client().pubsub()  # type: ignore[no-untyped-call]
    revoke_channel.subscribe(lock.keys.revoke_channel)
    try:
        if waiter_arrives == "before the release":
            waiter.start("waiter", waiter_mode)
            assert asked_for(revoke_channel, timeout=20), "the waiter, blocked, did not ask for the lock"
            held.release()
        else:
            held.release()
            assert private_redis.client().get(lock.keys.writer) is not None, "the release was not held back"
            waiter.start("waiter", waiter_mode)
        # Far sooner than the minute the release is held back for: the waiter's request was heard.
        waiter.expect("waiter", "acquired", timeout=20)
    finally:
        revoke_channel.close()
        waiter.stop()


def test_nothing_is_held_back_while_the_revocation_listener_has_lost_redis(
    private_redis: RedisServer, key_prefix: str, held_back_for_a_minute: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_leases, "_RECONNECT_AFTER_SECONDS", 60.0)  # it stays away
    lock = make_lock(private_redis.url, f"{key_prefix}{{unheard}}")
    lock.acquire(LockMode.EXCLUSIVE).release()
    client = private_redis.client()
    assert client.get(lock.keys.writer) is not None, "the release was not held back"
    # No waiter could be heard now: what was held back goes, and nothing more is held back.
    client.client_kill_filter(_type="pubsub")
    assert writer_gone_within(client, lock.keys.writer, 20.0)
    lock.acquire(LockMode.EXCLUSIVE).release()
    assert writer_gone_within(client, lock.keys.writer, 20.0)


def test_a_release_rides_along_with_the_next_acquisitions_on_its_server(
    private_redis: RedisServer, key_prefix: str, held_back_for_a_minute: None
) -> None:
    first = make_lock(private_redis.url, f"{key_prefix}{{first}}")
    second = make_lock(private_redis.url, f"{key_prefix}{{second}}")
    first.acquire(LockMode.EXCLUSIVE).release()
    client = private_redis.client()
    assert client.get(first.keys.writer) is not None, "the release was not held back"
    assert take_ahead([second])  # one round trip: the release first, then the acquisition
    assert client.get(first.keys.writer) is None
    taken_ahead().release_mine()


@pytest.mark.parametrize("next_mode", [LockMode.SHARED, LockMode.EXCLUSIVE])
def test_a_release_held_back_rides_in_front_of_the_next_acquisition_of_its_lock(
    private_redis: RedisServer, key_prefix: str, held_back_for_a_minute: None, next_mode: LockMode
) -> None:
    """The acquisition finds its own past hold gone without waiting for it: the release goes first,
    on the acquiring connection, in the acquisition's round trip (not sent by the thread first)."""
    impatient = make_lock(private_redis.url, f"{key_prefix}{{in-front}}", wait_timeout_seconds=0)
    # The server loads the scripts first (a call it lacks a script for is sent again).
    warm_up = make_lock(private_redis.url, f"{key_prefix}{{warm-up}}")
    for mode in (next_mode, LockMode.EXCLUSIVE):
        warm_up.acquire(mode).release()
    assert wait_until_sent()
    impatient.acquire(LockMode.EXCLUSIVE).release()
    client = private_redis.client()
    assert client.get(impatient.keys.writer) is not None, "the release was not held back"
    sent = scripts_sent_for(client, impatient.keys.base, lambda: impatient.acquire(next_mode).release())
    (release_script, release_port), (acquire_script, acquire_port) = sent
    assert release_script != acquire_script
    assert release_port == acquire_port, "the release was sent apart from the acquisition"


def test_a_release_whose_script_the_server_lacks_still_goes_before_the_acquisition_it_rides_with(
    private_redis: RedisServer, key_prefix: str, held_back_for_a_minute: None
) -> None:
    """After a restart a server lacks the scripts: the riding release is refused for that and sent
    again once it is loaded, and the acquisition, which ran first, is sent again after it."""
    lock = make_lock(private_redis.url, f"{key_prefix}{{reloaded}}")
    lock.acquire(LockMode.EXCLUSIVE).release()
    client = private_redis.client()
    assert client.get(lock.keys.writer) is not None, "the release was not held back"
    client.script_flush()
    client.script_load(scripts.ACQUIRE_EXCLUSIVE)  # known: the acquisition runs at once, the release not
    # Taking ahead only tries: had it run only before the release, it would have failed on it.
    assert take_ahead([lock])
    taken_ahead().release_mine()


def test_an_interrupt_while_riding_requests_are_answered_leaves_none_of_them_on_its_way(
    private_redis: RedisServer, key_prefix: str, held_back_for_a_minute: None
) -> None:
    """Else the thread would never send another request for that lock, and each acquisition of it
    would wait a second for one."""
    connection = connection_for(private_redis.url)
    lock = make_lock(private_redis.url, f"{key_prefix}{{interrupted}}")

    def interrupted(reply: object) -> None:
        raise KeyboardInterrupt

    releaser_for(connection).hand_over(
        Handover(
            connection=connection,
            lock=lock.keys.base,
            add=functools.partial(scripts.release, connection, lock.keys, "nobody's"),
            answered=interrupted,
            give_up_at=time.monotonic() + 30,
        )
    )
    with pytest.raises(KeyboardInterrupt):
        lock.acquire(LockMode.EXCLUSIVE)  # the release rides in front, and its answer is interrupted
    assert wait_until_sent(timeout_seconds=5.0), "a request was left on its way"


def test_a_request_for_the_writers_release_revokes_no_kept_lease(
    private_redis: RedisServer, key_prefix: str
) -> None:
    """Only a writer that readers block asks for kept leases back: a waiter that the writer blocks
    asks for the writer's release, which no kept lease can stand for."""
    leases = shared_leases_for(connection_for(private_redis.url), shared_lease_idle_seconds=60)
    kept = {}
    for name in ("asked-for-the-writer", "asked-for-readers"):
        lock = make_lock(private_redis.url, f"{key_prefix}{{{name}}}")
        noted = leases.noted_for_keeping_ahead()
        assert noted is not None, "the revocation listener did not start"
        assert leases.keep_idle(lock.keys.base, lock.acquire(LockMode.SHARED), noted)
        kept[name] = lock.keys
    client = private_redis.client()
    client.publish(kept["asked-for-the-writer"].revoke_channel, scripts.WAITING_FOR_THE_WRITER)
    client.publish(kept["asked-for-readers"].revoke_channel, scripts.WRITER_WAITING)
    # The listener hears the two in the order they were published: once the second is acted on,
    # so was the first.
    eventually(
        lambda: not leases.keeps(kept["asked-for-readers"].base),
        "the lease asked for to be given back",
        20,
        0.01,
    )
    assert leases.keeps(kept["asked-for-the-writer"].base)
    leases.release_all()
