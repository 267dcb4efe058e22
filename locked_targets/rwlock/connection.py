"""A Redis server as the lock sees it: one client, its scripts, and its failures as ``BackendUnavailable``.

A process keeps one connection per Redis URL (the target layer's registry): its locks and
waiters share one connection pool, and the background threads (releases, renewals, the
revocation listener) another (``RedisConnection.background``).

A ``redis+sentinel://`` (or ``rediss+sentinel://``) URL names sentinels and a service: the
client's pool asks the sentinels for the service's master on every new connection, and a
READONLY reply (the master demoted by a failover) drops the pool's idle connections, so the
next attempt reaches the new master.

A ``redis+cluster://`` (or ``rediss+cluster://``) URL names nodes of a Redis Cluster: redis-py's
``RedisCluster`` client learns the slots from them when first used, and follows MOVED and ASK
for each command.

An error reply is read as ``error_replies`` reads it: one saying the server cannot serve locks
now is a ``BackendUnavailable`` naming the condition (``errors_translated``); an ACL refusal
is a ``ConfigurationError`` naming the rules to add (``LOCK_ACL_RULE``).

Opening a connection (TCP connect, TLS handshake, redis-py's greeting) must finish within
the connect timeout, and each command within the command timeout. redis-py's own retries
are off: they would multiply those timeouts, and ``retry`` decides what a failure does.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.connection import AbstractConnection, Connection, ConnectionPool
from redis.exceptions import RedisClusterException, SlotNotCoveredError
from redis.retry import Retry
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from locked_targets.errors import BackendUnavailable, ConfigurationError
from locked_targets.rwlock.error_replies import (
    UNAVAILABLE_REPLIES,
    UNAVAILABLE_REPLIES_IN_A_CLUSTER,
    acl_refusal,
    count_failure,
    error_code,
    is_unavailable,
    reply_from_code,
)
from locked_targets.rwlock.keys import REVOKE_CHANNEL_PATTERN
from locked_targets.rwlock.redis_urls import CheckedUrl, checked_url, host_and_port, redacted_url

_CONNECT_TIMEOUT_SECONDS = 5.0
"""How long opening a connection may take: TCP connect, TLS handshake and redis-py's greeting."""
# A stopped or wedged server must surface as an error, not hang a task forever.
_COMMAND_TIMEOUT_SECONDS = 30.0
"""How long a command may wait for its reply."""
_HEALTH_CHECK_INTERVAL_SECONDS = 30
_NO_MASTER_FOUND = (
    "no sentinel named a master of the service: check the sentinels' addresses, the service name "
    "and sentinel_password, and that a master is up"
)
# What to check when a TLS connection fails, or a connection ends at its first command.
_TLS_CHECKS = (
    "check that the port speaks TLS (a plain Redis port needs redis://), and that redis_url gives "
    "ssl_certfile and ssl_keyfile if the server requires a client certificate (tls-auth-clients)"
)
_ENDED_AFTER_TLS_HANDSHAKE = (
    "the server ended the connection after the TLS handshake: if it requires a client certificate "
    "(tls-auth-clients), give ssl_certfile and ssl_keyfile in redis_url, signed by an authority it trusts"
)
_ENDED_AT_FIRST_COMMAND = "if this port speaks TLS, use rediss:// instead of redis://"
_NOT_A_CLUSTER = (
    "a server it names is not a Redis Cluster node (cluster-enabled is off): name one server "
    "as redis://host:port/db, or the nodes of a cluster"
)
_REFUSED_COMMAND = re.compile(r"'([^' ]+)' command")

