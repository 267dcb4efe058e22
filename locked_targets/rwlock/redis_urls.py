"""Checking and reading a ``redis_url``: one server, sentinels and their service, or the nodes of a cluster.

A Redis URL is checked here before anything connects (``redis_address``), as redis-py will
read it (its own ``parse_url``): a URL it would refuse, or read otherwise than it looks,
raises ``ConfigurationError`` naming the part that is wrong. Every URL a message, a log
line or a ``repr`` shows goes through ``redacted_url`` first, so no secret is ever shown.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, unquote, unquote_plus, urlsplit

from redis.connection import parse_url

from locked_targets.errors import ConfigurationError

_REDIS_SCHEMES = ("redis", "rediss", "unix")
# A sentinel URL's scheme, and the scheme of the master it finds.
_SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
_DEFAULT_SENTINEL_PORT = 26379
SENTINEL_PASSWORD_PARAMETER = "sentinel_password"
"""The query parameter of a sentinel URL holding the sentinels' own password (``sentinel_password``)."""
_SENTINEL_URL_FORM = "redis+sentinel://[[user]:password@]host:port[,host:port...]/<service_name>[/<db>]"
# A cluster URL's scheme, and the scheme of each node's connections.
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_DEFAULT_CLUSTER_PORT = 6379
CLUSTER_URL_FORM = "redis+cluster://[[user]:password@]host:port[,host:port...]"

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
# A port, and the other servers of a sentinel or cluster URL (``26379,h2:26379``): nothing secret.
_PORT_AND_MORE_SERVERS = re.compile(r"[0-9]+(?:,(?:\[[^\]/?#@]*\]|[^,/?#@:\[]+):[0-9]+)*")
# The authority of a URL ends where its path or query begins, as ``urlsplit`` reads it.
_AUTHORITY = re.compile(r"[^/?]*")
_CREDENTIAL_NAME = re.compile(r"pass|pwd|secret|token|credential|auth", re.IGNORECASE)
HIDDEN = "***"
"""What a message shows in place of a secret."""


def redacted_url(url: str) -> str:
    """``url`` fit for a message, a log line or a ``repr``: every secret in it replaced by ``***``.

    Hidden are the password of the user information (``user:***@host``) and the value of every
    query parameter whose name says credential (``password=***``). Malformed URLs are redacted
    too (``rediss//user:pw@host``, ``redis:/user:pw@host``): everything between the scheme and
    the last ``@`` is taken for user information, and only a user name (without ``@``) before a
    colon is kept.
    Without any ``@``, a non-numeric "port" (``redis://user:pw``) is hidden as a password.
    """
    shown = url
    at = url.rfind("@")
    if at >= 0:
        start = _matched_end(_SCHEME_AND_SLASHES, url)
        user, colon, _secret = url[start:at].partition(":")
        # An "@" in the user name means its information ended sooner than the last "@": hide it all.
        shown = url[:start] + (f"{user}:{HIDDEN}" if colon and "@" not in user else HIDDEN) + url[at:]
    else:
        shown = _AUTHORITY_WITHOUT_USER.sub(_port_or_hidden, url, count=1)
    return _QUERY_PAIR.sub(_redacted_pair, shown)


def _port_or_hidden(authority: re.Match[str]) -> str:
    """``host:port`` as it is; ``user:secret`` (a URL whose ``@host`` was forgotten) hidden."""
    after_colon = authority[2]
    shown = after_colon == "" or _PORT_AND_MORE_SERVERS.fullmatch(after_colon) is not None
    return authority[0] if shown else f"{authority[1]}{HIDDEN}"


def _matched_end(pattern: re.Pattern[str], text: str) -> int:
    """Where ``pattern`` (which matches every text, if only with nothing) stops matching ``text``."""
    match = pattern.match(text)
    assert match is not None
    return match.end()


def _redacted_pair(pair: re.Match[str]) -> str:
    name = pair[1]
    return f"{name}={HIDDEN}" if _CREDENTIAL_NAME.search(unquote_plus(name)) else pair[0]


