"""What a lock does when Redis fails: fail closed at once, or retry with capped backoff to a deadline.

Without a deadline (``on_redis_error = fail``) the first ``BackendUnavailable`` is raised.
With one (``on_redis_error = wait``), the acquisition or release is retried, doubling the
pause from 0.1 s up to 5 s and logging each retry, until the deadline has passed.
Nothing is ever read or written unlocked meanwhile, and a lock held when Redis
restarted is never re-assumed: its renewal finds it gone and it is reported lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from locked_targets.errors import BackendUnavailable
from locked_targets.rwlock.clock import SYSTEM_CLOCK, Clock

logger = logging.getLogger(__name__)

FIRST_PAUSE_SECONDS = 0.1
LONGEST_PAUSE_SECONDS = 5.0

_Result = TypeVar("_Result")


def with_redis_retries(
    call: Callable[[], _Result],
    *,
    what: str,
    redis_retry_deadline_seconds: float | None,
    clock: Clock = SYSTEM_CLOCK,
) -> _Result:
    """``call()``, retried on ``BackendUnavailable`` for ``redis_retry_deadline_seconds`` (None: no retry)."""
    if redis_retry_deadline_seconds is None:
        return call()
    deadline = clock.monotonic() + redis_retry_deadline_seconds
    pause = FIRST_PAUSE_SECONDS
    retries = 0
    while True:
        try:
            return call()
        except BackendUnavailable as error:
            left = deadline - clock.monotonic()
            if left <= 0:
                raise
            retries += 1
            logger.warning("%s: %s; retry %d in %.1f s (on_redis_error = wait)", what, error, retries, pause)
            clock.sleep(min(pause, left))
            pause = min(pause * 2, LONGEST_PAUSE_SECONDS)