KEY_PREFIX_PLACEHOLDER = "<key_prefix>"
_LOCK_KEYS_RULE = f"~{KEY_PREFIX_PLACEHOLDER}*"
# A lock's channels extend its keys; PSUBSCRIBE's pattern must be allowed literally.
_LOCK_CHANNELS_RULE = f"&{KEY_PREFIX_PLACEHOLDER}* &{REVOKE_CHANNEL_PATTERN}"
# A script runs each command it calls under its caller's ACL.
_SCRIPT_COMMANDS_RULE = (
    "+time +get +set +del +exists +pexpire +pttl +publish +hget +hset +hdel"
    " +zadd +zrem +zscore +zcard +zrange +zrangebyscore +zremrangebyscore"
)
LOCK_ACL_RULE = (
    f"{_LOCK_KEYS_RULE} {_LOCK_CHANNELS_RULE}"
    # Scripts by EVALSHA (loaded again after a restart), waiters' SUBSCRIBE, the revocation
    # listener's PSUBSCRIBE, redis-py's health checks.
    f" +evalsha +script|load +subscribe +psubscribe +ping {_SCRIPT_COMMANDS_RULE}"
)
"""The ACL rules the Redis user of a lock needs, no more, with ``<key_prefix>`` standing for the
``key_prefix`` setting (a ``*``, ``?``, ``[`` or ``\\`` in it escaped with ``\\``). A ``redis_url``
with a database other than 0 needs ``+select`` too, one with a ``client_name`` ``+client|setname``,
one naming a cluster ``CLUSTER_ACL_RULE`` (and on Redis 7+ ``SHARDED_PUBSUB_ACL_RULE``)."""
CLUSTER_ACL_RULE = "+cluster|slots +command +asking"
"""What redis-py's cluster client sends besides: it reads the slots and the server's commands, and
follows ASK redirections."""
SHARDED_PUBSUB_ACL_RULE = "+spublish +ssubscribe"
"""What waking waiters takes on a Redis 7+ cluster, where scripts SPUBLISH and waiters SSUBSCRIBE."""
# Redis's reply to SELECT of a database it does not have.
_NO_SUCH_DATABASE_REPLY = "DB index is out of range"


def _lock_timeouts() -> dict[str, Any]:
    """The connect and command timeouts of every client of a lock, and no retries of redis-py's own."""
    return {
        "socket_connect_timeout": _CONNECT_TIMEOUT_SECONDS,
        "socket_timeout": _COMMAND_TIMEOUT_SECONDS,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), retries=0),
    }


def _client_for(checked: CheckedUrl) -> redis.Redis:
    """A client of the server ``checked`` names, or of its sentinels' master, under the lock's timeouts."""
    timeouts = _lock_timeouts()
    if checked.service_name is None:
        return redis.Redis.from_url(
            checked.url,
            connection_class=_connection_class(checked),
            redis_connect_func=_greet_within_connect_timeout,
            health_check_interval=_HEALTH_CHECK_INTERVAL_SECONDS,
            **timeouts,
        )
    master_options = {
        name: value
        for name, value in checked.options.items()
        if name not in ("host", "port", "connection_class")
    }
    tls_options = {name: value for name, value in master_options.items() if name.startswith("ssl_")}
    # A sentinel answers at once or not at all: the next one is asked after the connect timeout.
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(checked.sentinels),
        sentinel_kwargs={
            **timeouts,
            "socket_timeout": _CONNECT_TIMEOUT_SECONDS,
            "password": checked.sentinel_password,
            # rediss+sentinel://: the sentinels too are reached over TLS, with the same parameters.
            **({"ssl": True, **tls_options} if checked.url.startswith("rediss") else {}),
        },
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        checked.service_name,
        connection_class=_connection_class(checked),
        redis_connect_func=_greet_within_connect_timeout,
        health_check_interval=_HEALTH_CHECK_INTERVAL_SECONDS,
        **timeouts,
        **master_options,
    )
    return client


class _LockCluster(RedisCluster):
    """redis-py's Redis Cluster client, whose failures read as a server's would.

    It follows MOVED and ASK (and waits out TRYAGAIN) for each command, up to 16 times, then
    raises a bare ``ClusterError``: that is a TRYAGAIN here (the slot is still moving). It
    raises ``RedisClusterException``, which is no ``RedisError``, when no node serves a key's
    slot or none can be reached to learn the slots again: the lock reports those as the
    cluster being unavailable, like any other.
    """

    def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except redis.exceptions.ClusterError as error:
            if type(error) is not redis.exceptions.ClusterError:  # CLUSTERDOWN, MASTERDOWN: the server's own
                raise
            raise redis.exceptions.TryAgainError(f"redirected until redis-py gave up ({error})") from None
        except RedisClusterException as error:
            behind = _redis_error_behind(error)
            if behind is None:
                raise
            raise behind from None


