"""The Redis keys and channels that together make one lock.

Every key and channel of a lock extends its ``base``, which ends in a Redis Cluster hash
tag (``{...}``): they all live in one slot, so one Lua script can touch them together.
Which base a cache file gets is the target layer's business (``locked_targets.locks``).
"""

from __future__ import annotations

import dataclasses
from typing import overload

REVOKE_CHANNEL_SUFFIX = ":revoke"
# Matches every lock's revoke channel: the hash tag's closing brace, then the suffix.
REVOKE_CHANNEL_PATTERN = "*}" + REVOKE_CHANNEL_SUFFIX


class _Named:
    """A key or channel of a lock: the lock's base followed by a fixed suffix."""

    def __init__(self, suffix: str, holds: str) -> None:
        self.suffix = suffix
        self.__doc__ = holds
        self.name = ""

    def __set_name__(self, owner: type[LockKeys], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, keys: None, owner: type[LockKeys]) -> _Named: ...

    @overload
    def __get__(self, keys: LockKeys, owner: type[LockKeys]) -> str: ...

    def __get__(self, keys: LockKeys | None, owner: type[LockKeys]) -> str | _Named:
        if keys is None:
            return self
        # Kept in the instance, which a descriptor without __set__ yields to from then on: each
        # request names several keys of its lock.
        named = keys.__dict__[self.name] = keys.base + self.suffix
        return named


@dataclasses.dataclass(frozen=True)
class LockKeys:
    """The keys and channels of one lock, named after what they hold."""

    path: str
    """What the lock protects, as messages name it (a cache file's normalized path)."""

    base: str
    """The prefix of every key and channel of this lock; it ends with a hash tag in braces."""

    writer = _Named(":writer", "String: the token of the exclusive holder, expiring with its lease.")
    readers = _Named(
        ":readers", "Sorted set: shared holders' tokens, scored by lease expiry (ms, server time)."
    )
    waiting_writers = _Named(
        ":waiting_writers", "Sorted set: tokens of writers waiting for the lock, scored by expiry (ms)."
    )
    holders = _Named(":holders", "Hash: token to a description of the holder (host, pid, task, since).")
    fence = _Named(":fence", "String: the last fencing token granted; kept the fencing memory after it.")
    released_channel = _Named(":released", "Pub/sub channel on which a release wakes the waiters.")
    revoke_channel = _Named(
        REVOKE_CHANNEL_SUFFIX, "Pub/sub channel on which a waiting writer asks for kept shared leases back."
    )

    def __post_init__(self) -> None:
        # Redis hashes the text between a key's first "{" and the first "}" after it, if any: the
        # base must hold that whole tag, or its keys and channels would land in different slots.
        opening = self.base.find("{")
        if opening < 0 or self.base.find("}", opening) <= opening + 1:
            raise ValueError(
                f"a lock's base must hold a Redis Cluster hash tag, as in prefix:{{tag}}: {self.base!r}"
            )

    @property
    def hash_tag(self) -> str:
        """The text in the base's braces: the digest of what the lock protects."""
        return self.base[self.base.rindex("{") + 1 : -1]

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
