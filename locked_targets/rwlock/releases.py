"""Releases (and downgrades) sent by background threads, so the caller never waits for them.

Giving a lock back cannot change what the holder did under it: a commit was checked
against the lease before it published, and a read against the lease when it ended.
So the thread that held the lock only hands the release over and goes on. Each Redis
server has a daemon thread of its own that sends whatever is queued for it in a single
round trip, 2 ms after the oldest was handed over (a waiter gets the lock at most 2 ms and a
round trip after the holder's end): a task's dumps end about a millisecond apart, so its releases
share round trips. It sends at once when this process waits for them (it acquires one of
those locks again, or exits). A server that hangs delays only its own releases. A request
that fails, or that the server answers "not now" (``BUSY``, ``LOADING``, ``READONLY``...), is
tried again until the lease it would end has ended anyway. One the server's ACL refuses
(Redis 7 gives a new user no pub/sub channel, so a release's wake-up is refused) is not:
that does not heal by itself, so it is reported once per process, as an ERROR naming the
rules to add, instead of to each release's holder. At exit, also of a
multiprocessing child (which skips ``atexit``), the process waits, for a bounded time,
until every queue was sent once; a process killed before that leaves its locks to expire
with their leases, as any crashed holder does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing.util
import threading
import time
from collections.abc import Callable, Collection, Iterator

import redis

from locked_targets.errors import ConfigurationError
from locked_targets.process_state import Once, ProcessLocal, ProcessLocalMap
from locked_targets.rwlock.connection import RedisConnection
from locked_targets.rwlock.error_replies import count_failure, is_unavailable
from locked_targets.rwlock.script_batch import ScriptBatch

logger = logging.getLogger(__name__)

# How long a handed-over request waits for others to share its round trip.
_GATHER_SECONDS = 0.002
# After a failed send, try the requests again this soon.
_RETRY_AFTER_SECONDS = 0.2
# How long a process's exit waits for its queued releases (Redis may be gone).
_EXIT_WAIT_SECONDS = 5.0
# How long an acquisition waits for this process's own unsent release of the same lock.
_LOCK_WAIT_SECONDS = 1.0
# Runs after the kept shared leases and the locks taken ahead are handed back at exit
# (their finalizers have priority 10).
_EXIT_PRIORITY = 5
# The users (as redis_url shows them) whose releases the server's ACL refused, reported once.
_refusals_reported = Once()


@dataclasses.dataclass(frozen=True)
class Handover:
    """One request to send later: how to add it to a batch, and who hears its reply."""

    connection: RedisConnection
    lock: str
    """The base of the lock it releases (``LockKeys.base``)."""
    add: Callable[[ScriptBatch], object]
    answered: Callable[[object], None]
    """Called with the script's reply, or the exception it got; not for an ACL refusal, which the
    releaser reports itself (once per process: it refuses every release alike)."""
    give_up_at: float
    """When (monotonic) the lease this request ends would have ended by itself."""


@dataclasses.dataclass
class _Queued:
    request: Handover
    not_before: float
    """When (monotonic) to send it at the latest: soon after it was handed over, or after a
    failed send, a little later. Everything untried goes with the first that is due."""
    tried: bool = False


class Releaser:
    """The queue of handed-over requests for one server, and the thread that sends them."""

    def __init__(self, connection: RedisConnection) -> None:
        self._connection = connection
        self._queue: list[_Queued] = []
        self._changed = threading.Condition()
        self._untried_in_flight = 0
        self._in_flight_locks: set[str] = set()
        self._untried_queued = 0
        """How many requests in the queue were never tried: all go with the next round trip."""
        self._waited_for = 0
        """How many callers wait for the queue to be sent: then nothing waits to be gathered."""
        self._thread: threading.Thread | None = None

    def hand_over(self, request: Handover) -> None:
        with self._changed:
            # The thread is woken only for the first untried request: it sleeps until that one
            # is due, and takes those handed over meanwhile with it.
            wake = self._untried_queued == 0
            self._untried_queued += 1
            self._queue.append(_Queued(request, not_before=time.monotonic() + _GATHER_SECONDS))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._send_forever, name="locked_targets-releases", daemon=True
                )
                self._thread.start()
            if wake:
                self._changed.notify_all()

    def wait_for_locks(self, locks: Collection[str], timeout_seconds: float = _LOCK_WAIT_SECONDS) -> None:
        """Wait (briefly, for all of them together) until no request for ``locks`` handed over by
        this process is still unsent: its next acquisition of one must not find its own past hold."""
        deadline = time.monotonic() + timeout_seconds
        with self._changed:
            if self._unsent_locks.isdisjoint(locks):
                return
            with self._waiting():
                while not self._unsent_locks.isdisjoint(locks) and time.monotonic() < deadline:
                    self._changed.wait(timeout=deadline - time.monotonic())

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        """A caller waits for the queue (called holding the condition): send it without gathering more."""
        self._waited_for += 1
        self._changed.notify_all()
        try:
            yield
        finally:
            self._waited_for -= 1

    @property
    def _unsent_locks(self) -> set[str]:
        """The locks with a request never tried yet (called holding the condition)."""
        return self._in_flight_locks | {queued.request.lock for queued in self._queue if not queued.tried}

    def wait_until_sent(self, deadline: float) -> bool:
        """Wait until every request handed over so far was sent once (answered, or failed and
        retried in the background while its lease lasts); False if ``deadline`` passed first."""
        with self._changed, self._waiting():
            while self._untried_in_flight or any(not queued.tried for queued in self._queue):
                left = deadline - time.monotonic()
                if left <= 0:
                    untried = sum(not queued.tried for queued in self._queue) + self._untried_in_flight
                    logger.warning(
                        "%d lock releases to %s are still unsent: their leases will end them",
                        untried,
                        self._connection.address,
                    )
                    return False
                self._changed.wait(timeout=left)
        return True

    def _send_forever(self) -> None:
        while True:
            with self._changed:
                due = self._wait_for_due()
                self._untried_in_flight = sum(not queued.tried for queued in due)
                self._in_flight_locks = {queued.request.lock for queued in due if not queued.tried}
            retry = self._send(due)
            with self._changed:
                self._queue.extend(retry)
                self._untried_in_flight = 0
                self._in_flight_locks = set()
                self._changed.notify_all()

    def _wait_for_due(self) -> list[_Queued]:
        """Take the requests to send now out of the queue, waiting for one to be due (called holding
        the condition): every untried one goes with the first due, or at once if a caller waits."""
        while True:
            now = time.monotonic()
            due = any(queued.not_before <= now for queued in self._queue)
            if due or (self._waited_for and self._untried_queued):
                self._untried_queued = 0  # every untried request goes now
                sent: list[_Queued] = []
                kept: list[_Queued] = []
                for queued in self._queue:
                    (sent if queued.not_before <= now or not queued.tried else kept).append(queued)
                self._queue = kept
                return sent
            later = min((queued.not_before for queued in self._queue), default=None)
            self._changed.wait(timeout=None if later is None else later - now)

    def _send(self, due: list[_Queued]) -> list[_Queued]:
        """Send ``due`` in one batch; return the requests to try again later."""
        batch = ScriptBatch(self._connection.background)
        for queued in due:
            queued.request.add(batch)
        try:
            replies: list[object] = batch.send()
        except (redis.RedisError, OSError) as error:
            count_failure(error)
            logger.debug(
                "could not send %d lock releases to %s: %s", len(due), self._connection.address, error
            )
            replies = [error] * len(due)
        except Exception as error:  # anything else: this server's releases must not stop for good
            logger.exception("sending %d lock releases to %s failed", len(due), self._connection.address)
            replies = [ConnectionError(str(error))] * len(due)
        retry: list[_Queued] = []
        now = time.monotonic()
        for queued, reply in zip(due, replies, strict=True):
            if isinstance(reply, Exception) and is_unavailable(reply) and now < queued.request.give_up_at:
                retry.append(dataclasses.replace(queued, not_before=now + _RETRY_AFTER_SECONDS, tried=True))
                continue
            refusal = self._connection.refusal_of(reply)
            if refusal is not None:
                self._report_refusal(refusal)
                continue
            try:
                queued.request.answered(reply)
            except Exception:  # a callback's bug must not stop this server's releases for good
                logger.exception("answering a lock release sent to %s failed", self._connection.address)
        return retry

    def _report_refusal(self, refusal: ConfigurationError) -> None:
        log = logger.error if _refusals_reported.first_time(self._connection.shown_url) else logger.debug
        log(
            "Redis at %s refuses the lock releases of this process (said once): a release whose wake-up "
            "is refused has given its lock back but woken no waiter, one refused outright leaves its "
            "lock held until its lease ends. %s",
            self._connection.address,
            refusal,
        )


# One sending thread per server; a forked child starts its own and never sends the parent's.
_releasers: ProcessLocalMap[RedisConnection, Releaser] = ProcessLocalMap()
_exit_wait_registered = ProcessLocal(
    lambda: multiprocessing.util.Finalize(None, wait_until_sent, exitpriority=_EXIT_PRIORITY)
)


def releaser_for(connection: RedisConnection) -> Releaser:
    """The releaser of ``connection``'s server, started on first use."""
    _exit_wait_registered.get()
    return _releasers.get(connection, lambda: Releaser(connection))


def wait_until_sent(timeout_seconds: float = _EXIT_WAIT_SECONDS) -> bool:
    """Wait until every release this process handed over so far was sent once; False on timeout."""
    deadline = time.monotonic() + timeout_seconds
    return all([releaser.wait_until_sent(deadline) for releaser in _releasers.values()])
