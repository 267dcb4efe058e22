"""What a Redis server receives while a test acts, as MONITOR shows it."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import redis


def scripts_sent_for(
    client: redis.Redis, lock_base: str, action: Callable[[], object]
) -> list[tuple[str, str]]:
    """The scripts sent to ``client``'s server for the lock ``lock_base`` while ``action`` ran, in the
    order it received them: each as its SHA and the port of the connection that sent it."""
    end_of_trial = f"end-of-trial-{uuid.uuid4().hex}"
    with client.monitor() as monitor:  # type: ignore[no-untyped-call]
        action()
        client.echo(end_of_trial)
        sent = []
        while end_of_trial not in (command := monitor.next_command())["command"]:
            if command["client_type"] != "lua" and lock_base in command["command"]:
                sent.append((command["command"].split()[1], command["client_port"]))
    return sent