def _redis_error_behind(error: RedisClusterException) -> redis.RedisError | None:
    """The ``RedisError`` a failure of redis-py's cluster client stands for: CLUSTERDOWN for a slot no
    node serves, the last node's own failure when none could be reached; None for another failure."""
    if isinstance(error, SlotNotCoveredError):
        return redis.exceptions.ClusterDownError(str(error))
    # No node could be reached: the last one tried says why (refused, timed out, a wrong password).
    cause = error.__cause__
    return cause if isinstance(cause, redis.RedisError) else None


def _cluster_client_for(checked: CheckedUrl, setting: str) -> _LockCluster:
    """A client of the cluster ``checked`` names, under the lock's timeouts; it reads the slots from a node.

    Raises a ``redis.RedisError`` if no node it names answers, ``ConfigurationError`` if one is not
    a cluster node.
    """
    options = {
        name: value
        for name, value in checked.options.items()
        if name not in ("host", "port", "db", "connection_class")
    }
    (first_host, first_port), *other_nodes = checked.cluster_nodes
    try:
        return _LockCluster(
            # Only from a URL does redis-py build the nodes' pools with the connection class it is
            # given (whose TLS handshake has the connect timeout); it carries the first node's address alone.
            url=f"redis://{host_and_port(first_host, first_port)}",
            startup_nodes=[ClusterNode(host, port) for host, port in other_nodes],  # type: ignore[no-untyped-call]
            connection_class=_connection_class(checked),
            # After redis-py's greeting of a node (which the cluster client sends itself).
            redis_connect_func=_command_timeout_from_now,
            # A cluster missing a shard still serves the locks in the others' slots.
            require_full_coverage=False,
            **_lock_timeouts(),
            **options,
        )
    except RedisClusterException as error:
        if isinstance(error.__cause__, RedisClusterException):  # "Cluster mode is not enabled on this node"
            raise ConfigurationError(setting, redacted_url(checked.url), _NOT_A_CLUSTER) from None
        behind = _redis_error_behind(error)
        raise (behind or redis.ConnectionError(f"could not learn the cluster's slots: {error}")) from None


