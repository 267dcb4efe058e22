"""Each thread keeps one connection for its round trips: it opens one, gives it back to the pool
when it ends, a forked child opens its own, and a round trip sent while the thread's own is under
way (from a signal handler) takes another, so that no reply is read by the wrong caller."""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from locked_targets.rwlock import RedisConnection
from locked_targets.rwlock import connection as connection_module
from locked_targets.testing import RedisServer


@pytest.fixture
def connection(private_redis: RedisServer) -> Iterator[RedisConnection]:
    connection = RedisConnection(private_redis.url)
    yield connection
    connection.client.close()


@pytest.fixture
def opened(private_redis: RedisServer) -> Iterator[Callable[[], int]]:
    """How many connections the server has accepted so far (the asking one is open before the first)."""
    admin = private_redis.client()
    admin.ping()
    yield lambda: int(admin.info("stats")["total_connections_received"])
    admin.close()


def echo(connection: RedisConnection, word: str) -> object:
    (reply,) = connection.round_trip([("ECHO", word)])
    return reply


def test_a_thread_opens_one_connection_for_all_its_round_trips(
    connection: RedisConnection, opened: Callable[[], int]
) -> None:
    before = opened()
    assert [echo(connection, f"w{index}") for index in range(20)] == [
        f"w{index}".encode() for index in range(20)
    ]
    assert opened() - before == 1


def test_a_thread_that_ends_gives_its_connection_back_to_the_pool(
    connection: RedisConnection, opened: Callable[[], int]
) -> None:
    before = opened()
    replies: list[object] = []
    thread = threading.Thread(target=lambda: replies.append(echo(connection, "from a thread")))
    thread.start()
    thread.join()
    assert replies == [b"from a thread"]
    assert echo(connection, "after it") == b"after it"
    assert opened() - before == 1, "this thread took the ended thread's connection"


def _echo_in_child(connection: RedisConnection, answers: multiprocessing.Queue[object]) -> None:
    answers.put([echo(connection, f"child {index}") for index in range(3)])


def test_a_forked_child_opens_a_connection_of_its_own(
    connection: RedisConnection, opened: Callable[[], int]
) -> None:
    assert echo(connection, "before the fork") == b"before the fork"
    before = opened()
    context = multiprocessing.get_context("fork")
    answers: multiprocessing.Queue[object] = context.Queue()
    child = context.Process(target=_echo_in_child, args=(connection, answers))
    child.start()
    child_replies = answers.get(timeout=10)
    child.join(timeout=10)
    assert child.exitcode == 0
    assert child_replies == [b"child 0", b"child 1", b"child 2"]
    assert opened() - before == 1, "the child's own"
    assert [echo(connection, f"parent {index}") for index in range(3)] == [
        b"parent 0",
        b"parent 1",
        b"parent 2",
    ]


def test_a_round_trip_sent_during_the_threads_own_takes_another_connection(
    connection: RedisConnection,
) -> None:
    """A signal handler runs between the send and the reply of the round trip it interrupts."""
    assert echo(connection, "warm") == b"warm"  # the kept connection is open: the signal comes mid-read
    handler_replies: list[object] = []
    previous = signal.signal(
        signal.SIGALRM, lambda _signal, _frame: handler_replies.append(echo(connection, "handler"))
    )
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        # BLPOP on an empty list answers nil after 0.5 s: the signal comes while it waits.
        (popped,) = connection.round_trip([("BLPOP", "kept-connections:empty", 0.5)])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert handler_replies == [b"handler"]
    assert popped is None
    assert echo(connection, "next") == b"next"


def close_the_kept_connection_from_the_server(connection: RedisConnection, server: RedisServer) -> None:
    """Use the thread's kept connection, then have the server close it (and every other client's)."""
    assert echo(connection, "before") == b"before"
    server.client().client_kill_filter(_type="normal", skipme=True)


def test_a_connection_closed_right_after_use_fails_one_round_trip_and_is_replaced(
    connection: RedisConnection, private_redis: RedisServer
) -> None:
    """Within a burst of requests the pool does not check the kept connection: one fails."""
    close_the_kept_connection_from_the_server(connection, private_redis)
    with pytest.raises(redis.ConnectionError):
        echo(connection, "on the killed connection")
    assert echo(connection, "after") == b"after"


def test_a_connection_closed_during_a_pause_is_opened_again_by_the_pool(
    connection: RedisConnection, private_redis: RedisServer
) -> None:
    """As after a restart, or a server's idle timeout: the next round trip does not fail."""
    close_the_kept_connection_from_the_server(connection, private_redis)
    time.sleep(0.2)
    assert echo(connection, "after the pause") == b"after the pause"


def test_a_connection_given_back_when_no_other_could_be_opened_is_not_used_again(
    connection: RedisConnection, private_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kept connection goes back to the pool before another is taken: if none can be opened (the
    server is down), the thread must not keep using the one the pool may now hand to someone else."""
    monkeypatch.setattr(connection_module, "_CHECKED_AFTER_SECONDS", 3600.0)  # no pause check
    assert echo(connection, "before") == b"before"
    connection.client.close()  # the kept connection is closed: the next round trip replaces it
    private_redis.kill()
    with pytest.raises(redis.ConnectionError):
        echo(connection, "while the server is down")
    private_redis.restart()
    client = connection.client
    assert isinstance(client, redis.Redis)  # one server, not a cluster
    pool = client.connection_pool
    other = pool.get_connection()  # the pool hands out the connection given back, opened again
    try:
        (mine,) = connection.round_trip([("CLIENT", "ID")])
        other.send_command("CLIENT", "ID")  # type: ignore[no-untyped-call]
        assert other.read_response() != mine
    finally:
        pool.release(other)
