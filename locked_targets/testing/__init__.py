"""Support for the tests, the demo and the benchmarks; not part of the library, which never imports it.

- ``redis_server``: a private, real ``redis-server`` (``RedisServer``) and ``free_port``;
- ``side_log``: the append-only log that applications in separate processes share;
- ``processes``: copies of an application as separate OS processes, released together;
- ``sentinel``: a master, a replica and three sentinels (``SentinelDeployment``), with forced failovers;
- ``cluster``: a Redis Cluster of three masters with a replica each (``ClusterDeployment``), with failovers.

Its modules import only the standard library and redis-py (no gokart, no luigi), so that it stays light.
"""

from locked_targets.testing.cluster import ClusterDeployment
from locked_targets.testing.processes import LaunchedProcess, ProcessFailed, ProcessGroup, ProcessSpec
from locked_targets.testing.redis_server import RedisServer, free_port
from locked_targets.testing.sentinel import SentinelDeployment
from locked_targets.testing.side_log import append_line, read_lines
from locked_targets.testing.tls_proxy import TlsProxy

__all__ = [
    "ClusterDeployment",
    "LaunchedProcess",
    "ProcessFailed",
    "ProcessGroup",
    "ProcessSpec",
    "RedisServer",
    "SentinelDeployment",
    "TlsProxy",
    "append_line",
    "free_port",
    "read_lines",
]