@dataclasses.dataclass(frozen=True, repr=False)
class CheckedUrl:
    """A Redis URL redis-py can use, and what it reads from it; its repr shows no secret."""

    url: str
    """The URL as redis-py is given it: its scheme in lower case."""
    options: dict[str, Any]
    """What redis-py's ``parse_url`` reads from it (for a sentinel or cluster URL: as if it named the
    master, or the first node)."""
    service_name: str | None = None
    """The service whose master the sentinels name; None for a URL that names the server itself."""
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_password: str | None = None
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    """The nodes of a Redis Cluster the client starts from; empty for a URL that names no cluster."""

    def __repr__(self) -> str:
        return f"CheckedUrl({redacted_url(self.url)!r})"

    @property
    def database(self) -> int:
        database: int = self.options.get("db", 0)
        return database

    @property
    def address(self) -> str:
        """Where the locks live, as messages show it: ``host:port/db``, or a socket path; never a secret."""
        if self.service_name is not None:
            sentinels = ",".join(host_and_port(host, port) for host, port in self.sentinels)
            return f"sentinel {self.service_name} via {sentinels}/{self.database}"
        if self.cluster_nodes:
            nodes = ",".join(host_and_port(host, port) for host, port in self.cluster_nodes)
            return f"cluster via {nodes}/0"
        if "path" in self.options:
            path: str = self.options["path"]
            return path if self.database == 0 else f"{path}?db={self.database}"
        return f"{host_and_port(self.options['host'], self.options.get('port', 6379))}/{self.database}"


def host_and_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def checked_url(redis_url: str) -> CheckedUrl:
    """``redis_url`` as redis-py will read it; ``ConfigurationError`` naming what is wrong if it cannot."""
    scheme, separator, rest = redis_url.partition("://")
    # Schemes are case-insensitive; redis-py reads lower case only.
    url = f"{scheme.lower()}{separator}{rest}"
    if separator and scheme.lower() in _SENTINEL_SCHEMES:
        checked = _read_sentinel_url(url)
    elif separator and scheme.lower() in _CLUSTER_SCHEMES:
        checked = _read_cluster_url(url)
    else:
        checked = _read_url(url)
    if isinstance(checked, str):
        raise ConfigurationError("redis_url", redacted_url(redis_url), checked)
    return checked


def _read_url(url: str) -> CheckedUrl | str:
    """What redis-py reads from a URL naming the server itself, or what keeps it from reading it so."""
    problem = _problem_of(url)
    if problem is not None:
        return problem
    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    return CheckedUrl(url=url, options=options)


@dataclasses.dataclass(frozen=True)
class _ServersUrl:
    """A URL naming several servers (sentinels, or nodes of a cluster), cut into its parts."""

    scheme: str
    user_information: str
    """What comes before the servers, with its ``@``; empty if nothing does."""
    servers: tuple[tuple[str, int], ...]
    first_server: str
    """The first ``host:port``, as written."""
    has_path: bool
    path: str
    """What follows the servers' ``/``, without its query."""
    query: str

    @classmethod
    def read(cls, url: str, role: str, default_port: int, form: str) -> _ServersUrl | str:
        """``url`` cut into its parts, each server a ``role`` (``form``: how to write the URL), or
        what keeps it from being read."""
        scheme, _separator, rest = url.partition("://")
        if "#" in url:
            return "has a #, which Redis does not read: write a # in a password as %23"
        authority_end = _matched_end(_AUTHORITY, rest)
        after_authority = rest[authority_end:]
        path, _, query = after_authority.removeprefix("/").partition("?")
        user_information, at, hosts = rest[:authority_end].rpartition("@")
        servers = _read_servers(hosts, role, default_port, form)
        if isinstance(servers, str):
            return servers
        first_server = hosts.split(",")[0]
        return cls(
            scheme,
            f"{user_information}{at}",
            servers,
            first_server,
            after_authority.startswith("/"),
            path,
            query,
        )

    def first_server_url(self, scheme: str, database: str, query: str) -> str:
        """The URL of the first server, as redis-py reads a URL that names one server itself."""
        return f"{scheme}://{self.user_information}{self.first_server}/{database}{query and '?'}{query}"