class RedisConnection:
    """A Redis server (or cluster) reached through one URL, and the scripts registered on it.

    A cluster's client is made at its first use, since it reads the cluster's slots from a
    node then: making a connection never waits for, nor fails on, the servers.
    """

    def __init__(self, redis_url: str, setting: str = "redis_url") -> None:
        self._redis_url = redis_url
        self._checked = checked_url(redis_url)
        self.setting = setting
        """The setting whose URL named this server, for messages (``redis_url``, ``s3_redis_url`` ...)."""
        self.address = self._checked.address
        self.database = self._checked.database
        self.shown_url = redacted_url(redis_url)
        self.is_cluster = bool(self._checked.cluster_nodes)
        self._unavailable_replies = (
            UNAVAILABLE_REPLIES_IN_A_CLUSTER if self.is_cluster else UNAVAILABLE_REPLIES
        )
        self._client: redis.Redis | _LockCluster | None = (
            None if self.is_cluster else _client_for(self._checked)
        )
        self._sharded_pubsub = False
        self._client_lock = threading.Lock()
        self._scripts: dict[str, Script] = {}
        self._scripts_lock = threading.Lock()
        self._loaded: set[str] = set()
        """The SHAs of the scripts the server has loaded, as far as this process has seen."""
        self._background: RedisConnection | None = None
        self._foreground: RedisConnection | None = None
        """For a ``background`` connection: the one it serves (a demoted master is forgotten by both)."""
        self._kept = threading.local()
        """Each thread's ``_KeptConnection`` (``round_trip``), as its ``connection`` attribute."""
        self._master_changes = 0
        """How many times a READONLY reply said the master was demoted: a kept connection older is dropped."""

    @property
    def background(self) -> RedisConnection:
        """This server through a client (and connection pool) of its own, for the background threads
        (releases, renewals, the revocation listener): while they hold a connection, the thread
        running tasks must not open another one (a greeting of round trips on its critical path),
        nor wait for theirs."""
        if self._background is None:
            with self._client_lock:
                if self._background is None:
                    background = RedisConnection(self._redis_url, self.setting)
                    background._foreground = self
                    self._background = background
        return self._background

    @property
    def client(self) -> redis.Redis | RedisCluster:
        """The client of the server, or of the cluster (made now if this is its first use: a
        ``redis.RedisError`` if no node answers)."""
        return self._made_client()

    @property
    def sharded_pubsub(self) -> bool:
        """Whether a lock's waiters listen, and its scripts publish, by sharded pub/sub: on a Redis
        Cluster whose servers have it (Redis 7+), decided once, when its client is made."""
        if self.is_cluster:
            self._made_client()
        return self._sharded_pubsub

    def _made_client(self) -> redis.Redis | _LockCluster:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    cluster = _cluster_client_for(self._checked, self.setting)
                    # The commands the server that answered COMMAND knows (every node runs one version,
                    # but during an upgrade: a process started then keeps classic pub/sub).
                    self._sharded_pubsub = "spublish" in cluster.commands_parser.commands
                    self._client = cluster
        return self._client

    def refresh_slots(self) -> None:
        """Read a cluster's slots again (after a redirection, or a failed node); nothing to do on one server.

        Raises a ``redis.RedisError`` if no node answers.
        """
        client = self.client
        if isinstance(client, RedisCluster):
            try:
                client.nodes_manager.initialize()
            except RedisClusterException as error:
                raise (_redis_error_behind(error) or redis.ConnectionError(str(error))) from None

    def primaries(self) -> list[tuple[str, redis.Redis]]:
        """Each server that keeps locks, by address, with a client of it alone: the one server, or every
        master of a cluster (as its client knows the slots). A ``redis.RedisError`` if no node answers."""
        client = self.client
        if isinstance(client, RedisCluster):
            primaries: list[ClusterNode] = client.get_primaries()  # type: ignore[no-untyped-call]
            return [(node.name, client.get_redis_connection(node)) for node in primaries]
        return [(self.address, client)]

    def primary_of(self, key: str) -> tuple[str, redis.Redis]:
        """The server that keeps ``key``, by address, with a client of it alone: on a cluster, the master
        of its slot (CLUSTERDOWN if none serves it)."""
        client = self.client
        if isinstance(client, RedisCluster):
            node = node_serving(client, key)
            return node.name, client.get_redis_connection(node)
        return self.address, client

    def script(self, source: str) -> Script:
        """``source`` registered once on this server's client, then run by EVALSHA."""
        with self._scripts_lock:
            registered = self._scripts.get(source)
            if registered is None:
                registered = self._scripts[source] = self.client.register_script(source)
            return registered

    def scripts_to_load(self, scripts: Iterable[Script]) -> list[Script]:
        """Those of ``scripts`` (each once) this process has not seen the server load: a batch loads
        them first, in its own round trip, where a call of one would be refused (``NOSCRIPT``)."""
        with self._scripts_lock:
            return list({script.sha: script for script in scripts if script.sha not in self._loaded}.values())

    def scripts_loaded(self, scripts: Iterable[Script]) -> None:
        """The server has loaded ``scripts`` (one it loses later, by a restart or a failover, refuses
        its calls, and the batch loads it again)."""
        with self._scripts_lock:
            self._loaded.update(script.sha for script in scripts)

    def round_trip(
        self, commands: Sequence[tuple[Any, ...]], meanwhile: Callable[[], None] | None = None
    ) -> list[Any]:
        """The replies to ``commands``, sent at once to the server (not a cluster: see ``exchange``) on
        a connection this thread keeps between its round trips; ``meanwhile`` as ``exchange`` runs it.

        Taking a connection from redis-py's pool and giving it back (a lock, a poll of the socket,
        its metrics) costs about as much Python as the rest of a lock's request: a thread that
        locks keeps one instead, and has the pool check it, as it checks every connection it hands
        out, only after a pause (``_KeptConnection``). A thread that sends while its own round trip
        is under way (a signal handler or a finalizer run meanwhile) takes one from the pool.
        """
        kept: _KeptConnection | None = getattr(self._kept, "connection", None)
        if kept is not None and kept.busy:
            return exchange_on(kept.pool, commands, meanwhile)
        if kept is None or kept.stale(self._master_changes) or kept.paused():
            self._kept.connection = None  # given back below: never used again, should no other come
            kept = self._kept.connection = self._kept_in_place_of(kept)
        kept.busy = True
        try:
            return exchange(kept.connection, commands, meanwhile)
        except BaseException:
            # Closed by ``exchange``: back to the pool, which opens the next one as redis-py opens
            # it (through the sentinels, to the master they name now), which a send would not.
            self._kept.connection = None
            kept.give_back()
            raise
        finally:
            kept.busy = False
            kept.used_at = time.monotonic()

    def _kept_in_place_of(self, kept: _KeptConnection | None) -> _KeptConnection:
        """A connection for this thread to keep, from the pool, which checks it (and opens it anew
        if the server closed it). ``kept``, the one kept so far, goes back: closed first if it is
        stale (to a master since demoted: the next one asks the sentinels again)."""
        if kept is not None:
            if kept.pid == os.getpid() and kept.stale(self._master_changes):
                kept.connection.disconnect()  # type: ignore[no-untyped-call]
            kept.give_back()
        client = self.client
        assert isinstance(client, redis.Redis), "a cluster's calls go node by node (exchange_on)"
        pool = client.connection_pool
        return _KeptConnection(pool, pool.get_connection(), self._master_changes)

    @contextmanager
    def errors_translated(self) -> Iterator[None]:
        """Re-raise a Redis failure, or an error reply saying the server cannot serve locks now,
        as ``BackendUnavailable``.

        A database the server does not have, or a command, key or channel its ACL refuses the
        user, is a ``ConfigurationError``: retrying cannot help. Any other error reply is
        raised as it is.
        """
        try:
            yield
        except redis.RedisError as error:
            self.forget_demoted_master(error)
            reason = self._unavailable_reason(error)
            if reason is None:
                raise
            count_failure(error)
            raise BackendUnavailable(address=self.address, reason=reason) from None

    def translated(self, error: redis.RedisError) -> Exception:
        """What ``errors_translated`` raises for ``error`` (a ``BackendUnavailable``, a
        ``ConfigurationError``, or ``error`` itself), for an error reply received, not raised."""
        try:
            with self.errors_translated():
                raise error
        except (BackendUnavailable, ConfigurationError, redis.RedisError) as translated:
            return translated

    def refusal_of(self, reply: object) -> ConfigurationError | None:
        """The ``ConfigurationError`` naming the rules to add, if ``reply`` is an error reply by which
        the server refuses this connection's user for good (its ACL refuses a command, key or
        channel); None for any other reply. Retrying such a request cannot help."""
        if not isinstance(reply, redis.ResponseError) or is_unavailable(reply):
            return None
        translated = self.translated(reply)
        return translated if isinstance(translated, ConfigurationError) else None

    def forget_demoted_master(self, error: BaseException) -> None:
        """After a READONLY reply through sentinels, drop the idle connections to the demoted master.

        redis-py does it for a plain READONLY reply, not for one inside a script's error; a
        connection opened next asks the sentinels for the master again. Both pools of the URL
        (the task thread's and the background threads') forget it, whichever heard the reply.
        """
        if error_code(error) != "READONLY":
            return
        for connection in (self, self._background, self._foreground):
            pool = (
                connection._client.connection_pool
                if connection and isinstance(connection._client, redis.Redis)
                else None
            )
            if isinstance(pool, SentinelConnectionPool):
                pool.disconnect(inuse_connections=False)
            if connection is not None:  # after: a thread's next kept connection is not an idle one to it
                connection._master_changes += 1

    def _unavailable_reason(self, error: redis.RedisError) -> str | None:
        """Why ``error`` means the server cannot serve locks now; None if it means something else.

        Raises ``ConfigurationError`` for an ACL refusal or a database the server lacks.
        """
        refusal = acl_refusal(error)
        if refusal is not None:
            raise self._refused_by_acl(refusal) from None
        code = error_code(error)
        if code is not None and code in self._unavailable_replies:
            return f"{self._unavailable_replies[code]} ({reply_from_code(error, code)})"
        if code == "NOAUTH":
            return "the server requires a password and redis_url has none"
        if isinstance(error, redis.AuthenticationError):
            return "authentication failed: check the password in redis_url"
        if isinstance(error, redis.ConnectionError | redis.TimeoutError):
            # redis-py's MasterNotFoundError lists every sentinel's client at length: say what to check.
            return (
                _NO_MASTER_FOUND
                if isinstance(error, MasterNotFoundError)
                else str(error) or type(error).__name__
            )
        if isinstance(error, redis.InvalidResponse):
            return "what answers there does not speak Redis: check the port"
        if str(error).startswith(_NO_SUCH_DATABASE_REPLY):
            raise ConfigurationError(self.setting, self.shown_url, self._no_such_database()) from None
        return None

    def _refused_by_acl(self, refusal: str) -> ConfigurationError:
        """What the server's ACL refused the user of the URL, the rules to add, and all a lock needs."""
        named = _REFUSED_COMMAND.search(refusal)
        if named is not None:
            refused, rules = f"run the {named[1]!r} command", f"+{named[1].lower()}"
        elif "channel" in refusal:
            refused, rules = "use the lock's pub/sub channels", _LOCK_CHANNELS_RULE
        elif "key" in refusal:
            refused, rules = "use the lock's keys", _LOCK_KEYS_RULE
        else:  # inside a script, Redis 6.2 and 7.0 do not say which command
            refused, rules = "run one of the commands the lock's scripts call", _SCRIPT_COMMANDS_RULE
            if self._sharded_pubsub:
                rules += " +spublish"
        needed = LOCK_ACL_RULE
        if self.database != 0:
            needed += " +select"
        if self._checked.options.get("client_name"):
            needed += " +client|setname"
        if self.is_cluster:
            needed += f" {CLUSTER_ACL_RULE}"
        if self._sharded_pubsub:
            needed += f" {SHARDED_PUBSUB_ACL_RULE}"
        return ConfigurationError(
            self.setting,
            self.shown_url,
            f"the ACL of the server does not let its user {refused} ({refusal}): add {rules} to the "
            f"user's rules. A lock's user needs {needed} ({KEY_PREFIX_PLACEHOLDER}: the key_prefix setting)",
        )

    def _no_such_database(self) -> str:
        """Why SELECT failed, with the server's number of databases when it tells (CONFIG may be refused)."""
        told = ""
        if isinstance(self._client, redis.Redis):  # a cluster's URL names its only database, 0
            pool = self._client.connection_pool
            first_database = redis.ConnectionPool(
                connection_class=pool.connection_class, **{**pool.connection_kwargs, "db": 0}
            )
            try:
                count = int(
                    str(redis.Redis(connection_pool=first_database).config_get("databases")["databases"])
                )
                told = f": it has {count} (0 to {count - 1})"
            except (redis.RedisError, OSError, KeyError, ValueError):
                pass
            finally:
                first_database.disconnect()
        return f"the database {self.database} does not exist on the server at {self.address}{told}"


