"""Locked targets built as the tests need them."""

from __future__ import annotations

from locked_targets.factories import make_target
from locked_targets.settings import Settings
from locked_targets.target import LockedTarget


def locked_target(path: str, settings: Settings) -> LockedTarget:
    """A locked single-file target at ``path`` (format from its extension) using ``settings``."""
    return make_target(path, settings=settings)
