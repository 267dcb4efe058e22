"""Script calls sent together: in one round trip to a server, in one per master on a Redis Cluster.

A batch of script calls goes to each master in a pipeline of its own (``ScriptBatch``):
redis-py refuses EVALSHA in its cluster pipeline. A call a cluster redirected is sent again to
the node the redirection names, and one that met a failed node after the slots are read again.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException

from locked_targets.errors import ConfigurationError
from locked_targets.rwlock.connection import RedisConnection, exchange_on, node_serving

_CLUSTER_SEND_ROUNDS = 3
"""How many times a batch on a cluster sends a call that was redirected, or met a failed node."""
_TRY_AGAIN_PAUSE_SECONDS = 0.05  # as redis-py pauses on TRYAGAIN


def _node_at(cluster: RedisCluster, host: str, port: int) -> ClusterNode:
    """The node at ``host:port``, known to the cluster client or not (a node an ASK names may be new)."""
    known: ClusterNode | None = cluster.get_node(host, port)  # type: ignore[no-untyped-call]
    return known or ClusterNode(host, port)  # type: ignore[no-untyped-call]


_Call = tuple[Script, list[Any], list[Any]]
"""A script call of a batch: the script, its keys and its arguments."""


class ScriptBatch:
    """Script calls sent together by EVALSHA in one round trip (on a cluster: one per node), their
    replies read in order.

    A redis-py pipeline of scripts first asks ``SCRIPT EXISTS`` in a round trip of its own;
    a batch sends the calls at once, a ``SCRIPT LOAD`` ahead of them for each script this
    process has not seen the server run (not on a cluster, whose nodes each have their own).
    Where the server says it lacks a script all the same (it restarted), the batch loads it
    and sends those calls again: a call refused for that never ran.
    """

    def __init__(self, connection: RedisConnection, wait_for_replicas: tuple[int, int] | None = None) -> None:
        self._connection = connection
        self._calls: list[_Call] = []
        self._wait_for_replicas = wait_for_replicas
        self.reloaded: tuple[int, ...] = ()
        """The calls (by index) the last ``send`` sent again, once the server had loaded their script;
        those it did not send again ran before them."""
        self._sent_to: dict[int, ClusterNode] = {}
        """On a cluster: the node each call (by index) of the last send went to last."""
        self.meanwhile: Callable[[], None] | None = None
        """The caller's work to do while the batch's first round trip is on its way (``exchange``),
        once: a local dump writes its file while its lock is asked for."""
        self.acknowledged: int | Exception | None = None
        """With ``wait_for_replicas`` (replicas, timeout in ms): the reply of the ``WAIT`` sent after
        the calls on their connection, how many replicas acknowledged them (or the error it got)."""

    def add(self, script: Script, keys: list[Any], args: list[Any]) -> None:
        self._calls.append((script, keys, args))

    def put_first(self, ahead: ScriptBatch) -> None:
        """Put the calls of ``ahead`` before this batch's own: their replies come first."""
        self._calls[:0] = ahead._calls

    def drop_first(self, count: int) -> None:
        """Take the first ``count`` calls out of the batch (they are not sent again)."""
        del self._calls[:count]

    def __len__(self) -> int:
        return len(self._calls)

    def send(self) -> list[Any]:
        """Every call's reply, or the error it got, in the order added: an error reply (a
        ``redis.ResponseError``), or on a cluster the failure of the node it went to."""
        meanwhile, self.meanwhile = self.meanwhile, None
        replies = self._send(self._calls, meanwhile)
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                self._connection.forget_demoted_master(reply)
        unknown = [
            index for index, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)
        ]
        self.reloaded = tuple(unknown)
        if unknown:
            missing = {self._calls[index][0] for index in unknown}
            for script in missing:
                script.sha = self._connection.client.script_load(script.script)
            self._load_where_refused(unknown)
            self._connection.scripts_loaded(missing)
            for index, reply in zip(
                unknown, self._send([self._calls[index] for index in unknown]), strict=True
            ):
                replies[index] = reply
        return replies

    def _load_where_refused(self, refused: list[int]) -> None:
        """On a cluster, load the script of each refused call on the node that refused it, too: SCRIPT
        LOAD goes to the masters the client knows, and during a failover the new master, which a
        MOVED led the call to, may not be one of them yet."""
        if not self._connection.is_cluster:
            return
        cluster = self._connection.client
        assert isinstance(cluster, RedisCluster)
        loads: dict[tuple[str, str], tuple[ClusterNode, Script]] = {}  # each script once per node
        for index in refused:
            node = self._sent_to.get(index)
            if node is not None:
                script = self._calls[index][0]
                loads[node.name, script.sha] = (node, script)
        for node, script in loads.values():
            cluster.get_redis_connection(node).script_load(script.script)

    def _send(self, calls: list[_Call], meanwhile: Callable[[], None] | None = None) -> list[Any]:
        # By the flag, not isinstance: RedisCluster's class makes that check cost microseconds.
        if self._connection.is_cluster:
            client = self._connection.client
            assert isinstance(client, RedisCluster)
            if self._wait_for_replicas is not None:
                # WAIT counts one connection's writes; a batch on a cluster has one per node.
                raise ConfigurationError(
                    "min_replicas_acked",
                    self._wait_for_replicas[0],
                    "is not supported on a Redis Cluster: set it to 0",
                )
            self._sent_to = {}
            return _send_per_node(client, calls, self._sent_to, meanwhile)
        # A script the server lacks is loaded in the same round trip, ahead of its calls: not
        # refused call by call, then loaded and sent again in round trips of their own.
        loading = self._connection.scripts_to_load(script for script, _keys, _args in calls)
        replies = _pipelined(
            self._connection.round_trip,
            [(call, False) for call in calls],
            wait_for_replicas=self._wait_for_replicas,
            loading=loading,
            meanwhile=meanwhile,
        )
        if loading:  # loaded, or their calls were refused for it (NOSCRIPT) and ``send`` loads them again
            self._connection.scripts_loaded(loading)
        if self._wait_for_replicas is None:
            return replies
        *replies, self.acknowledged = replies
        return replies


