"""Locked targets built as the tests need them."""

from __future__ import annotations

from typing import Any

from gokart.file_processor import FileProcessor, make_file_processor

from locked_targets.factories import make_target
from locked_targets.settings import Settings
from locked_targets.target import LockedTarget


def locked_target(path: str, settings: Settings) -> LockedTarget:
    """A locked single-file target at ``path`` (format from its extension) using ``settings``."""
    return make_target(path, settings=settings)


class ThroughAnother(FileProcessor):
    """A processor of the test's own, which loads and dumps through ``inner``: not one of gokart's,
    so a dump writes under its lock, after its existence check (gokart's own write ahead of it)."""

    def __init__(self, inner: FileProcessor) -> None:
        self._inner = inner

    def format(self) -> Any:
        return self._inner.format()

    def load(self, file: Any) -> Any:
        return self._inner.load(file)

    def dump(self, obj: Any, file: Any) -> None:
        self._inner.dump(obj, file)


def written_under_the_lock(path: str, settings: Settings) -> LockedTarget:
    """``locked_target``, whose dumps serialize under the lock (``ThroughAnother``)."""
    return make_target(path, processor=ThroughAnother(make_file_processor(path)), settings=settings)
