"""Write-once publication, shared by every storage kind: a dump's file appears whole, and never over another.

A dump writes to a local temporary file in its staging area (see ``staging``); a local
dump, where the kernel can, writes an unnamed file instead (``local.UnnamedWriteOnceFile``,
which shares only ``PublishedUnlessRaised``). When the file is closed, the storage's
``Publish`` function checks the dump's guard (``before_commit``) and then makes the file
visible under its final name create-if-absent, raising ``CommitRefused`` (and publishing
nothing) if an object of that name exists. Whatever happens, and also when the writer
raises, the temporary file is gone afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from types import TracebackType

from luigi.target import AtomicLocalFile

from locked_targets.storage.base import StorageKind
from locked_targets.storage.staging import open_staging_area

Publish = Callable[[str, str], None]
"""Publishes a local file (first argument) under a final path (second), create-if-absent.

Calls ``before_commit()`` first and raises ``CommitRefused`` if the path is taken.
"""


class PublishedUnlessRaised(io.BufferedWriter):
    """A file being written whose ``with`` block publishes it (``close``) only if the block ended normally."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()

    def abandon(self) -> None:
        """Let go of the file now, under the dump's lock: it is never published after this."""
        raise NotImplementedError


class WriteOnceFile(PublishedUnlessRaised, AtomicLocalFile):
    """A file being written for ``path``: published by ``publish`` when closed, never if the writer raised."""

    def __init__(self, path: str, publish: Publish, kind: StorageKind, directory: str | None = None) -> None:
        """``directory`` holds the staging area: the final file's own one for a local publish by link."""
        self._publish = publish
        self._staging = open_staging_area(directory or tempfile.gettempdir(), path, kind, "publish")
        try:
            super().__init__(path)  # type: ignore[no-untyped-call]
        except BaseException:
            self._staging.close()
            raise

    def generate_tmp_path(self, path: str) -> str:
        # luigi draws the name from ``random``, which gokart seeds per task: two processes of
        # one task would draw the same name. The staging area's names come from os.urandom.
        return self._staging.new_path(".tmp")

    def move_to_final_destination(self) -> None:
        try:
            self._publish(self.tmp_path, self.path)
        finally:
            self._discard()

    def abandon(self) -> None:
        self.raw.close()  # before removing: NFS keeps a removed file that is still open
        self._discard()

    def _discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.tmp_path)
        self._staging.close()
