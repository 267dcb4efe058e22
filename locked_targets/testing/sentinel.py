"""A private Redis Sentinel deployment: a master, a replica and three sentinels, on loopback ports.

Sentinel rewrites its configuration file as it learns the deployment, so each sentinel gets
a writable copy of its own in the caller's directory. A failover is forced with
``SENTINEL FAILOVER`` and awaited until every sentinel names the new master and the old
one has been turned into its replica, so that a test sees the deployment as an application
after a real failover would. Every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

import redis

from locked_targets.testing.redis_server import free_port, redis_server_binary

_LOOPBACK = "127.0.0.1"
_SETTLE_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.05
_SENTINELS = 3
_QUORUM = 2
# Short, so that a test's failover takes seconds: how long a silent master counts as up,
# how long a failover may take.
_DOWN_AFTER_MILLISECONDS = 1000
_FAILOVER_TIMEOUT_MILLISECONDS = 3000


class SentinelDeployment:
    """A master, its replica and three sentinels watching them, with an optional sentinel password."""

    def __init__(
        self, directory: str, service_name: str = "mymaster", sentinel_password: str | None = None
    ) -> None:
        self.directory = directory
        self.service_name = service_name
        self.sentinel_password = sentinel_password
        self.sentinel_ports: list[int] = []
        self.data_ports: list[int] = []  # the first server started as master, the second as its replica
        self._processes: list[subprocess.Popen[bytes]] = []
        self._clients: dict[int, redis.Redis] = {}

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of the service's master, database 0 (no sentinel password)."""
        sentinels = ",".join(f"{_LOOPBACK}:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{sentinels}/{self.service_name}/0"

    def start(self) -> SentinelDeployment:
        """Start every server and wait until each sentinel knows the replica and the other sentinels."""
        try:
            master = self._start_data_server([])
            self._start_data_server(["--replicaof", _LOOPBACK, str(master)])
            for number in range(_SENTINELS):
                self._start_sentinel(number, master)
            self._await(self._sentinels_settled, "the sentinels to see the replica and each other")
        except BaseException:
            self.stop()
            raise
        return self

    def master_port(self) -> int:
        """The port of the master, as the first sentinel names it."""
        return self._named_master(self.sentinel_ports[0])

    def client(self, port: int) -> redis.Redis:
        """A plain client of the server (data server or sentinel) at ``port``, closed by ``stop``."""
        client = self._clients.get(port)
        if client is None:
            password = self.sentinel_password if port in self.sentinel_ports else None
            client = self._clients[port] = redis.Redis(
                host=_LOOPBACK, port=port, password=password, socket_connect_timeout=1, socket_timeout=5
            )
        return client

    def fail_over(self) -> int:
        """Force a failover; return the new master's port once the old master is its replica."""
        old = self.master_port()
        new = next(port for port in self.data_ports if port != old)
        # Refused (NOGOODSLAVE) until the sentinel has fresh news of the replica: ask again.
        first_sentinel = self.client(self.sentinel_ports[0])
        self._await(lambda: first_sentinel.sentinel_failover(self.service_name), "a failover")

        def switched() -> bool:
            named = {self._named_master(port) for port in self.sentinel_ports}
            return named == {new} and self._role(new) == "master" and self._role(old) == "slave"

        self._await(switched, f"the failover from port {old} to {new}")
        return new

    def stop(self) -> None:
        """Stop every server: politely, then by force."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._processes.clear()
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> SentinelDeployment:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _start_data_server(self, arguments: list[str]) -> int:
        def launch(port: int) -> subprocess.Popen[bytes]:
            command = [
                redis_server_binary(),
                "--port", str(port),
                "--bind", _LOOPBACK,
                "--save", "",
                "--appendonly", "no",
                "--dir", self.directory,  # where a replica's full sync writes its RDB file
                *arguments,
            ]  # fmt: skip
            return self._launch(command)

        port = self._started_on_free_port(launch, password=None)
        self.data_ports.append(port)
        return port

    def _start_sentinel(self, number: int, master: int) -> None:
        def launch(port: int) -> subprocess.Popen[bytes]:
            lines = [
                f"port {port}",
                f"bind {_LOOPBACK}",
                f"dir {self.directory}",
                f"sentinel monitor {self.service_name} {_LOOPBACK} {master} {_QUORUM}",
                f"sentinel down-after-milliseconds {self.service_name} {_DOWN_AFTER_MILLISECONDS}",
                f"sentinel failover-timeout {self.service_name} {_FAILOVER_TIMEOUT_MILLISECONDS}",
            ]
            if self.sentinel_password is not None:
                lines += [
                    f"requirepass {self.sentinel_password}",
                    f"sentinel sentinel-pass {self.sentinel_password}",
                ]
            configuration = os.path.join(self.directory, f"sentinel-{number}-{port}.conf")
            with open(configuration, "w", encoding="utf-8") as file:
                file.write("\n".join(lines) + "\n")
            return self._launch([redis_server_binary(), configuration, "--sentinel"])

        self.sentinel_ports.append(self._started_on_free_port(launch, password=self.sentinel_password))

    def _launch(self, command: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._processes.append(process)
        return process

    def _started_on_free_port(
        self, launch: Callable[[int], subprocess.Popen[bytes]], *, password: str | None
    ) -> int:
        """The port a server ``launch`` starts answers on, trying other ports if one is taken meanwhile."""
        for _attempt in range(5):
            port = free_port()
            process = launch(port)
            deadline = time.monotonic() + _SETTLE_TIMEOUT_SECONDS
            while process.poll() is None and time.monotonic() < deadline:
                probe = redis.Redis(host=_LOOPBACK, port=port, password=password, socket_timeout=1)
                try:
                    probe.ping()
                    return port
                except redis.ConnectionError:
                    time.sleep(_POLL_SECONDS)
                finally:
                    probe.close()
            if process.poll() is None:
                process.kill()
        raise RuntimeError("could not start a server of the sentinel deployment on a free port")

    def _sentinels_settled(self) -> bool:
        for port in self.sentinel_ports:
            state = cast(dict[str, Any], self.client(port).sentinel_master(self.service_name))
            if state["num-slaves"] < 1 or state["num-other-sentinels"] < _SENTINELS - 1:
                return False
        return True

    def _named_master(self, sentinel_port: int) -> int:
        address = cast(
            tuple[str, int], self.client(sentinel_port).sentinel_get_master_addr_by_name(self.service_name)
        )
        return int(address[1])

    def _role(self, port: int) -> str:
        role: str = self.client(port).info("replication")["role"]
        return role

    def _await(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + _SETTLE_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except redis.RedisError:
                pass  # a server in the middle of a change: ask again
            time.sleep(_POLL_SECONDS)
        raise TimeoutError(f"waited {_SETTLE_TIMEOUT_SECONDS:g} s for {what}")