def _read_sentinel_url(url: str) -> CheckedUrl | str:
    """A sentinel URL's sentinels, service and master options, or what is wrong with it (never a secret).

    The master's options are checked and read as redis-py reads the same URL with the
    master's scheme and the first sentinel's address, so they take the same forms.
    """
    parts = _ServersUrl.read(url, "sentinel", _DEFAULT_SENTINEL_PORT, _SENTINEL_URL_FORM)
    if isinstance(parts, str):
        return parts
    service_name, _, database = parts.path.partition("/")
    problem = _service_problem(service_name if parts.has_path else "", database)
    if problem is not None:
        return problem
    kept_pairs = [pair for pair in parts.query.split("&") if pair and not _is_sentinel_password(pair)]
    sentinel_passwords = [
        value
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if name == SENTINEL_PASSWORD_PARAMETER
    ]
    if len(sentinel_passwords) > 1 or sentinel_passwords == [""]:
        return f"the query parameter {SENTINEL_PASSWORD_PARAMETER} must be given once, with a value"
    master = _read_url(
        parts.first_server_url(_SENTINEL_SCHEMES[parts.scheme], database, "&".join(kept_pairs))
    )
    if isinstance(master, str):
        return master
    return dataclasses.replace(
        master,
        url=url,
        service_name=unquote(service_name),
        sentinels=parts.servers,
        sentinel_password=sentinel_passwords[0] if sentinel_passwords else None,
    )


def _read_cluster_url(url: str) -> CheckedUrl | str:
    """A cluster URL's nodes and their options, or what is wrong with it (never a secret).

    The options are checked and read as redis-py reads the same URL with the nodes' scheme
    and the first node's address alone, so they take the same forms. Redis Cluster has only
    database 0.
    """
    parts = _ServersUrl.read(url, "node", _DEFAULT_CLUSTER_PORT, CLUSTER_URL_FORM)
    if isinstance(parts, str):
        return parts
    first_node = _read_url(parts.first_server_url(_CLUSTER_SCHEMES[parts.scheme], parts.path, parts.query))
    if isinstance(first_node, str):
        return first_node
    if first_node.database != 0:
        return f"names the database {first_node.database}: a Redis Cluster has only database 0"
    return dataclasses.replace(first_node, url=url, cluster_nodes=parts.servers)


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


def _read_servers(hosts: str, role: str, default_port: int, form: str) -> tuple[tuple[str, int], ...] | str:
    """The ``host:port`` list of a sentinel or cluster URL (each server a ``role``), or what is wrong with it.

    A wrong address is named by its position: it may be a secret typed in the wrong place.
    """
    if not hosts:
        return f"names no {role}: write host:port for each, as in {form}"
    servers = []
    for position, address in enumerate(hosts.split(","), start=1):
        try:
            parts = urlsplit(f"//{address}")
            port = parts.port
        except ValueError:
            port = 0
        if not address or not parts.hostname or port == 0:
            return (
                f"the address of {role} {position} cannot be read: write host:port, a port is a number "
                "from 1 to 65535, an IPv6 host goes in []"
            )
        servers.append((parts.hostname, port or default_port))
    return tuple(servers)


def _problem_of(url: str) -> str | None:
    """What keeps redis-py from reading ``url`` as it looks, or None."""
    scheme, separator, _rest = url.partition("://")
    if not separator or scheme not in _REDIS_SCHEMES:
        return (
            "must start with redis://, rediss:// or unix://, or name sentinels (redis+sentinel://) or "
            "a cluster (redis+cluster://), rediss+ for TLS"
        )
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


def names_sentinels(url: str | None) -> bool:
    """Whether ``url`` names sentinels (``redis+sentinel://``, ``rediss+sentinel://``), read or not."""
    return url is not None and url.partition("://")[0].lower() in _SENTINEL_SCHEMES


def names_cluster(url: str | None) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``), read or not."""
    return url is not None and url.partition("://")[0].lower() in _CLUSTER_SCHEMES


def redis_address(redis_url: str) -> str:
    """The ``host:port/db`` (or socket path, or ``sentinel <service> via <sentinels>/db``) a Redis URL
    points at, without its credentials.

    Raises ``ConfigurationError`` for a URL redis-py could not use, or would read otherwise than it looks.
    """
    return checked_url(redis_url).address


def with_sentinel_password(redis_url: str | None, sentinel_password: str) -> str:
    """``redis_url`` carrying the sentinels' own password (the ``sentinel_password`` setting) in its query.

    Raises ``ConfigurationError`` unless ``redis_url`` names sentinels and no other sentinel password.
    """
    checked = None if redis_url is None else checked_url(redis_url)
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
