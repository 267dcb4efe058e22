"""Write-once publication, shared by every storage kind: a dump's file appears whole, and never over another.

A dump writes to a local temporary file. When it is closed, the storage's ``Publish``
function checks the dump's guard (``before_commit``) and then makes the file visible under
its final name create-if-absent, raising ``CommitRefused`` (and publishing nothing) if an
object of that name exists. Whatever happens, the temporary file is gone afterwards.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable

from luigi.target import AtomicLocalFile

Publish = Callable[[str, str], None]
"""Publishes a local file (first argument) under a final path (second), create-if-absent.

Calls ``before_commit()`` first and raises ``CommitRefused`` if the path is taken.
"""


class WriteOnceFile(AtomicLocalFile):
    """A file being written for ``path``: published by ``publish`` when closed, never if the writer raised."""

    def __init__(self, path: str, publish: Publish, directory: str | None = None) -> None:
        """``directory`` holds the temporary file: the final file's own one for a local publish by link."""
        self._publish = publish
        self._directory = directory or tempfile.gettempdir()
        super().__init__(path)  # type: ignore[no-untyped-call]

    def generate_tmp_path(self, path: str) -> str:
        # luigi draws the name from ``random``, which gokart seeds per task: two processes of
        # one task would draw the same name. uuid4 comes from os.urandom instead.
        return os.path.join(self._directory, f".locked_targets-{uuid.uuid4().hex}.tmp")

    def move_to_final_destination(self) -> None:
        try:
            self._publish(self.tmp_path, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.tmp_path)