_CHECKED_AFTER_SECONDS = 0.05
"""How long a kept connection may rest before the pool checks it again, as it checks one it hands
out: long enough for a thread's burst of requests, short enough that a connection the server
closed meanwhile (a restart, an idle timeout) is opened again instead of failing a request."""


class _KeptConnection:
    """A connection a thread took out of a client's pool to keep for its round trips."""

    def __init__(self, pool: ConnectionPool, connection: Connection, master_changes: int) -> None:
        self.pool = pool
        self.connection = connection
        self.pid = os.getpid()
        self.master_changes = master_changes
        self.busy = False
        self.used_at = time.monotonic()
        self._given_back = False
        self._sentinels = pool if isinstance(pool, SentinelConnectionPool) else None

    def stale(self, master_changes: int) -> bool:
        """Not to be used again: taken by the parent of this process (its socket is the parent's),
        closed (``client.close()``: sent on, it would open to the same address, not ask the
        sentinels), or to a master since demoted: a READONLY reply heard since, or the sentinels
        named another master to a connection opened since."""
        connection = self.connection
        return (
            self.pid != os.getpid()
            or self.master_changes != master_changes
            or connection._sock is None
            or (
                self._sentinels is not None
                and self._sentinels.master_address not in (None, (connection.host, connection.port))
            )
        )

    def paused(self) -> bool:
        """Unused for long enough that the pool should check it before it is used again."""
        return time.monotonic() - self.used_at >= _CHECKED_AFTER_SECONDS

    def give_back(self) -> None:
        """Back to the pool, once, by the process that took it."""
        if not self._given_back and self.pid == os.getpid():
            self._given_back = True
            self.pool.release(self.connection)

    _interpreter_exiting = staticmethod(sys.is_finalizing)  # still there when collected at exit

    def __del__(self) -> None:
        """Its thread ended, or its client is gone: back to the pool. Not at interpreter exit: a daemon
        thread (the releases') can be frozen there holding the pool's lock, which giving back takes."""
        if not self._interpreter_exiting():
            self.give_back()


