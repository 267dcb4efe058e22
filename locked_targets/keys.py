"""Lock keys: one per cache file, from its storage kind and full normalized path.

A key is ``<key_prefix><storage key_prefix><namespace>:{<digest>}``: the digest is a
SHA-256 of the storage kind and the normalized path, so distinct files never share a
lock (gokart keyed by basename, so ``s3://a/x_1.pkl`` and ``gs://b/x_1.pkl`` collided),
and any path (braces, newlines, very long names) gives a short, safe key. Every Redis key
of one lock extends that key, and the digest in braces is a Redis Cluster hash tag, so
all of them live in one slot and one Lua script can touch them together.
"""

from __future__ import annotations

import dataclasses
import hashlib

from locked_targets.settings import Settings
from locked_targets.storage import storage_kind_for

TARGET_NAMESPACE = "target"
RUN_NAMESPACE = "run"
REVOKE_CHANNEL_SUFFIX = ":revoke"
# Matches every lock's revoke channel: the hash tag's closing brace, then the suffix.
REVOKE_CHANNEL_PATTERN = "*}" + REVOKE_CHANNEL_SUFFIX


@dataclasses.dataclass(frozen=True)
class LockKeys:
    """The Redis keys and channel that together make one lock."""

    path: str
    base: str
    namespace: str = TARGET_NAMESPACE

    @property
    def writer(self) -> str:
        """String: the token of the exclusive holder, expiring with its lease."""
        return f"{self.base}:writer"

    @property
    def readers(self) -> str:
        """Sorted set: shared holders' tokens, scored by lease expiry (ms)."""
        return f"{self.base}:readers"

    @property
    def waiting_writers(self) -> str:
        """Sorted set: tokens of writers waiting for the lock, scored by expiry (ms)."""
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
    def all_keys(self) -> tuple[str, str, str, str]:
        return (self.writer, self.readers, self.waiting_writers, self.holders)


def lock_key_for(path: str, settings: Settings, namespace: str = TARGET_NAMESPACE) -> LockKeys:
    """The lock of the cache file at ``path``, in ``namespace`` (targets, or task runs)."""
    kind = storage_kind_for(path)
    identity = f"{kind.name}\0{kind.identity(path)}"
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    base = f"{settings.key_prefix}{kind.key_prefix(settings)}{namespace}:{{{digest}}}"
    return LockKeys(path=kind.identity(path), base=base, namespace=namespace)
