"""The Redis connection of a process, and the translation of Redis failures into ``BackendUnavailable``.

One client (with its connection pool) per Redis URL per process: locks, the lease
renewal thread and waiters share it. After a fork the child builds its own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.client import PubSub
from redis.commands.core import Script

from locked_targets.errors import BackendUnavailable
from locked_targets.settings import redis_address

_CONNECT_TIMEOUT_SECONDS = 5.0
# A stopped or wedged server must surface as an error, not hang a task forever.
_SOCKET_TIMEOUT_SECONDS = 30.0
_SUBSCRIBE_CONFIRM_SECONDS = 10.0
# Error replies that mean the server cannot serve locks now (out of memory under
# noeviction, a replica, still loading, master down), not that a request was wrong.
_UNAVAILABLE_REPLIES = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN")


class RedisBackend:
    """A Redis server reached through one URL, and the scripts registered on it."""

    def __init__(self, redis_url: str) -> None:
        self.address = redis_address(redis_url)
        self.client = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=_CONNECT_TIMEOUT_SECONDS,
            socket_timeout=_SOCKET_TIMEOUT_SECONDS,
            health_check_interval=30,
            socket_keepalive=True,
        )
        self._scripts: dict[str, Script] = {}
        self._scripts_lock = threading.Lock()

    def script(self, source: str) -> Script:
        """``source`` registered once on this server's client, then run by EVALSHA."""
        with self._scripts_lock:
            registered = self._scripts.get(source)
            if registered is None:
                registered = self._scripts[source] = self.client.register_script(source)
            return registered

    @contextmanager
    def errors_translated(self) -> Iterator[None]:
        """Re-raise Redis connection and authentication failures as ``BackendUnavailable``."""
        try:
            yield
        except redis.AuthenticationError:
            raise BackendUnavailable(
                address=self.address, reason="authentication failed: check the password in redis_url"
            ) from None
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise BackendUnavailable(
                address=self.address, reason=str(error) or type(error).__name__
            ) from None
        except redis.ResponseError as error:
            message = str(error)
            if message.startswith("NOAUTH"):
                raise BackendUnavailable(
                    address=self.address, reason="the server requires a password and redis_url has none"
                ) from None
            if message.startswith(_UNAVAILABLE_REPLIES):
                raise BackendUnavailable(address=self.address, reason=message) from None
            raise


def await_subscription(pubsub: PubSub) -> None:
    """Block until the server confirms a (P)SUBSCRIBE, so no message published after it is missed."""
    deadline = time.monotonic() + _SUBSCRIBE_CONFIRM_SECONDS
    while pubsub.get_message(timeout=max(0.0, deadline - time.monotonic())) is None:
        if time.monotonic() >= deadline:
            raise redis.TimeoutError("Redis did not confirm a subscription in time")


_backends: dict[str, RedisBackend] = {}
_backends_lock = threading.Lock()


def backend_for(redis_url: str) -> RedisBackend:
    """The process-wide backend for ``redis_url``, created on first use."""
    with _backends_lock:
        backend = _backends.get(redis_url)
        if backend is None:
            backend = _backends[redis_url] = RedisBackend(redis_url)
        return backend


def _forget_parent_backends() -> None:
    # A forked child must not share sockets with its parent, nor inherit a held mutex.
    global _backends_lock
    _backends.clear()
    _backends_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_parent_backends)
