"""What a lock does when Redis fails: fail closed at once, or retry with capped backoff to a deadline.

``on_redis_error = fail`` (the default) raises ``BackendUnavailable`` on the first error.
``on_redis_error = wait`` retries the acquisition or release, doubling the pause from
0.1 s up to 5 s and logging each retry, until ``redis_retry_deadline_seconds`` have
passed. Nothing is ever read or written unlocked meanwhile, and a lock held when Redis
restarted is never re-assumed: its renewal finds it gone and it is reported lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from locked_targets.errors import BackendUnavailable

logger = logging.getLogger("locked_targets")

_FIRST_PAUSE_SECONDS = 0.1
_LONGEST_PAUSE_SECONDS = 5.0

_Result = TypeVar("_Result")


def with_redis_retries(call: Callable[[], _Result], *, what: str, deadline_seconds: float | None) -> _Result:
    """``call()``, retried on ``BackendUnavailable`` until ``deadline_seconds`` (None: no retry)."""
    if deadline_seconds is None:
        return call()
    deadline = time.monotonic() + deadline_seconds
    pause = _FIRST_PAUSE_SECONDS
    retries = 0
    while True:
        try:
            return call()
        except BackendUnavailable as error:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            retries += 1
            logger.warning("%s: %s; retry %d in %.1f s (on_redis_error = wait)", what, error, retries, pause)
            time.sleep(min(pause, left))
            pause = min(pause * 2, _LONGEST_PAUSE_SECONDS)
