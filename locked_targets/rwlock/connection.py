"""A Redis server as the lock sees it: one client, its scripts, and its failures as ``BackendUnavailable``.

A process keeps one connection per Redis URL (the target layer's registry); locks, the
lease-renewal thread and waiters share its connection pool.

A ``redis+sentinel://`` (or ``rediss+sentinel://``) URL names sentinels and a service: the
client's pool asks the sentinels for the service's master on every new connection, and a
READONLY reply (the master demoted by a failover) drops the pool's idle connections, so the
next attempt reaches the new master.

A Redis URL is checked here before anything connects (``redis_address``), as redis-py will
read it (its own ``parse_url``): a URL it would refuse, or read otherwise than it looks,
raises ``ConfigurationError`` naming the part that is wrong. Every URL a message, a log
line or a ``repr`` shows goes through ``redacted_url`` first, so no secret is ever shown.

An error reply is read by its code: redis-py's class for it, else the code as the reply
spells it, also inside the error of a script. One saying the server cannot serve locks now
(out of memory, a replica, too few replicas...) is a ``BackendUnavailable`` naming the
condition; an ACL refusal is a ``ConfigurationError`` naming the rules to add
(``LOCK_ACL_RULE``).

Opening a connection (TCP connect, TLS handshake, redis-py's greeting) must finish within
the connect timeout, and each command within the command timeout. redis-py's own retries
are off: they would multiply those timeouts, and ``retry`` decides what a failure does.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, unquote, unquote_plus, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.commands.core import Script
from redis.connection import AbstractConnection, parse_url
from redis.retry import Retry
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from locked_targets.errors import BackendUnavailable, ConfigurationError
from locked_targets.rwlock import telemetry
from locked_targets.rwlock.keys import REVOKE_CHANNEL_PATTERN

_CONNECT_TIMEOUT_SECONDS = 5.0
"""How long opening a connection may take: TCP connect, TLS handshake and redis-py's greeting."""
# A stopped or wedged server must surface as an error, not hang a task forever.
_COMMAND_TIMEOUT_SECONDS = 30.0
"""How long a command may wait for its reply."""
_HEALTH_CHECK_INTERVAL_SECONDS = 30
_SUBSCRIBE_CONFIRM_SECONDS = 10.0
_REDIS_SCHEMES = ("redis", "rediss", "unix")
# A sentinel URL's scheme, and the scheme of the master it finds.
_SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
_DEFAULT_SENTINEL_PORT = 26379
SENTINEL_PASSWORD_PARAMETER = "sentinel_password"
"""The query parameter of a sentinel URL holding the sentinels' own password (``sentinel_password``)."""
_NO_MASTER_FOUND = (
    "no sentinel named a master of the service: check the sentinels' addresses, the service name "
    "and sentinel_password, and that a master is up"
)
_SENTINEL_URL_FORM = "redis+sentinel://[[user]:password@]host:port[,host:port...]/<service_name>[/<db>]"
_CLUSTER_NODE = "the server is a Redis Cluster node: redis_url must name the cluster"
# The codes of the error replies that mean the server cannot serve locks now, not that a
# request was wrong, and what each means; retrying may help (on_redis_error = wait).
_UNAVAILABLE_REPLIES = {
    "OOM": "out of memory: it refuses writes beyond maxmemory (maxmemory-policy noeviction)",
    "READONLY": "it is a read-only replica, not the master",
    "NOREPLICAS": "fewer replicas acknowledge its writes than min-replicas-to-write asks",
    "MISCONF": "it cannot save to disk, and refuses writes until it can (stop-writes-on-bgsave-error)",
    "LOADING": "it is loading its data set into memory",
    "MASTERDOWN": "it is a replica that lost its master",
    "BUSY": "it is busy running a script",
    "TRYAGAIN": "the cluster is moving the lock's slot to another node",
    "CLUSTERDOWN": "the cluster is down",
    "MOVED": _CLUSTER_NODE,
    "ASK": _CLUSTER_NODE,
}
# redis-py's classes of error replies, and their codes: redis-py strips the code from the
# message. A subclass comes before its base (MasterDownError is a ClusterDownError).
_CODES_OF_CLASSES: tuple[tuple[type[redis.RedisError], str], ...] = (
    (redis.exceptions.NoPermissionError, "NOPERM"),
    (redis.exceptions.OutOfMemoryError, "OOM"),
    (redis.exceptions.ReadOnlyError, "READONLY"),
    (redis.exceptions.BusyLoadingError, "LOADING"),
    (redis.exceptions.MasterDownError, "MASTERDOWN"),
    (redis.exceptions.ClusterDownError, "CLUSTERDOWN"),
    (redis.exceptions.TryAgainError, "TRYAGAIN"),
    (redis.exceptions.MovedError, "MOVED"),
    (redis.exceptions.AskError, "ASK"),
)
# An error code as a reply spells it: its first word, or, in the error of a script as Redis
# 6.2 wraps it, the word after the dash ("Error running script (call to f_...):
# @user_script:56: @user_script: 56: -OOM command not allowed ...").
_SPELLED_CODE = re.compile(r"(?:^|\s-)([A-Z]{2,})(?=\s|$)")
# An ACL refusal inside a script has no NOPERM code: Redis 6.2 and 7.0 say "The user executing
# the script can't run this command or subcommand" (or "... publish to the channel ...",
# "... access at least one of the keys ..."), 7.2 on "ACL failure in script: ...".
_REFUSED_IN_SCRIPT = ("The user executing the script can't", "ACL failure in script")
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
with a database other than 0 needs ``+select`` too, one with a ``client_name`` ``+client|setname``."""
# Redis's reply to SELECT of a database it does not have.
_NO_SUCH_DATABASE_REPLY = "DB index is out of range"

# The query parameters a redis_url may carry (redis-py reads each of them). Timeouts,
# retries and how replies are decoded are the lock's own, so the parameters that would
# change them are refused like any unknown one.
_QUERY_PARAMETERS = ("db", "username", "password", "client_name")
_TLS_QUERY_PARAMETERS = (
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "ssl_check_hostname",
)
# The query parameters that name a file (or, ssl_ca_path, a directory) the TLS handshake reads.
_FILE_PARAMETERS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_CERTIFICATE_CHECKS = ("none", "optional", "required")
_LARGEST_DATABASE = 2**31 - 1  # Redis counts its databases in a C int
_WHOLE_NUMBER = re.compile(r"[0-9]+")

# What redacted_url hides: the user information (but a user name before a colon) between the
# scheme and the last "@", and the value of every query parameter whose name says credential.
_SCHEME_AND_SLASHES = re.compile(r"[^:/?#@]*:?/*")
# Pairs end at "&" only: redis-py (parse_qsl) reads a ";" as part of a value.
_QUERY_PAIR = re.compile(r"(?<=[?&])([^=&#?]*)=([^&#]*)")
# Without "@", what follows the last ":" of the authority is a port, or a password that lost its host.
_AUTHORITY_WITHOUT_USER = re.compile(r"^([^:/?#@]*:?/*(?:\[[^\]/?#@]*\]|[^/?#@:\[]*):)([^/?#@]*)")
# A port, and the other sentinels of a sentinel URL (``26379,h2:26379``): nothing secret.
_PORT_AND_MORE_SENTINELS = re.compile(r"[0-9]+(?:,(?:\[[^\]/?#@]*\]|[^,/?#@:\[]+):[0-9]+)*")
_CREDENTIAL_NAME = re.compile(r"pass|pwd|secret|token|credential|auth", re.IGNORECASE)
HIDDEN = "***"
"""What a message shows in place of a secret."""


def redacted_url(url: str) -> str:
    """``url`` fit for a message, a log line or a ``repr``: every secret in it replaced by ``***``.

    Hidden are the password of the user information (``user:***@host``) and the value of every
    query parameter whose name says credential (``password=***``). Malformed URLs are redacted
    too (``rediss//user:pw@host``, ``redis:/user:pw@host``): everything between the scheme and
    the last ``@`` is taken for user information, and only a user name before a colon is kept.
    Without any ``@``, a non-numeric "port" (``redis://user:pw``) is hidden as a password.
    """
    shown = url
    at = url.rfind("@")
    if at >= 0:
        start = _matched_end(_SCHEME_AND_SLASHES, url)
        user, colon, _secret = url[start:at].partition(":")
        shown = url[:start] + (f"{user}:{HIDDEN}" if colon else HIDDEN) + url[at:]
    else:
        shown = _AUTHORITY_WITHOUT_USER.sub(_port_or_hidden, url, count=1)
    return _QUERY_PAIR.sub(_redacted_pair, shown)


def _port_or_hidden(authority: re.Match[str]) -> str:
    """``host:port`` as it is; ``user:secret`` (a URL whose ``@host`` was forgotten) hidden."""
    after_colon = authority[2]
    shown = after_colon == "" or _PORT_AND_MORE_SENTINELS.fullmatch(after_colon) is not None
    return authority[0] if shown else f"{authority[1]}{HIDDEN}"


def _matched_end(pattern: re.Pattern[str], text: str) -> int:
    """Where ``pattern`` (which matches every text, if only with nothing) stops matching ``text``."""
    match = pattern.match(text)
    assert match is not None
    return match.end()


def _redacted_pair(pair: re.Match[str]) -> str:
    name = pair[1]
    return f"{name}={HIDDEN}" if _CREDENTIAL_NAME.search(unquote_plus(name)) else pair[0]


@dataclasses.dataclass(frozen=True)
class _CheckedUrl:
    """A Redis URL redis-py can use, and what it reads from it."""

    url: str
    """The URL as redis-py is given it: its scheme in lower case."""
    options: dict[str, Any]
    """What redis-py's ``parse_url`` reads from it (for a sentinel URL: as if it named the master)."""
    service_name: str | None = None
    """The service whose master the sentinels name; None for a URL that names the server itself."""
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_password: str | None = None

    @property
    def database(self) -> int:
        database: int = self.options.get("db", 0)
        return database

    @property
    def address(self) -> str:
        """Where the locks live, as messages show it: ``host:port/db``, or a socket path; never a secret."""
        if self.service_name is not None:
            sentinels = ",".join(_host_and_port(host, port) for host, port in self.sentinels)
            return f"sentinel {self.service_name} via {sentinels}/{self.database}"
        if "path" in self.options:
            path: str = self.options["path"]
            return path if self.database == 0 else f"{path}?db={self.database}"
        return f"{_host_and_port(self.options['host'], self.options.get('port', 6379))}/{self.database}"

    @property
    def connection_class(self) -> type[Any]:
        """redis-py's connection class for this URL, made to open within the connect timeout."""
        chosen: type[Any] = self.options.get("connection_class", redis.connection.Connection)
        if self.service_name is not None:
            return _FOLLOWS_THE_MASTER[chosen]
        return _OPENS_WITHIN_CONNECT_TIMEOUT[chosen]


def _host_and_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _checked(redis_url: str) -> _CheckedUrl:
    """``redis_url`` as redis-py will read it; ``ConfigurationError`` naming what is wrong if it cannot."""
    scheme, separator, rest = redis_url.partition("://")
    # Schemes are case-insensitive; redis-py reads lower case only.
    url = f"{scheme.lower()}{separator}{rest}"
    checked = _read_sentinel_url(url) if separator and scheme.lower() in _SENTINEL_SCHEMES else _read_url(url)
    if isinstance(checked, str):
        raise ConfigurationError("redis_url", redacted_url(redis_url), checked)
    return checked


def _read_url(url: str) -> _CheckedUrl | str:
    """What redis-py reads from a URL naming the server itself, or what keeps it from reading it so."""
    problem = _problem_of(url)
    if problem is not None:
        return problem
    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    return _CheckedUrl(url=url, options=options)


def _read_sentinel_url(url: str) -> _CheckedUrl | str:
    """A sentinel URL's sentinels, service and master options, or what is wrong with it (never a secret).

    The master's options are checked and read as redis-py reads the same URL with the
    master's scheme and the first sentinel's address, so they take the same forms.
    """
    scheme, _separator, rest = url.partition("://")
    if "#" in url:
        return "has a #, which Redis does not read: write a # in a password as %23"
    authority, slash, after_authority = rest.partition("/")
    authority, _, query = authority.partition("?")
    path, _, path_query = after_authority.partition("?")
    query = query or path_query
    user_information, at, hosts = authority.rpartition("@")
    sentinels = _read_sentinels(hosts)
    if isinstance(sentinels, str):
        return sentinels
    service_name, _, database = path.partition("/")
    problem = _service_problem(service_name if slash else "", database)
    if problem is not None:
        return problem
    kept_pairs = [pair for pair in query.split("&") if pair and not _is_sentinel_password(pair)]
    sentinel_passwords = [
        value
        for name, value in parse_qsl(query, keep_blank_values=True)
        if name == SENTINEL_PASSWORD_PARAMETER
    ]
    if len(sentinel_passwords) > 1 or sentinel_passwords == [""]:
        return f"the query parameter {SENTINEL_PASSWORD_PARAMETER} must be given once, with a value"
    master_query = f"?{'&'.join(kept_pairs)}" if kept_pairs else ""
    master_url = (
        f"{_SENTINEL_SCHEMES[scheme]}://{user_information}{at}{hosts.split(',')[0]}/{database}{master_query}"
    )
    master = _read_url(master_url)
    if isinstance(master, str):
        return master
    return dataclasses.replace(
        master,
        url=url,
        service_name=unquote(service_name),
        sentinels=sentinels,
        sentinel_password=sentinel_passwords[0] if sentinel_passwords else None,
    )


def _service_problem(service_name: str, database: str) -> str | None:
    """What is wrong with the path of a sentinel URL: ``/<service_name>[/<db>]``."""
    if not service_name:
        return f"names no service: write it after the sentinels, as in {_SENTINEL_URL_FORM}"
    problem = _database_problem(database) if database else None
    return (
        None if problem is None else f"the database {database!r} (the path after the service name) {problem}"
    )


def _is_sentinel_password(pair: str) -> bool:
    return unquote_plus(pair.partition("=")[0]) == SENTINEL_PASSWORD_PARAMETER


def _read_sentinels(hosts: str) -> tuple[tuple[str, int], ...] | str:
    """The ``host:port`` list of a sentinel URL, or what is wrong with it.

    A wrong address is named by its position: it may be a secret typed in the wrong place.
    """
    if not hosts:
        return f"names no sentinel: write host:port for each, as in {_SENTINEL_URL_FORM}"
    sentinels = []
    for position, address in enumerate(hosts.split(","), start=1):
        try:
            parts = urlsplit(f"//{address}")
            port = parts.port
        except ValueError:
            port = 0
        if not address or not parts.hostname or port == 0:
            return (
                f"the address of sentinel {position} cannot be read: write host:port, a port is a number "
                "from 1 to 65535, an IPv6 host goes in []"
            )
        sentinels.append((parts.hostname, port or _DEFAULT_SENTINEL_PORT))
    return tuple(sentinels)


def _problem_of(url: str) -> str | None:
    """What keeps redis-py from reading ``url`` as it looks, or None."""
    scheme, separator, _rest = url.partition("://")
    if not separator or scheme not in _REDIS_SCHEMES:
        return "must start with redis://, rediss:// or unix://"
    if "#" in url:
        return "has a #, which Redis does not read: write a # in a password as %23"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the host and port cannot be read: a port is a number from 1 to 65535, an IPv6 host goes in []"
    return _place_problem(parts, port) or _query_problem(parts)


def _place_problem(parts: SplitResult, port: int | None) -> str | None:
    """What is wrong with where the server is: a socket path, or a host, port and database."""
    if parts.scheme == "unix":
        return None if parts.path else "a unix:// URL needs a socket path, as in unix:///run/redis.sock"
    if not parts.hostname:
        return "needs a host, as in redis://localhost:6379/0"
    if port == 0:
        return "the port must be a number from 1 to 65535"
    database = parts.path.strip("/")
    problem = _database_problem(database) if database else None
    return None if problem is None else f"the database {database!r} (the path after the port) {problem}"


def _query_problem(parts: SplitResult) -> str | None:
    """What is wrong with the query parameters: redis-py would fail on them or ignore them, or the lock."""
    scheme = parts.scheme
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    accepted = _QUERY_PARAMETERS + (_TLS_QUERY_PARAMETERS if scheme == "rediss" else ())
    names = [name for name, _value in pairs]
    unknown = sorted({name for name in names if name not in accepted})
    tls_only = [name for name in unknown if name in _TLS_QUERY_PARAMETERS]
    if tls_only:
        return f"the query parameter {', '.join(tls_only)} applies to rediss:// URLs only"
    if unknown:
        return (
            f"unknown query parameter {', '.join(unknown)}: a redis_url accepts {', '.join(accepted)} "
            "(timeouts and retries are locked_targets' own)"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"the query parameter {', '.join(repeated)} is given more than once"
    for name, value in pairs:
        problem = "has no value" if not value else _value_problem(name, value)
        if problem is not None:
            return f"the query parameter {name} {problem}"
    path_database = parts.path.strip("/")
    query_database = dict(pairs).get("db")
    if scheme != "unix" and path_database and query_database and int(path_database) != int(query_database):
        return f"names two databases, /{path_database} and db={query_database}"
    return None


def _database_problem(database: str) -> str | None:
    if _WHOLE_NUMBER.fullmatch(database) and int(database) <= _LARGEST_DATABASE:
        return None
    return f"must be a whole number from 0 to {_LARGEST_DATABASE}"


def _value_problem(name: str, value: str) -> str | None:
    """What is wrong with one query parameter's value, or None if redis-py and Redis will take it."""
    if name == "db":
        return _database_problem(value)
    if name == "client_name" and not all("!" <= character <= "~" for character in value):
        return "must be printable ASCII without spaces"
    if name == "ssl_cert_reqs" and value not in _CERTIFICATE_CHECKS:
        return f"must be {', '.join(_CERTIFICATE_CHECKS)}"
    if name in _FILE_PARAMETERS and not os.path.isfile(value):
        return f"names {value!r}, which is not a file"
    if name == "ssl_ca_path" and not os.path.isdir(value):
        return f"names {value!r}, which is not a directory"
    return None


def redis_address(redis_url: str) -> str:
    """The ``host:port/db`` (or socket path, or ``sentinel <service> via <sentinels>/db``) a Redis URL
    points at, without its credentials.

    Raises ``ConfigurationError`` for a URL redis-py could not use, or would read otherwise than it looks.
    """
    return _checked(redis_url).address


def _client_for(checked: _CheckedUrl) -> redis.Redis:
    """A client of the server ``checked`` names, or of its sentinels' master, under the lock's timeouts."""
    timeouts: dict[str, Any] = {
        "socket_connect_timeout": _CONNECT_TIMEOUT_SECONDS,
        "socket_timeout": _COMMAND_TIMEOUT_SECONDS,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), retries=0),
    }
    if checked.service_name is None:
        return redis.Redis.from_url(
            checked.url,
            connection_class=checked.connection_class,
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
        connection_class=checked.connection_class,
        redis_connect_func=_greet_within_connect_timeout,
        health_check_interval=_HEALTH_CHECK_INTERVAL_SECONDS,
        **timeouts,
        **master_options,
    )
    return client


def with_sentinel_password(redis_url: str | None, sentinel_password: str) -> str:
    """``redis_url`` carrying the sentinels' own password (the ``sentinel_password`` setting) in its query.

    Raises ``ConfigurationError`` unless ``redis_url`` names sentinels and no other sentinel password.
    """
    checked = None if redis_url is None else _checked(redis_url)
    if redis_url is None or checked is None or checked.service_name is None:
        raise ConfigurationError(
            "sentinel_password", HIDDEN, "applies only to a redis+sentinel:// or rediss+sentinel:// redis_url"
        )
    if not sentinel_password:
        raise ConfigurationError("sentinel_password", sentinel_password, "must not be empty")
    if checked.sentinel_password == sentinel_password:
        return redis_url
    if checked.sentinel_password is not None:
        raise ConfigurationError(
            "sentinel_password",
            HIDDEN,
            f"redis_url gives another one ({SENTINEL_PASSWORD_PARAMETER}): give it once",
        )
    separator = "&" if "?" in redis_url else "?"
    return f"{redis_url}{separator}{SENTINEL_PASSWORD_PARAMETER}={quote(sentinel_password, safe='')}"


class RedisConnection:
    """A Redis server reached through one URL, and the scripts registered on it."""

    def __init__(self, redis_url: str) -> None:
        checked = _checked(redis_url)
        self.address = checked.address
        self.database = checked.database
        self.shown_url = redacted_url(redis_url)
        self.client = _client_for(checked)
        self._scripts: dict[str, Script] = {}
        self._scripts_lock = threading.Lock()

    def script(self, source: str) -> Script:
        """``source`` registered once on this server's client, then run by EVALSHA."""
        with self._scripts_lock:
            registered = self._scripts.get(source)
            if registered is None:
                registered = self._scripts[source] = self.client.register_script(source)
            return registered

    def batch(self) -> ScriptBatch:
        """Script calls to send together, in one round trip."""
        return ScriptBatch(self)

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

    def forget_demoted_master(self, error: BaseException) -> None:
        """After a READONLY reply through sentinels, drop the idle connections to the demoted master.

        redis-py does it for a plain READONLY reply, not for one inside a script's error; a
        connection opened next asks the sentinels for the master again.
        """
        pool = self.client.connection_pool
        if isinstance(pool, SentinelConnectionPool) and _error_code(error) == "READONLY":
            pool.disconnect(inuse_connections=False)

    def _unavailable_reason(self, error: redis.RedisError) -> str | None:
        """Why ``error`` means the server cannot serve locks now; None if it means something else.

        Raises ``ConfigurationError`` for an ACL refusal or a database the server lacks.
        """
        refusal = _acl_refusal(error)
        if refusal is not None:
            raise self._refused_by_acl(refusal) from None
        code = _error_code(error)
        if code is not None and code in _UNAVAILABLE_REPLIES:
            return f"{_UNAVAILABLE_REPLIES[code]} ({_reply_from_code(error, code)})"
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
            raise ConfigurationError("redis_url", self.shown_url, self._no_such_database()) from None
        return None

    def _refused_by_acl(self, refusal: str) -> ConfigurationError:
        """What the server's ACL refused the user of redis_url, the rules to add, and all a lock needs."""
        named = _REFUSED_COMMAND.search(refusal)
        if named is not None:
            refused, rules = f"run the {named[1]!r} command", f"+{named[1].lower()}"
        elif "channel" in refusal:
            refused, rules = "use the lock's pub/sub channels", _LOCK_CHANNELS_RULE
        elif "key" in refusal:
            refused, rules = "use the lock's keys", _LOCK_KEYS_RULE
        else:  # inside a script, Redis 6.2 and 7.0 do not say which command
            refused, rules = "run one of the commands the lock's scripts call", _SCRIPT_COMMANDS_RULE
        needed = LOCK_ACL_RULE
        if self.database != 0:
            needed += " +select"
        if self.client.connection_pool.connection_kwargs.get("client_name"):
            needed += " +client|setname"
        return ConfigurationError(
            "redis_url",
            self.shown_url,
            f"the ACL of the server does not let its user {refused} ({refusal}): add {rules} to the "
            f"user's rules. A lock's user needs {needed} ({KEY_PREFIX_PLACEHOLDER}: the key_prefix setting)",
        )

    def _no_such_database(self) -> str:
        """Why SELECT failed, with the server's number of databases when it tells (CONFIG may be refused)."""
        pool = self.client.connection_pool
        first_database = redis.ConnectionPool(
            connection_class=pool.connection_class, **{**pool.connection_kwargs, "db": 0}
        )
        try:
            count = int(str(redis.Redis(connection_pool=first_database).config_get("databases")["databases"]))
            told = f": it has {count} (0 to {count - 1})"
        except (redis.RedisError, OSError, KeyError, ValueError):
            told = ""
        finally:
            first_database.disconnect()
        return f"the database {self.database} does not exist on the server at {self.address}{told}"


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


class _TcpConnection(_OpensWithinConnectTimeout, redis.connection.Connection):
    """``redis://``."""


class _TlsConnection(_OpensWithinConnectTimeout, redis.connection.SSLConnection):
    """``rediss://``."""


class _UnixSocketConnection(_OpensWithinConnectTimeout, redis.connection.UnixDomainSocketConnection):
    """``unix://``."""


class _SentinelTcpConnection(_OpensWithinConnectTimeout, SentinelManagedConnection):
    """``redis+sentinel://``: to the master the sentinels name."""


class _SentinelTlsConnection(_OpensWithinConnectTimeout, SentinelManagedSSLConnection):
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
    """redis-py's greeting (AUTH, SELECT, CLIENT SETINFO) under the connect timeout, then the command one."""
    connection.on_connect()  # type: ignore[no-untyped-call]
    if connection._sock is not None:
        connection._sock.settimeout(connection.socket_timeout)


def _error_code(error: BaseException) -> str | None:
    """The code of an error reply (``OOM``, ``NOPERM``...), by redis-py's class for it, else as the
    reply spells it, also inside a script's error; None for an error that has none."""
    for error_class, code in _CODES_OF_CLASSES:
        if isinstance(error, error_class):
            return code
    spelled = _SPELLED_CODE.search(str(error))
    if spelled is not None:
        return spelled[1]
    # redis-py 8 keeps the code it stripped (NOAUTH and WRONGPASS are both AuthenticationError).
    kept: str | None = getattr(error, "status_code", None)
    return kept


def _reply_from_code(error: BaseException, code: str) -> str:
    """The server's reply from its code on: without a script's wrapper, with the code redis-py stripped."""
    message = str(error)
    spelled = _SPELLED_CODE.search(message)
    return message[spelled.start(1) :] if spelled is not None and spelled[1] == code else f"{code} {message}"


def _acl_refusal(error: BaseException) -> str | None:
    """What the server said when its ACL refused a command, key or channel; None for another error."""
    message = str(error)
    if _error_code(error) == "NOPERM":
        return message
    for phrase in _REFUSED_IN_SCRIPT:
        if phrase in message:
            return message[message.index(phrase) :]
    return None


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the server cannot serve locks now (trying again later may work)."""
    return isinstance(error, redis.ConnectionError | redis.TimeoutError | OSError) or (
        _error_code(error) in _UNAVAILABLE_REPLIES
    )


def count_failure(error: BaseException) -> None:
    """Count a Redis failure in the metrics by its kind (``telemetry.ERROR_TYPE``), never its message."""
    telemetry.record_redis_error(_failure_kind(error))


def _failure_kind(error: BaseException) -> str:
    code = _error_code(error)
    if isinstance(error, redis.AuthenticationError) or code == "NOAUTH":
        return "authentication"
    if code in _UNAVAILABLE_REPLIES:
        return str(code).lower()
    if isinstance(error, redis.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(error, redis.ConnectionError | OSError):
        return "connection"
    if isinstance(error, redis.InvalidResponse):
        return "protocol"
    return "other"


def await_subscription(pubsub: PubSub) -> None:
    """Block until the server confirms a (P)SUBSCRIBE, so no message published after it is missed."""
    deadline = time.monotonic() + _SUBSCRIBE_CONFIRM_SECONDS
    while pubsub.get_message(timeout=max(0.0, deadline - time.monotonic())) is None:
        if time.monotonic() >= deadline:
            raise redis.TimeoutError("Redis did not confirm a subscription in time")


class ScriptBatch:
    """Script calls sent together by EVALSHA in one round trip, their replies read in order.

    A redis-py pipeline of scripts first asks ``SCRIPT EXISTS`` in a round trip of its own;
    a batch sends the calls at once and loads a script only where the server says it lacks
    it (after a restart), then sends those calls again: a call refused for that never ran.
    """

    def __init__(self, connection: RedisConnection) -> None:
        self._connection = connection
        self._calls: list[tuple[Script, list[Any], list[Any]]] = []

    def add(self, script: Script, keys: list[Any], args: list[Any]) -> None:
        self._calls.append((script, keys, args))

    def __len__(self) -> int:
        return len(self._calls)

    def send(self) -> list[Any]:
        """Every call's reply, or the error it got (a ``redis.ResponseError``), in the order added."""
        replies = self._send(self._calls)
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                self._connection.forget_demoted_master(reply)
        unknown = [
            index for index, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)
        ]
        if unknown:
            for script in {self._calls[index][0] for index in unknown}:
                script.sha = self._connection.client.script_load(script.script)
            for index, reply in zip(
                unknown, self._send([self._calls[index] for index in unknown]), strict=True
            ):
                replies[index] = reply
        return replies

    def _send(self, calls: list[tuple[Script, list[Any], list[Any]]]) -> list[Any]:
        pipeline = self._connection.client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipeline.evalsha(script.sha, len(keys), *keys, *args)
        replies: list[Any] = pipeline.execute(raise_on_error=False)
        return replies
