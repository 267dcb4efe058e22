"""A Redis whose writes are held back (``CLIENT PAUSE ... WRITE``): a lock request sent meanwhile
waits in the server, blocked, until the test lets it through."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis

# Longer than any test waits while paused: a pause that ends by itself shows as a slow test.
_PAUSE_MILLISECONDS = 30_000


@contextlib.contextmanager
def writes_paused(client: redis.Redis) -> Iterator[None]:
    """Hold back every write (scripts too) on ``client``'s server for the block; reads still go."""
    client.client_pause(_PAUSE_MILLISECONDS, all=False)
    try:
        yield
    finally:
        client.client_unpause()


def requests_held_back(client: redis.Redis) -> int:
    """How many clients of ``client``'s server have a request waiting for the pause to end."""
    return sum("b" in entry["flags"] for entry in client.client_list())
