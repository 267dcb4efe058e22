"""A TCP proxy on 127.0.0.1 that delays every chunk by half a round trip each way: Redis "in another cluster".

Each direction of each connection has its own queue, so chunks leave in the order they
came, each half a round trip after it arrived (a chunk does not also wait out the delay
of the one before it: the link is long, not slow). Everything on the connection,
pub/sub included, pays the delay. The event loop runs on a ``select()`` selector in a
thread of its own: epoll and poll take whole milliseconds, which would round every
half trip up to the next millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import threading
from collections.abc import Iterator

_CHUNK_BYTES = 65536
_START_TIMEOUT_SECONDS = 10.0
# A chunk of b"" in a queue: the sending side has closed.
_END = b""


@contextlib.contextmanager
def delay_proxy(target_port: int, round_trip_seconds: float) -> Iterator[int]:
    """A proxy to ``target_port`` that adds ``round_trip_seconds`` to every round trip; yields its port."""
    proxy = _DelayProxy(target_port, round_trip_seconds)
    proxy.start()
    try:
        yield proxy.port
    finally:
        proxy.stop()


class _DelayProxy:
    """Listens on a free loopback port, in a thread of its own, until stopped."""

    def __init__(self, target_port: int, round_trip_seconds: float) -> None:
        self._target_port = target_port
        self._one_way_seconds = round_trip_seconds / 2
        self._loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
        self._listening = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="bench-delay-proxy", daemon=True)
        self.port = 0

    def start(self) -> None:
        self._thread.start()
        if not self._listening.wait(_START_TIMEOUT_SECONDS):
            raise RuntimeError("the delay proxy did not start listening")

    def stop(self) -> None:
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=_START_TIMEOUT_SECONDS)

    def _serve(self) -> None:
        try:
            self._loop.run_until_complete(self._listen())
        finally:
            self._loop.close()

    async def _listen(self) -> None:
        self._stop = asyncio.Event()
        connections: set[asyncio.Task[None]] = set()

        async def accept(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections.add(task)
            try:
                await self._forward(client_reader, client_writer)
            except asyncio.CancelledError:
                pass  # the proxy is closing: ending the connection is all there is to do
            finally:
                connections.discard(task)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._listening.set()
        async with server:
            await self._stop.wait()
        for connection in list(connections):
            connection.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                self._delay(client_reader, server_writer), self._delay(server_reader, client_writer)
            )
        finally:
            for writer in (client_writer, server_writer):
                writer.close()

    async def _delay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction: each chunk leaves half a round trip after it arrived, in order."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def receive() -> None:
            with contextlib.suppress(OSError):
                while chunk := await reader.read(_CHUNK_BYTES):
                    chunks.put_nowait((loop.time() + self._one_way_seconds, chunk))
            chunks.put_nowait((loop.time() + self._one_way_seconds, _END))

        async def send() -> None:
            while True:
                due, chunk = await chunks.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if chunk == _END:
                    break
                writer.write(chunk)
                await writer.drain()
            # The other side learns that this one closed; the other direction goes on until it closes too.
            if writer.can_write_eof():
                writer.write_eof()

        both = [asyncio.ensure_future(receive()), asyncio.ensure_future(send())]
        try:
            await asyncio.gather(*both)
        except OSError:
            pass  # a side went away: the connection is over
        finally:
            for half in both:
                half.cancel()