def _pipelined(
    round_trip: Callable[[list[tuple[Any, ...]], Callable[[], None] | None], list[Any]],
    calls: list[tuple[_Call, bool]],
    wait_for_replicas: tuple[int, int] | None = None,
    loading: Sequence[Script] = (),
    meanwhile: Callable[[], None] | None = None,
) -> list[Any]:
    """Each call's reply from one server, in one ``round_trip``; ``ASKING`` goes before a call flagged
    True (one that an ASK redirection sent to this node). With ``wait_for_replicas``, a ``WAIT``
    follows the calls on their connection, and its reply ends the list. ``SCRIPT LOAD`` of each of
    ``loading`` goes first (a call whose script it failed to load is refused, ``NOSCRIPT``).
    ``meanwhile`` runs while they are on their way."""
    commands: list[tuple[Any, ...]] = [("SCRIPT", "LOAD", script.script) for script in loading]
    for (script, keys, args), asking in calls:
        if asking:
            commands.append(("ASKING",))
        commands.append(("EVALSHA", script.sha, len(keys), *keys, *args))
    if wait_for_replicas is not None:
        commands.append(("WAIT", *wait_for_replicas))
    answers = iter(round_trip(commands, meanwhile)[len(loading) :])
    replies = []
    for _call, asking in calls:
        if asking:
            next(answers)  # ASKING's OK
        replies.append(next(answers))
    replies.extend(answers)  # WAIT's reply, if sent
    return replies


# A cluster's replies that send a call again: redirected (MOVED, ASK), "not now" (TRYAGAIN,
# CLUSTERDOWN), or the node failed (a connection error; not a timeout, which is already long).
_SENT_AGAIN = (
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.ConnectionError,
)


def _send_per_node(
    cluster: RedisCluster,
    calls: list[_Call],
    sent_to: dict[int, ClusterNode],
    meanwhile: Callable[[], None] | None,
) -> list[Any]:
    """``calls`` on a cluster, one pipeline per node, each call to the master of its first key's slot
    (every key of a lock shares one); replies in the order of ``calls``, and in ``sent_to`` the node
    each call went to last. ``meanwhile`` runs while the first node's pipeline is on its way.

    redis-py refuses EVALSHA in its cluster pipeline. A call whose reply is in ``_SENT_AGAIN`` is
    sent again, up to ``_CLUSTER_SEND_ROUNDS`` times in all: to the node a MOVED or an ASK names,
    after the slots are read again (MOVED, CLUSTERDOWN, a failed node), or after a pause
    (TRYAGAIN); then that reply is its reply.
    """
    replies: list[Any] = [None] * len(calls)
    asked: dict[int, ClusterNode] = {}
    moved: dict[int, ClusterNode] = {}
    pending = list(range(len(calls)))
    for _round in range(_CLUSTER_SEND_ROUNDS):
        by_node: dict[str, list[int]] = {}
        nodes: dict[str, ClusterNode] = {}
        for index in pending:
            try:
                node = asked.get(index) or moved.get(index) or node_serving(cluster, calls[index][1][0])
            except redis.exceptions.ClusterDownError as error:
                replies[index] = error
                continue
            nodes[node.name] = node
            sent_to[index] = node
            by_node.setdefault(node.name, []).append(index)
        for name, indices in by_node.items():
            try:
                answered = _pipelined(
                    functools.partial(exchange_on, cluster.get_redis_connection(nodes[name]).connection_pool),
                    [(calls[index], index in asked) for index in indices],
                    meanwhile=meanwhile,
                )
            except (redis.ConnectionError, redis.TimeoutError) as error:
                answered = [error] * len(indices)
            meanwhile = None  # run once
            for index, reply in zip(indices, answered, strict=True):
                replies[index] = reply
        pending = [index for index in pending if isinstance(replies[index], _SENT_AGAIN)]
        if not pending or not _ready_to_send_again(
            cluster, [(index, replies[index]) for index in pending], asked, moved
        ):
            break
    return replies


def _ready_to_send_again(
    cluster: RedisCluster,
    redirected: list[tuple[int, redis.RedisError]],
    asked: dict[int, ClusterNode],
    moved: dict[int, ClusterNode],
) -> bool:
    """Get ready to send calls again after these replies: note the node an ASK or a MOVED names for
    each, read the slots again or pause as the others ask. False if the slots cannot be read and a
    call has no node named: the replies stand.

    A MOVED call goes to the node its reply names, whatever the slots read now say: during a
    failover a node asked for them may not know the new master yet, and send it back to the old.
    """
    asked.clear()
    moved.clear()
    for index, reply in redirected:
        if isinstance(reply, redis.exceptions.AskError):  # MovedError is one too
            named = _node_at(cluster, reply.host, reply.port)
            (asked if type(reply) is redis.exceptions.AskError else moved)[index] = named
    if len(asked) < len(redirected):
        try:
            cluster.nodes_manager.initialize()
        except RedisClusterException:
            if len(asked) + len(moved) < len(redirected):
                return False
    if any(isinstance(reply, redis.exceptions.TryAgainError) for _index, reply in redirected):
        time.sleep(_TRY_AGAIN_PAUSE_SECONDS)
    return True