def exchange_on(
    pool: ConnectionPool, commands: Sequence[tuple[Any, ...]], meanwhile: Callable[[], None] | None = None
) -> list[Any]:
    """``exchange`` on a connection of ``pool``, given back afterwards."""
    connection = pool.get_connection()
    try:
        return exchange(connection, commands, meanwhile)
    finally:
        pool.release(connection)


def exchange(
    connection: AbstractConnection,
    commands: Sequence[tuple[Any, ...]],
    meanwhile: Callable[[], None] | None = None,
) -> list[Any]:
    """The replies to ``commands``, sent at once on ``connection`` (an error reply as its exception),
    as redis-py's pipeline sends them, without its bookkeeping around each command, which costs
    more than the round trip itself and takes the interpreter from the thread running the tasks.
    The client retries nothing, so neither does this: a connection that fails midway is closed,
    its replies out of step, and the error raised.

    ``meanwhile`` runs once the commands are sent, before their replies are read: the caller's
    own work, done while the server answers instead of after. If it raises, the connection is
    closed, its replies unread, and the error raised (``ReadWriteLock.exclusive`` says the rest).

    Packed by hiredis as redis-py packs them with it, without its Python around each argument."""
    packed = b"".join([hiredis.pack_command(command) for command in commands])  # nothing sent if this fails
    try:
        connection.send_packed_command([packed])  # type: ignore[no-untyped-call]
        if meanwhile is not None:
            meanwhile()
        replies: list[Any] = []
        for _command in commands:
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as error:
                replies.append(error)
        return replies
    except BaseException:
        connection.disconnect()  # type: ignore[no-untyped-call]
        raise


