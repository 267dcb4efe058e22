"""Who holds a lock, as each holder describes itself in Redis, and as messages show it."""

from __future__ import annotations

import functools
import json
import os
import socket
import time

from locked_targets.rwlock.scripts import Blocked, Relation

_HOST = socket.gethostname()


def describe_holder(*, path: str, task: str | None, lock: str, since: float) -> str:
    """What a holder stores about itself: what it locks, host, pid, task, which lock and since when.

    The path is there for operators: a lock's keys are a digest of it (``since`` is epoch seconds).
    """
    return f'{_fixed_fields(path, task, lock, os.getpid())}, "since": {since!r}}}'


@functools.lru_cache(maxsize=4096)
def _fixed_fields(path: str, task: str | None, lock: str, pid: int) -> str:
    """The description's JSON object but its last field, ``since``, and closing brace: the same
    for each acquisition of a lock, encoded once."""
    return json.dumps({"path": path, "host": _HOST, "pid": pid, "task": task, "lock": lock})[:-1]


def readable_blocker(blocked: Blocked) -> str:
    """'pid 12 on host h (task T, holding the write lock since ...)' for whoever blocks an attempt."""
    try:
        fields = json.loads(blocked.blocker_description)
    except ValueError:
        return "a holder whose lease has just ended"
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(fields.get("since", 0))))
    task = f"task {fields['task']}, " if fields.get("task") else ""
    verb = "waiting for" if blocked.relation is Relation.WAITS else "holding"
    return (
        f"pid {fields.get('pid')} on host {fields.get('host')} "
        f"({task}{verb} the {fields.get('lock')} since {since})"
    )
