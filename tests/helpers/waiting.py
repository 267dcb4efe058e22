"""Waiting, in a test, for what another process, thread or server brings about: for a bounded time."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(condition: Callable[[], object], what: str, seconds: float, pause: float = 0.05) -> None:
    """Return once ``condition()`` is true, asking every ``pause`` s; fail, naming ``what``, if it is
    still false after ``seconds`` s."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds:g} s for {what}"
        time.sleep(pause)