class _OpensWithinConnectTimeout(AbstractConnection):
    """A redis-py connection whose TLS handshake, like its TCP connect, has the connect timeout.

    redis-py gives the socket its command timeout as soon as TCP connects, so a TLS
    handshake with a server that never answers (a plain Redis port, a silent peer) would
    wait the command timeout. The command timeout applies once the greeting is done
    (``_greet_within_connect_timeout``).
    """

    def _connect(self) -> Any:
        command_timeout = self.socket_timeout
        self.socket_timeout = self.socket_connect_timeout
        try:
            # The concrete class's _connect (TCP, TLS, Unix socket), next in the method order.
            return super()._connect()  # type: ignore[safe-super,no-untyped-call]
        finally:
            self.socket_timeout = command_timeout


class _ExplainsTlsFailures(redis.connection.SSLConnection):
    """A TLS connection whose failed handshake says what to check, beside OpenSSL's words."""

    ended_at_first_command = _ENDED_AFTER_TLS_HANDSHAKE
    """What to say when the server ends the connection at its first command (the greeting)."""

    def _wrap_socket_with_ssl(self, sock: socket.socket) -> Any:
        try:
            return super()._wrap_socket_with_ssl(sock)  # type: ignore[no-untyped-call]
        except TimeoutError:
            waited = self.socket_connect_timeout
            raise redis.TimeoutError(
                f"no TLS handshake within the connect timeout ({waited:g} s): {_TLS_CHECKS}"
            ) from None
        except ssl.SSLCertVerificationError as error:
            raise redis.ConnectionError(
                "the TLS handshake failed: the server's certificate failed verification (certificate verify "
                f"failed: {error.verify_message}): check that ssl_ca_certs names the authority that signed "
                "it, and that the host in redis_url is a name the certificate holds"
            ) from None
        except ssl.SSLError as error:
            raise redis.ConnectionError(f"the TLS handshake failed ({error}): {_TLS_CHECKS}") from None


