"""TCP peers on loopback that are not Redis: one that never answers, one that answers something else."""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class TcpPeer:
    """Accepts every connection on a loopback port; answers its first read with ``reply`` (None: never)."""

    def __init__(self, reply: bytes | None = None) -> None:
        self._reply = reply
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name="tcp-peer", daemon=True)

    def __enter__(self) -> TcpPeer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._listener.close()
        for accepted in self._accepted:
            accepted.close()

    def _serve(self) -> None:
        while True:
            try:
                accepted, _address = self._listener.accept()
            except OSError:  # closed by __exit__
                return
            self._accepted.append(accepted)  # kept open: a silent peer holds the line
            if self._reply is not None:
                accepted.recv(4096)
                accepted.sendall(self._reply)
