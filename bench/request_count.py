"""Counts the Redis commands a piece of code sends, server-side, with ``MONITOR``.

``MONITOR`` shows every command the server executes with its source: a client
connection, or ``lua`` for commands a script runs inside one ``EVALSHA``. So the count
separates requests (what the client sent, each one a round trip unless pipelined)
from the work done inside scripts. The bench's own control connection is left out.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence

import redis

from locked_targets.rwlock.releases import wait_until_sent


@dataclasses.dataclass(frozen=True)
class RequestCount:
    """Commands per call of the measured code, averaged over several calls."""

    client_requests: float
    script_commands: float
    request_names: tuple[str, ...]


def count_requests(redis_url: str, calls: Sequence[Callable[[], object]]) -> RequestCount:
    """Make ``calls`` one after the other and count the commands they made Redis execute."""
    control = redis.Redis.from_url(redis_url, single_connection_client=True)
    try:
        own_address = str(control.client_info()["addr"])
        end_marker = f"bench-end-{uuid.uuid4().hex}"
        client_requests: list[str] = []
        script_commands = 0
        # The releases a call hands to the background count as its own: earlier code's are sent
        # before counting starts, the calls' own before it ends.
        wait_until_sent()
        with control.monitor() as monitor:  # type: ignore[no-untyped-call]
            for call in calls:
                call()
            wait_until_sent()
            # MONITOR reports commands in execution order, so once the marker arrives
            # every command of the calls above has been read.
            control.echo(end_marker)
            while True:
                seen = monitor.next_command()
                source = f"{seen['client_address']}:{seen['client_port']}"
                if seen["client_type"] == "lua":
                    script_commands += 1
                elif source != own_address:
                    client_requests.append(str(seen["command"]).split(" ", 1)[0].upper())
                elif end_marker in str(seen["command"]):
                    break
        return RequestCount(
            client_requests=len(client_requests) / len(calls),
            script_commands=script_commands / len(calls),
            request_names=tuple(sorted(set(client_requests))),
        )
    finally:
        control.close()
