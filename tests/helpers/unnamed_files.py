"""Whether local dumps write unnamed files (``O_TMPFILE``) in a directory: they stage nothing there.

Where the kernel or the file system cannot (overlayfs before Linux 6.6, 9p, NFS), a local
dump quietly stages a named file instead, and a test of unnamed files has nothing to test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import locked_targets.storage.local


def skip_unless_unnamed_files_in(directory: Path) -> None:
    """Skip the test, saying why, unless local dumps in ``directory`` write unnamed files."""
    if not locked_targets.storage.local._MAKES_UNNAMED_FILES:
        pytest.skip("this platform makes no unnamed files (no O_TMPFILE, or no /proc/self/fd)")
    try:
        os.close(os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600))
    except OSError as error:
        pytest.skip(f"the file system of {directory} makes no unnamed files (O_TMPFILE: {error.strerror})")


def unnamed_files_open(pid: int, directory: Path) -> list[str]:
    """The unnamed files in ``directory`` that process ``pid`` has open, as the kernel names them
    (``<directory>/#<inode> (deleted)``)."""
    return [name for _, name in _unnamed_descriptors(pid, directory)]


def unnamed_file_sizes(pid: int, directory: Path) -> list[int]:
    """How many bytes each unnamed file in ``directory`` that process ``pid`` has open holds."""
    sizes = []
    for descriptor, _ in _unnamed_descriptors(pid, directory):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            sizes.append(os.stat(descriptor).st_size)
    return sizes


def _unnamed_descriptors(pid: int, directory: Path) -> Iterator[tuple[str, str]]:
    """Process ``pid``'s descriptors of unnamed files in ``directory``: each one's /proc path, and
    the name the kernel gives its file."""
    within = f"{os.path.realpath(directory)}/#"
    for descriptor in os.listdir(f"/proc/{pid}/fd"):
        try:
            name = os.readlink(f"/proc/{pid}/fd/{descriptor}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if name.startswith(within) and name.endswith(" (deleted)"):
            yield f"/proc/{pid}/fd/{descriptor}", name
