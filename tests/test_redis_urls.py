"""A redis_url is read as redis-py reads it, refused up front naming what is wrong, shown without secrets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from helpers.lock_processes import make_lock
from helpers.tcp_peers import TcpPeer
from locked_targets import BackendUnavailable, ConfigurationError, Settings
from locked_targets.rwlock import LockMode, redis_address
from locked_targets.rwlock.connection import RedisConnection
from locked_targets.rwlock.redis_urls import checked_url, redacted_url
from locked_targets.testing import RedisServer, free_port


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A server of this module's own, whose databases the tests look into."""
    started = RedisServer().start()
    yield started
    started.stop()


def lock_base() -> str:
    return f"url-test-{uuid.uuid4().hex[:12]}:{{lock}}"


def test_an_upper_case_scheme_is_read_as_lower_case(server: RedisServer) -> None:
    url = f"REDIS://127.0.0.1:{server.port}/0"
    Settings(redis_url=url)
    base = lock_base()
    with make_lock(url, base).exclusive():
        assert server.client().exists(f"{base}:writer") == 1


def test_the_database_of_the_query_is_the_one_locked_and_the_one_shown(server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{server.port}?db=5"
    assert redis_address(url) == f"127.0.0.1:{server.port}/5"
    base = lock_base()
    with make_lock(url, base).exclusive():
        assert redis.Redis(port=server.port, db=5).exists(f"{base}:writer") == 1
        assert server.client().exists(f"{base}:writer") == 0


def test_an_unreachable_server_is_named_with_the_database_of_the_query() -> None:
    port = free_port()
    with pytest.raises(BackendUnavailable, match=f"Redis at 127.0.0.1:{port}/7 is unavailable"):
        make_lock(f"redis://127.0.0.1:{port}?db=7", lock_base()).acquire(LockMode.SHARED)


def test_two_different_databases_in_one_url_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"names two databases, /0 and db=5"):
        Settings(redis_url="redis://localhost:6379/0?db=5")


def test_a_database_the_server_lacks_is_refused_naming_it_and_the_servers_count(server: RedisServer) -> None:
    with pytest.raises(ConfigurationError, match=r"the database 16 does not exist .*: it has 16 \(0 to 15\)"):
        make_lock(f"redis://127.0.0.1:{server.port}/16", lock_base()).acquire(LockMode.EXCLUSIVE)


@pytest.mark.parametrize(
    "query",
    ["foo=bar", "socket_timeout=abc", "socket_timeout=60", "decode_responses=true", "retry_on_timeout=yes"],
)
def test_an_unknown_or_lock_breaking_query_parameter_is_refused_naming_it(query: str) -> None:
    name = query.split("=", maxsplit=1)[0]
    with pytest.raises(ConfigurationError, match=f"unknown query parameter {name}: a redis_url accepts db,"):
        Settings(redis_url=f"redis://localhost:6379/0?{query}")


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ("db=-1", "the query parameter db must be a whole number from 0 to"),
        ("db=five", "the query parameter db must be a whole number from 0 to"),
        ("db=", "the query parameter db has no value"),
        ("db=1&db=2", "the query parameter db is given more than once"),
        ("client_name=my app", "the query parameter client_name must be printable ASCII without spaces"),
    ],
)
def test_a_query_value_redis_would_refuse_is_refused_up_front(query: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        Settings(redis_url=f"redis://localhost:6379?{query}")


def test_tls_parameters_on_a_plain_url_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="ssl_cert_reqs applies to rediss:// URLs only"):
        Settings(redis_url="redis://localhost:6379/0?ssl_cert_reqs=none")


def test_an_unknown_certificate_check_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="ssl_cert_reqs must be none, optional, required"):
        Settings(redis_url="rediss://localhost:6379/0?ssl_cert_reqs=NONE")


@pytest.mark.parametrize("parameter", ["ssl_ca_certs", "ssl_certfile", "ssl_keyfile"])
def test_a_missing_certificate_or_key_file_is_named(tmp_path: Path, parameter: str) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigurationError, match=f"{parameter} names '{missing}', which is not a file"):
        Settings(redis_url=f"rediss://localhost:6379/0?{parameter}={missing}")


def test_present_certificate_files_are_accepted(tmp_path: Path) -> None:
    certificate = tmp_path / "ca.pem"
    certificate.write_text("not read until the handshake")
    settings = Settings(
        redis_url=f"rediss://localhost:6379/0?ssl_ca_certs={certificate}&ssl_cert_reqs=required"
    )
    assert settings.redis_url is not None


