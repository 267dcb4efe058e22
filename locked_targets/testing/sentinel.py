"""A private Redis Sentinel deployment: a master, a replica and three sentinels, on loopback ports.

Sentinel rewrites its configuration file as it learns the deployment, so each sentinel gets
a writable copy of its own in the caller's directory. A failover is forced with
``SENTINEL FAILOVER`` and awaited until every sentinel names the new master and the old
one has been turned into its replica, so that a test sees the deployment as an application
after a real failover would; or the master is killed, and the sentinels promote the replica
once they find it down. Replication can be stalled first, so that a failover loses what the
master wrote meanwhile, as an asynchronous replica that lags would. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
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
# A write the replica must acknowledge, and how long it may take.
_PROBE_CHANNEL = "sentinel-deployment:probe"
_PROBE_WAIT_MILLISECONDS = 500


class SentinelDeployment:
    """A master, its replica and three sentinels watching them, with an optional sentinel password."""

    down_after_seconds = _DOWN_AFTER_MILLISECONDS / 1000
    """How long the sentinels wait, after a master stops answering, before they fail it over."""

    def __init__(
        self, directory: str, service_name: str = "mymaster", sentinel_password: str | None = None
    ) -> None:
        self.directory = directory
        self.service_name = service_name
        self.sentinel_password = sentinel_password
        self.sentinel_ports: list[int] = []
        self.data_ports: list[int] = []  # the first server started as master, the second as its replica
        self._processes: list[subprocess.Popen[bytes]] = []
        self._data_servers: dict[int, subprocess.Popen[bytes]] = {}
        self._clients: dict[int, redis.Redis] = {}
        self._stalled: int | None = None  # the port of the master whose replicas are kept from syncing

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
            # Redis 7 syncs a new replica diskless, after a delay: until then it acknowledges nothing.
            self._await(self._replica_in_sync, "the replica to sync")
        except BaseException:
            self.stop()
            raise
        return self

    def master_port(self) -> int:
        """The port of the master, as the first sentinel names it."""
        return self._named_master(self.sentinel_ports[0])

    def replica_port(self) -> int:
        """The port of the data server that is not the master."""
        master = self.master_port()
        return next(port for port in self.data_ports if port != master)

    def stall_replication(self) -> None:
        """Keep the replica from receiving anything the master writes from now on, until
        ``resume_replication`` or a failover (which promotes the replica without it).

        The master's ACL refuses its replicas ``SYNC`` and ``PSYNC``, and it drops their links:
        the replica keeps asking to resync, in vain, while every server still answers the
        sentinels and the applications as usual. The sentinels promote a replica whose link has
        been down for less than ten times ``down_after_seconds``: fail over within that.
        """
        master = self.master_port()
        self.client(master).execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", "default", "-sync", "-psync"
        )
        self.client(master).client_kill_filter(_type="replica")
        self._stalled = master

    def resume_replication(self) -> None:
        """Let the replica sync again (it gets what it missed), and wait until it acknowledges writes."""
        if self._stalled is None:
            return
        stalled, self._stalled = self._stalled, None
        self.client(stalled).execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", "default", "+sync", "+psync"
        )
        self._await(self._replica_acknowledges, "the replica to acknowledge the master's writes again")

    def kill_master(self) -> None:
        """Kill the master (``SIGKILL``), as a crash would; the sentinels promote the replica once they
        have found it down (``await_master``)."""
        master = self.master_port()
        self._data_servers[master].send_signal(signal.SIGKILL)
        self._data_servers[master].wait(timeout=_SETTLE_TIMEOUT_SECONDS)
        if self._stalled == master:
            self._stalled = None

    def await_master(self, port: int) -> None:
        """Wait until every sentinel names the server at ``port`` the master, and it says it is one."""
        self._await(lambda: self._is_master(port), f"port {port} to become the master")

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
        new = self.replica_port()
        # Refused (NOGOODSLAVE) until the sentinel has fresh news of the replica: ask again.
        first_sentinel = self.client(self.sentinel_ports[0])
        self._await(lambda: first_sentinel.sentinel_failover(self.service_name), "a failover")
        self._await(
            lambda: self._is_master(new) and self._role(old) == "slave",
            f"the failover from port {old} to {new}",
        )
        self.resume_replication()  # the old master's ACL, should it be promoted again; and its sync
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
        self._data_servers[port] = self._processes[-1]  # the launch that answered is the last one
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

    def _replica_in_sync(self) -> bool:
        link: str = self.client(self.replica_port()).info("replication")["master_link_status"]
        return link == "up"

    def _replica_acknowledges(self) -> bool:
        """Whether the replica acknowledges what the master writes (``WAIT``).

        One that came back by the old ``SYNC`` (its ``PSYNC`` refused just before the master's ACL
        let both again) never does: its link is dropped, and it comes back by ``PSYNC``.
        """
        if not self._replica_in_sync():
            return False
        master = self.master_port()
        with redis.Redis(
            host=_LOOPBACK, port=master, single_connection_client=True, socket_timeout=5
        ) as probe:
            probe.publish(_PROBE_CHANNEL, "")  # replicated like any write, and writes no key
            if probe.wait(1, _PROBE_WAIT_MILLISECONDS) >= 1:
                return True
        self.client(master).client_kill_filter(_type="replica")
        return False

    def _is_master(self, port: int) -> bool:
        named = {self._named_master(sentinel) for sentinel in self.sentinel_ports}
        return named == {port} and self._role(port) == "master"

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
