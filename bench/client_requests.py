"""Counts, inside one process, the requests redis-py sends, by the thread that sends them.

The server's ``INFO commandstats`` counts the commands a Lua script runs as well as the
client's requests, and cannot say who waited for them. Counting where redis-py sends
tells the two kinds of thread apart: the thread that runs the tasks (luigi's worker runs
them in the main thread) waits for each of its requests, while the lease renewals, the
pub/sub listener and gokart's lock-extending scheduler send theirs in the background. A
pipeline is sent at once, so it counts once; a new connection's handshake counts too.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from redis.connection import AbstractConnection


@dataclasses.dataclass(frozen=True)
class ClientRequests:
    """Requests sent so far: by the main thread (the critical path) and by every other thread."""

    main_thread: int
    background: int

    def __sub__(self, earlier: ClientRequests) -> ClientRequests:
        return ClientRequests(self.main_thread - earlier.main_thread, self.background - earlier.background)


class _Tally:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.main_thread = 0
        self.background = 0

    def add(self) -> None:
        with self._lock:
            if threading.current_thread() is threading.main_thread():
                self.main_thread += 1
            else:
                self.background += 1


_tally = _Tally()


def start_counting() -> None:
    """From now on, count every request any redis-py connection of this process sends."""
    send: Callable[..., None] = AbstractConnection.send_packed_command

    def counted_send(connection: AbstractConnection, command: Any, check_health: bool = True) -> None:
        _tally.add()
        send(connection, command, check_health)

    AbstractConnection.send_packed_command = counted_send  # type: ignore[method-assign]


def sent_so_far() -> ClientRequests:
    return ClientRequests(main_thread=_tally.main_thread, background=_tally.background)
