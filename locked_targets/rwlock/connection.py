"""A Redis server as the lock sees it: one client, its scripts, and its failures as ``BackendUnavailable``.

A process keeps one connection per Redis URL (the target layer's registry); locks, the
lease-renewal thread and waiters share its connection pool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import SplitResult, urlsplit

import redis
from redis.client import PubSub
from redis.commands.core import Script

from locked_targets.errors import BackendUnavailable, ConfigurationError

_CONNECT_TIMEOUT_SECONDS = 5.0
# A stopped or wedged server must surface as an error, not hang a task forever.
_SOCKET_TIMEOUT_SECONDS = 30.0
_HEALTH_CHECK_INTERVAL_SECONDS = 30
_SUBSCRIBE_CONFIRM_SECONDS = 10.0
_REDIS_SCHEMES = ("redis", "rediss", "unix")
# Error replies that mean the server cannot serve locks now (out of memory under
# noeviction, a replica, still loading, master down), not that a request was wrong.
_UNAVAILABLE_REPLIES = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN")


class RedisConnection:
    """A Redis server reached through one URL, and the scripts registered on it."""

    def __init__(self, redis_url: str) -> None:
        self.address = redis_address(redis_url)
        self.client = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=_CONNECT_TIMEOUT_SECONDS,
            socket_timeout=_SOCKET_TIMEOUT_SECONDS,
            health_check_interval=_HEALTH_CHECK_INTERVAL_SECONDS,
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


def redis_address(redis_url: str) -> str:
    """The ``host:port/db`` a Redis URL points at, without its credentials.

    Raises ``ConfigurationError`` for a URL redis-py could not use.
    """
    shown = _without_password(redis_url)
    try:
        parts = urlsplit(redis_url)
        port = parts.port
    except ValueError as error:
        raise ConfigurationError("redis_url", shown, f"not a valid URL ({error})") from None
    if parts.scheme not in _REDIS_SCHEMES:
        raise ConfigurationError("redis_url", shown, "must start with redis://, rediss:// or unix://")
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigurationError("redis_url", shown, "a unix:// URL needs a socket path")
        return parts.path
    if not parts.hostname:
        raise ConfigurationError("redis_url", shown, "needs a host, as in redis://localhost:6379/0")
    database = parts.path.strip("/") or "0"
    if not database.isdigit():
        raise ConfigurationError("redis_url", shown, f"the database {database!r} must be a number")
    return f"{parts.hostname}:{port or 6379}/{database}"


def _without_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "<unparsable URL>"
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return SplitResult(parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment).geturl()