def test_a_peer_that_is_not_redis_is_reported_naming_its_address() -> None:
    with TcpPeer(reply=b"HTTP/1.1 400 Bad Request\r\n\r\n") as peer:  # noqa: SIM117 -- the peer outlives the attempt
        with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{peer.port}/0 .*does not speak Redis"):
            make_lock(f"redis://127.0.0.1:{peer.port}/0", lock_base()).acquire(LockMode.SHARED)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss//user:s3cret@host:1/0", "rediss//user:***@host:1/0"),
        ("redis:/user:s3cret@host:1/0", "redis:/user:***@host:1/0"),
        ("redis:user:s3cret@host:1/0", "redis:user:***@host:1/0"),
        ("redis://s3cret@host/0", "redis://***@host/0"),
        ("redis://user:pa/s3cret@host/0", "redis://user:***@host/0"),
        ("redis://user:p@s3cret@host/0", "redis://user:***@host/0"),
        ("redis://h:1/0?password=s3cret", "redis://h:1/0?password=***"),
        ("redis://h:1/0?db=1&ssl_password=s3cret&x=1", "redis://h:1/0?db=1&ssl_password=***&x=1"),
        ("redis://h:1/0?pass%77ord=s3cret", "redis://h:1/0?pass%77ord=***"),
        ("redis://h:1/0?password=s3cret@x", "redis://h:***@x"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://h:1/0?password=s3c;ret", "redis://h:1/0?password=***"),
        ("redis://user:s3cret", "redis://user:***"),
        ("redis://:s3cret/0", "redis://:***/0"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
        ("rediss://[::1]:s3cret", "rediss://[::1]:***"),
        ("redis+cluster://user:s3cret@h1:7000,h2:7001", "redis+cluster://user:***@h1:7000,h2:7001"),
        (
            "rediss+cluster://:s3cret@h1:7000?ssl_password=s3cret",
            "rediss+cluster://:***@h1:7000?ssl_password=***",
        ),
        ("redis+cluster://h1:7000,h2:7001,[::1]:7002", "redis+cluster://h1:7000,h2:7001,[::1]:7002"),
        ("redis+cluster://user:s3cret", "redis+cluster://user:***"),
        # No scheme, and an "@" before the last (found by the hostile-settings fuzz).
        (":s3cret@:0/16?=@", ":***@"),
    ],
)
def test_a_url_is_shown_with_every_secret_hidden(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_a_cluster_url_is_shown_as_its_nodes_and_database_0() -> None:
    assert redis_address("redis+cluster://:s3cret@h1:7000,[::1]:7001/0") == "cluster via h1:7000,[::1]:7001/0"


def test_a_cluster_node_port_defaults_to_6379() -> None:
    assert redis_address("rediss+cluster://h1,h2:7001") == "cluster via h1:6379,h2:7001/0"


@pytest.mark.parametrize(
    ("place", "problem"),
    [
        ("", "names no node: write host:port for each, as in redis+cluster://"),
        ("h1:7000,,h2:7001", "the address of node 2 cannot be read"),
        ("h1:7000,h2:99999", "the address of node 2 cannot be read"),
        ("h1:7000/3", "names the database 3: a Redis Cluster has only database 0"),
        ("h1:7000?db=3", "names the database 3: a Redis Cluster has only database 0"),
        ("h1:7000/first", "the database 'first' (the path after the port)"),
        ("h1:7000?socket_timeout=1", "unknown query parameter socket_timeout"),
        ("h1:7000?ssl_cert_reqs=none", "ssl_cert_reqs applies to rediss:// URLs only"),
    ],
)
def test_a_malformed_cluster_url_is_refused_naming_what_is_wrong(place: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings(redis_url=f"redis+cluster://user:s3cret@{place}")
    assert problem in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_a_tls_cluster_url_takes_the_tls_parameters(tmp_path: Path) -> None:
    certificate = tmp_path / "ca.pem"
    certificate.write_text("not read until the handshake")
    url = f"rediss+cluster://h1:7000,h2:7001?ssl_ca_certs={certificate}&ssl_cert_reqs=required"
    assert Settings(redis_url=url).redis_url == url


@pytest.mark.parametrize(
    "url",
    [
        "rediss//user:s3cret@host:1/0",
        "redis:/user:s3cret@host:1/0",
        "redis://h:1/0?password=s3cret&socket_timeout=1",
        "redis://user:s3cret@host:port/0",
        "http://user:s3cret@host/0",
        "redis://user:s3cret@host/0?ssl_certfile=/missing",
        "redis+cluster://user:s3cret@host:7000/2",
        "redis+cluster://user:s3cret",
    ],
)
def test_a_refused_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings(redis_url=url)
    assert "s3cret" not in str(raised.value)
    assert "s3cret" not in repr(raised.value.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://user:hunter2@127.0.0.1:6379/0",
        "redis+sentinel://:hunter2@127.0.0.1:26379/mymaster?sentinel_password=hunter2",
        "rediss+cluster://user:hunter2@127.0.0.1:7000,127.0.0.1:7001",
    ],
)
def test_a_checked_url_shows_no_password_in_its_repr(url: str) -> None:
    assert "hunter2" not in repr(checked_url(url))


def test_a_new_connection_greets_the_server_without_a_health_check_ping_first(
    private_redis: RedisServer,
) -> None:
    """A socket just opened needs no PING: it would be one more round trip per new connection."""
    probe = f"probe-{uuid.uuid4().hex}"
    with private_redis.client().monitor() as monitor:  # type: ignore[no-untyped-call]
        connection = RedisConnection(private_redis.url)
        assert isinstance(connection.client, redis.Redis)
        connection.client.get(probe)
        greeting: list[str] = []
        while probe not in (command := monitor.next_command())["command"]:
            greeting.append(command["command"].split()[0].upper())
    assert greeting, "the new connection's greeting was not seen"
    assert "PING" not in greeting
