"""Listening to a lock's channels, at the master of its slot on a Redis Cluster.

A lock's waiters listen at the master of its slot (``Subscription``): by sharded pub/sub on a
cluster whose servers have it, since only the slot's own node delivers an ``SPUBLISH``.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.client import PubSub
from redis.cluster import RedisCluster

from locked_targets.rwlock.connection import RedisConnection, node_serving

_SUBSCRIBE_CONFIRM_SECONDS = 10.0


def subscription_to(connection: RedisConnection, channel: str, *, pattern: bool = False) -> Subscription:
    """A confirmed subscription to one of a lock's channels (``pattern``: to every one matching it)."""
    return Subscription(
        connection, channel, sharded=connection.sharded_pubsub and not pattern, pattern=pattern
    )


def await_subscription(pubsub: PubSub) -> None:
    """Block until the server confirms a (P)SUBSCRIBE, so no message published after it is missed."""
    deadline = time.monotonic() + _SUBSCRIBE_CONFIRM_SECONDS
    while pubsub.get_message(timeout=max(0.0, deadline - time.monotonic())) is None:
        if time.monotonic() >= deadline:
            raise redis.TimeoutError("Redis did not confirm a subscription in time")


class Subscription:
    """A confirmed subscription to one of a lock's channels, or to every channel matching a pattern.

    On one server, classic pub/sub. On a cluster, at the node serving the channel's slot:
    sharded (``SSUBSCRIBE``) where the servers have it (Redis 7+), since the scripts then wake
    waiters by ``SPUBLISH``, which only the slot's own node delivers; else classic, which any
    node delivers, since a cluster forwards every ``PUBLISH`` to all its nodes. A pattern is
    always classic (sharded pub/sub has no pattern form), at a master chosen at random.
    """

    def __init__(self, connection: RedisConnection, channel: str, *, sharded: bool, pattern: bool) -> None:
        self._connection = connection
        self._channel = channel
        self._sharded = sharded
        self._pattern = pattern
        self._pubsub = self._subscribed()

    def next_message(self, timeout: float) -> dict[str, Any] | None:
        """The next message (or notice of a subscription's end), or None after ``timeout`` seconds."""
        message: dict[str, Any] | None = self._pubsub.get_message(timeout=timeout)
        if message is not None and message["type"] == "sunsubscribe":
            # The slot moved to another node (a failover, resharding), whose end of the subscription
            # is all a waiter hears: follow the slot.
            self._pubsub.close()
            self._connection.refresh_slots()
            self._pubsub = self._subscribed()
        return message

    def close(self) -> None:
        self._pubsub.close()

    def _subscribed(self) -> PubSub:
        """A pub/sub connection whose subscription the server confirmed. On a cluster, a node that
        failed or refused it (its slot moved) is tried once more after reading the slots again."""
        try:
            return self._subscribed_once()
        except (redis.ConnectionError, redis.exceptions.AskError, redis.exceptions.ClusterDownError):
            if not self._connection.is_cluster:
                raise
        self._connection.refresh_slots()
        return self._subscribed_once()

    def _subscribed_once(self) -> PubSub:
        client = self._connection.client
        if isinstance(client, RedisCluster):
            # Any node delivers a pattern's messages: many processes' listeners spread over the masters.
            node = client.get_random_primary_node() if self._pattern else node_serving(client, self._channel)
            client = client.get_redis_connection(node)
        pubsub: PubSub = client.pubsub()  # type: ignore[no-untyped-call]
        try:
            if self._pattern:
                pubsub.psubscribe(self._channel)
            elif self._sharded:
                pubsub.ssubscribe(self._channel)
            else:
                pubsub.subscribe(self._channel)
            await_subscription(pubsub)
        except BaseException:
            pubsub.close()
            raise
        return pubsub
