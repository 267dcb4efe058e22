"""gokart's own targets wrapped in ``LockedTarget``, dumped from another OS process (spawned)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gokart.target
from gokart.file_processor import FileProcessor, make_file_processor

from helpers.targets import ThroughAnother
from locked_targets import LockedTarget, Settings

SIGNAL_TIMEOUT_SECONDS = 60.0


def wait_for_file(path: str) -> None:
    """Return once ``path`` exists: another process's signal."""
    deadline = time.monotonic() + SIGNAL_TIMEOUT_SECONDS
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no signal at {path} within {SIGNAL_TIMEOUT_SECONDS:.0f} s")
        time.sleep(0.05)


class PausesBeforePublishing(ThroughAnother):
    """Writes through another processor, says so, and waits for a signal: the file is published after."""

    def __init__(self, inner: FileProcessor, paused: str, resume: str) -> None:
        super().__init__(inner)
        self._paused = paused
        self._resume = resume

    def dump(self, obj: Any, file: Any) -> None:
        super().dump(obj, file)
        Path(self._paused).touch()
        wait_for_file(self._resume)


def wrapped_gokart_target(
    path: str, settings: Settings, processor: FileProcessor | None = None
) -> LockedTarget:
    """``LockedTarget`` around the target ``gokart.target.make_target`` builds for ``path``."""
    return LockedTarget(gokart.target.make_target(path, processor=processor), settings=settings)


def dump_pausing_before_publishing(
    path: str, settings: Settings, value: str, paused: str, resume: str
) -> None:
    """Dump ``value`` through a wrapped gokart target; touch ``paused``, await ``resume``, publish."""
    processor = PausesBeforePublishing(make_file_processor(path), paused, resume)
    wrapped_gokart_target(path, settings, processor).dump(value)
