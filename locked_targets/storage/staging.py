"""Where a dump stages its files before the commit, and how the next dump clears what a dead writer staged.

Uploads and model archives stage here; a local single-file dump only where the kernel makes
no unnamed files (see ``local.UnnamedWriteOnceFile``, which stages nothing).

A dump that holds its target's exclusive lock stages in a directory of that lock's own
(the targets that share a lock, gokart's log files of a task, share it),
``.locked_targets-<digest>.<purpose>`` (the digest of its lock key), beside the final file or
in a temporary directory. Under that lock no live holder can be using the directory, so if
it exists, a writer that died there (or was paused past its lease, so that its commit must
fail) left it: the dump removes it and makes it afresh. One ``mkdir`` tells, so nothing is
listed but that one directory.

Inside it every writer names its files randomly. A stale writer therefore never finds its
file's name taken by the live holder's: it cannot publish or upload the live holder's
half-written file, and finds its own gone (``refused_if_cleared``). A dump without the
lock (no Redis) stages under random names directly in the parent: two unlocked writers of
one target would share the directory, and each could remove the other's files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Literal

from locked_targets.errors import CommitRefused
from locked_targets.storage.base import StorageKind
from locked_targets.storage.commit import before_commit, current_staging_name, holds_exclusive_lock

STAGING_PREFIX = ".locked_targets-"

Purpose = Literal["publish", "model"]
"""What a dump stages: files to publish, or a model's working files (one dump may need both)."""


@dataclasses.dataclass(frozen=True)
class StagingArea:
    """The directory where one dump stages its files."""

    directory: str
    owned: bool
    """True: the target's own staging directory, made for this dump; False: a shared parent."""

    def new_path(self, suffix: str = "") -> str:
        """A path in the area that no other writer uses."""
        return os.path.join(self.directory, f"{STAGING_PREFIX}{uuid.uuid4().hex}{suffix}")

    def close(self) -> None:
        """Remove the target's own directory once it is empty (the caller removed its files)."""
        if self.owned:
            with contextlib.suppress(OSError):  # gone, or a live holder's files are in it
                os.rmdir(self.directory)


def open_staging_area(parent: str, target_path: str, kind: StorageKind, purpose: Purpose) -> StagingArea:
    """The area in ``parent`` where the dump in progress stages files for ``target_path``."""
    if not holds_exclusive_lock():
        return StagingArea(parent, owned=False)
    # The dump's lock already names the path's identity: computing it again costs a real path.
    name = current_staging_name() or kind.identify(target_path).digest
    directory = os.path.join(parent, f"{STAGING_PREFIX}{name}.{purpose}")
    try:
        os.mkdir(directory)
    except FileExistsError:
        before_commit()  # removing is as final as publishing: only while the locks hold
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)  # what could not be removed stays; names never clash
    return StagingArea(directory, owned=True)


@contextlib.contextmanager
def staging_area(parent: str, target_path: str, kind: StorageKind, purpose: Purpose) -> Iterator[StagingArea]:
    """``open_staging_area``, closed at the end of the block."""
    area = open_staging_area(parent, target_path, kind, purpose)
    try:
        yield area
    finally:
        area.close()


@contextlib.contextmanager
def refused_if_cleared(destination: str, exists: Callable[[str], bool]) -> Iterator[None]:
    """A publish whose staged file is gone: its locks asked again, then ``CommitRefused`` if
    ``destination`` exists now.

    Only a later holder of the lock clears a staging directory, so a writer that finds its
    file gone is stale: its guard says so (``LockLost``), also when that holder writes another
    of the files that share the lock, and so the staging directory. Once that holder has
    published, its commit is refused like any stale commit. Otherwise the error stands.
    """
    try:
        yield
    except FileNotFoundError as error:
        before_commit()
        if exists(destination):
            raise CommitRefused(destination) from error
        raise