class _TcpConnection(_OpensWithinConnectTimeout, redis.connection.Connection):
    """``redis://``."""

    ended_at_first_command = _ENDED_AT_FIRST_COMMAND


class _TlsConnection(_OpensWithinConnectTimeout, _ExplainsTlsFailures):
    """``rediss://``."""


class _UnixSocketConnection(_OpensWithinConnectTimeout, redis.connection.UnixDomainSocketConnection):
    """``unix://``."""


class _SentinelTcpConnection(_OpensWithinConnectTimeout, SentinelManagedConnection):
    """``redis+sentinel://``: to the master the sentinels name."""

    ended_at_first_command = _ENDED_AT_FIRST_COMMAND


class _SentinelTlsConnection(_OpensWithinConnectTimeout, _ExplainsTlsFailures, SentinelManagedSSLConnection):
    """``rediss+sentinel://``."""


_OPENS_WITHIN_CONNECT_TIMEOUT: dict[type[Any], type[Any]] = {
    redis.connection.Connection: _TcpConnection,
    redis.connection.SSLConnection: _TlsConnection,
    redis.connection.UnixDomainSocketConnection: _UnixSocketConnection,
}
_FOLLOWS_THE_MASTER: dict[type[Any], type[Any]] = {
    redis.connection.Connection: _SentinelTcpConnection,
    redis.connection.SSLConnection: _SentinelTlsConnection,
}


def _greet_within_connect_timeout(connection: AbstractConnection) -> None:
    """redis-py's greeting (AUTH, SELECT, CLIENT SETINFO) under the connect timeout, then the command one.

    A connection the server ends at the first command says what to check (``ended_at_first_command``).
    A socket just opened is not checked for health first: redis-py would send a PING, one more
    round trip per new connection.
    """
    connection.next_health_check = time.monotonic() + connection.health_check_interval  # type: ignore[assignment]
    try:
        connection.on_connect()  # type: ignore[no-untyped-call]
    except redis.ConnectionError as error:
        check: str | None = getattr(connection, "ended_at_first_command", None)
        if isinstance(error, redis.AuthenticationError) or check is None:
            raise
        raise redis.ConnectionError(f"{error} ({check})") from None
    _command_timeout_from_now(connection)


def _command_timeout_from_now(connection: AbstractConnection) -> None:
    """Give a connection that has opened and greeted the server the command timeout."""
    if connection._sock is not None:
        connection._sock.settimeout(connection.socket_timeout)


def _connection_class(checked: CheckedUrl) -> type[Any]:
    """redis-py's connection class for the URL ``checked``, made to open within the connect timeout."""
    chosen: type[Any] = checked.options.get("connection_class", redis.connection.Connection)
    if checked.service_name is not None:
        return _FOLLOWS_THE_MASTER[chosen]
    return _OPENS_WITHIN_CONNECT_TIMEOUT[chosen]


def node_serving(cluster: RedisCluster, key: str) -> ClusterNode:
    """The master of ``key``'s slot, as the cluster client knows the slots; CLUSTERDOWN if none serves it."""
    try:
        node: ClusterNode = cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]
    except SlotNotCoveredError as error:
        raise redis.exceptions.ClusterDownError(str(error)) from None
    return node
