"""Whether local dumps write unnamed files (``O_TMPFILE``) in a directory: they stage nothing there.

Where the kernel or the file system cannot (overlayfs before Linux 6.6, 9p, NFS), a local
dump quietly stages a named file instead, and a test of unnamed files has nothing to test.
"""

from __future__ import annotations

import os
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
    named = []
    for descriptor in os.listdir(f"/proc/{pid}/fd"):
        try:
            name = os.readlink(f"/proc/{pid}/fd/{descriptor}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if _unnamed_in(directory, name):
            named.append(name)
    return named


def unnamed_file_sizes(pid: int, directory: Path) -> list[int]:
    """How many bytes each unnamed file in ``directory`` that process ``pid`` has open holds."""
    sizes = []
    for descriptor in os.listdir(f"/proc/{pid}/fd"):
        try:
            name = os.readlink(f"/proc/{pid}/fd/{descriptor}")
            if _unnamed_in(directory, name):
                sizes.append(os.stat(f"/proc/{pid}/fd/{descriptor}").st_size)
        except FileNotFoundError:  # closed meanwhile
            continue
    return sizes


def _unnamed_in(directory: Path, name: str) -> bool:
    """Whether ``name``, as the kernel names an open file, is an unnamed file in ``directory``."""
    return name.startswith(f"{os.path.realpath(directory)}/#") and name.endswith(" (deleted)")
