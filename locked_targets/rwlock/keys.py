"""The Redis keys and channels that together make one lock.

Every key and channel of a lock extends its ``base``, which ends in a Redis Cluster hash
tag (``{...}``): they all live in one slot, so one Lua script can touch them together.
Which base a cache file gets is the target layer's business (``locked_targets.locks``).
"""

from __future__ import annotations

import dataclasses

REVOKE_CHANNEL_SUFFIX = ":revoke"
# Matches every lock's revoke channel: the hash tag's closing brace, then the suffix.
REVOKE_CHANNEL_PATTERN = "*}" + REVOKE_CHANNEL_SUFFIX


@dataclasses.dataclass(frozen=True)
class LockKeys:
    """The keys and channels of one lock, named after what they hold."""

    path: str
    """What the lock protects, as messages name it (a cache file's normalized path)."""

    base: str
    """The prefix of every key and channel of this lock; it ends with a hash tag in braces."""

    @property
    def writer(self) -> str:
        """String: the token of the exclusive holder, expiring with its lease."""
        return f"{self.base}:writer"

    @property
    def readers(self) -> str:
        """Sorted set: shared holders' tokens, scored by lease expiry (ms, server time)."""
        return f"{self.base}:readers"

    @property
    def waiting_writers(self) -> str:
        """Sorted set: tokens of writers waiting for the lock, scored by expiry (ms, server time)."""
        return f"{self.base}:waiting_writers"

    @property
    def holders(self) -> str:
        """Hash: token to a description of the holder (host, pid, task, since)."""
        return f"{self.base}:holders"

    @property
    def fence(self) -> str:
        """String: the last fencing token granted with this lock; outlives the lock (long TTL)."""
        return f"{self.base}:fence"

    @property
    def released_channel(self) -> str:
        """Pub/sub channel on which a release wakes the waiters."""
        return f"{self.base}:released"

    @property
    def revoke_channel(self) -> str:
        """Pub/sub channel on which a waiting writer asks readers to give back kept shared leases."""
        return f"{self.base}{REVOKE_CHANNEL_SUFFIX}"

    @property
    def every_key(self) -> tuple[str, str, str, str, str]:
        """Every Redis key of this lock."""
        return (self.writer, self.readers, self.waiting_writers, self.holders, self.fence)

    @property
    def channels(self) -> tuple[str, str]:
        """Every pub/sub channel of this lock."""
        return (self.released_channel, self.revoke_channel)


def base_of_revoke_channel(channel: str) -> str:
    """The base of the lock whose revoke channel is ``channel``."""
    return channel.removesuffix(REVOKE_CHANNEL_SUFFIX)
