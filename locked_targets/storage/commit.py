"""The commit of a dump: the moment a finished object becomes visible under the target's name.

Storages publish create-if-absent (S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``,
a local hard link that refuses to replace) and, just before, ask the dump's guard whether
its locks still hold. So a holder that lost its lease without noticing can never replace
another holder's object: its commit is refused (``errors.CommitRefused``), and ``LockedTarget``
then tells a stale holder (``LockLost``) from a current one (the object is already there).
The guard also carries the write lock's fencing token, which storages record in the
object's metadata.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

FENCING_TOKEN_METADATA_KEY = "locked-targets-fencing-token"


@dataclasses.dataclass(frozen=True)
class CommitGuard:
    """What a dump in progress must satisfy when it publishes."""

    check: Callable[[], None]
    """Raises (``LockLost``) if the locks that protect the dump no longer hold."""

    fencing_token: int | None
    """The write lock's fencing token: grows with every acquisition of that lock."""
    staging_name: str | None = None
    """The digest of the locked path's identity, which names the dump's staging directory."""


_guard: ContextVar[CommitGuard | None] = ContextVar("locked_targets_commit_guard", default=None)


@contextmanager
def guarded_by(guard: CommitGuard) -> Iterator[None]:
    """Make ``guard`` the one that commits inside the block check."""
    token = _guard.set(guard)
    try:
        yield
    finally:
        _guard.reset(token)


def before_commit() -> None:
    """Called by a storage right before it publishes: raises if the dump's locks are gone."""
    guard = _guard.get()
    if guard is not None:
        guard.check()


def current_fencing_token() -> int | None:
    """The fencing token of the write lock held by the dump in progress (None outside a locked dump).

    A custom ``FileProcessor`` can record it, or send it to a store of its own that
    refuses writers with a smaller token.
    """
    guard = _guard.get()
    return guard.fencing_token if guard is not None else None


def current_staging_name() -> str | None:
    """What names the staging directory of the dump in progress (None outside a locked dump)."""
    guard = _guard.get()
    return guard.staging_name if guard is not None else None


def holds_exclusive_lock() -> bool:
    """Whether the dump in progress holds its target's exclusive lock: only such a dump has a fencing token.

    A dump of a ``LockedTarget`` without Redis has a guard too, but no lock and no token.
    """
    return current_fencing_token() is not None


def commit_metadata() -> dict[str, str]:
    """Object metadata a storage records with the commit: the fencing token, when locked."""
    token = current_fencing_token()
    return {} if token is None else {FENCING_TOKEN_METADATA_KEY: str(token)}
