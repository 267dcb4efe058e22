"""A batch of script calls on a real server: replies in order, error replies among them, a script
the server lost, and a connection that times out midway, which leaves no later batch out of step."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from locked_targets.rwlock import RedisConnection
from locked_targets.rwlock.script_batch import ScriptBatch
from locked_targets.testing import RedisServer

ECHO = "return ARGV[1]"
REFUSE = "return redis.error_reply('ERR refused ' .. ARGV[1])"
# Busy for ARGV[1] ms of the server's clock.
BUSY = """
local t = redis.call('TIME')
local until_us = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1]) * 1000
repeat t = redis.call('TIME') until tonumber(t[1]) * 1000000 + tonumber(t[2]) >= until_us
return 'done'
"""


@pytest.fixture
def connection(private_redis: RedisServer) -> Iterator[RedisConnection]:
    connection = RedisConnection(private_redis.url)
    yield connection
    connection.client.close()


def batch_of(connection: RedisConnection, calls: list[tuple[str, str]]) -> list[object]:
    batch = ScriptBatch(connection)
    for source, argument in calls:
        batch.add(connection.script(source), ["{k}x"], [argument])
    return batch.send()


def test_an_error_reply_among_the_calls_keeps_every_reply_in_its_place(connection: RedisConnection) -> None:
    first, refused, last = batch_of(connection, [(ECHO, "a"), (REFUSE, "b"), (ECHO, "c")])
    assert (first, last) == (b"a", b"c")
    assert isinstance(refused, redis.ResponseError)
    assert "refused b" in str(refused)
    assert batch_of(connection, [(ECHO, "d")]) == [b"d"], "the connection went back to the pool in step"


def test_a_script_the_server_lost_is_loaded_and_its_calls_sent_again(
    connection: RedisConnection, private_redis: RedisServer
) -> None:
    assert batch_of(connection, [(ECHO, "a")]) == [b"a"]
    private_redis.client().script_flush()  # as after a restart
    assert batch_of(connection, [(ECHO, "b"), (ECHO, "c")]) == [b"b", b"c"]


def test_a_script_new_to_the_server_is_loaded_in_the_batchs_own_round_trip(
    connection: RedisConnection, private_redis: RedisServer
) -> None:
    """Once per script, ahead of its calls: none is refused and sent again."""
    server = private_redis.client()
    server.config_resetstat()
    assert batch_of(connection, [(ECHO, "a"), (ECHO, "b"), (BUSY, "0")]) == [b"a", b"b", b"done"]
    assert batch_of(connection, [(ECHO, "d")]) == [b"d"]
    stats = server.info("commandstats")
    assert stats["cmdstat_script"]["calls"] == 2, "each script loaded once (Redis 6.2 counts SCRIPT as one)"
    assert stats["cmdstat_evalsha"] == {**stats["cmdstat_evalsha"], "calls": 4, "failed_calls": 0}


def test_a_connection_that_times_out_midway_fails_its_batch_and_leaves_the_next_in_step(
    connection: RedisConnection,
) -> None:
    client = connection.client
    assert isinstance(client, redis.Redis)  # one server, not a cluster
    pool = client.connection_pool
    pool.connection_kwargs["socket_timeout"] = 0.2  # the batch's connection, made anew below
    pool.disconnect()
    with pytest.raises(redis.TimeoutError):
        batch_of(connection, [(BUSY, "600"), (ECHO, "late")])  # its replies come after the timeout
    pool.connection_kwargs["socket_timeout"] = 5.0
    assert batch_of(connection, [(ECHO, "a"), (ECHO, "b")]) == [b"a", b"b"]
