"""An append-only log that several processes share: one ``O_APPEND`` write a line, so lines never interleave.

The tests, the demo and the benchmarks have their applications note what they did in
such a log, and read it afterwards in the parent. Each line goes to the file with a single
``write`` on a descriptor opened with ``O_APPEND``: the kernel moves to the end of the file
and writes in one step, so on a local file the lines of concurrent processes stay whole
and in the order they were written. (A buffered ``open(path, "a")`` may split a line into
several writes.)
"""

from __future__ import annotations

import os

StrPath = str | os.PathLike[str]


def append_line(path: StrPath, line: str) -> None:
    """Append ``line`` and a newline to the log at ``path`` (created if absent) in one ``write``."""
    if "\n" in line:
        raise ValueError(f"a side log line holds no newline: {line!r}")
    data = f"{line}\n".encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(descriptor, data)
    finally:
        os.close(descriptor)
    if written != len(data):  # a second write could interleave with another process's line
        raise OSError(f"appended {written} of {len(data)} bytes to {os.fspath(path)}")


def read_lines(path: StrPath) -> list[str]:
    """Every line appended so far, in order and without its newline; none if nothing was appended yet."""
    try:
        with open(path, encoding="utf-8", newline="\n") as log:  # lines end at "\n" only
            return [line.removesuffix("\n") for line in log]
    except FileNotFoundError:
        return []
