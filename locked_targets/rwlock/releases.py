"""Releases (and downgrades) sent in the background, so the caller never waits for them.

Giving a lock back cannot change what the holder did under it: a commit was checked
against the lease before it published, and a read against the lease when it ended.
So the thread that held the lock only hands the release over and goes on. Each Redis
server has a queue of such requests, and a daemon thread that sends whatever is queued in
a single round trip once the oldest is due: 2 ms after it was handed over (a task's dumps
end about a millisecond apart, so its releases share round trips). Sooner, they ride along:
the next acquisitions this process sends to that server anyway (``send_along``) carry them
ahead of their own calls, in their round trip, which also puts a release before a new attempt
on its lock (on a cluster, only the requests for the locks of those calls ride along).

Waking the thread costs the caller more than the request, so while a revocation listener
(``shared_leases``) hears that server's waiters, a request is held back for 50 ms instead,
and mostly rides along: a waiter that a holder blocks says so on the lock's revoke channel,
and then the holder's process sends its queued requests for that lock within 2 ms, as it
does with those handed over later, for as long as the lease they end (``wanted``). So a
waiter gets the lock at most 2 ms and a round trip after the holder's end, or after its own
arrival if that came later; only if its message went unheard, 50 ms. With no listener (kept
shared leases off, or refused by the ACL), nothing is held back.

The queue is sent at once when this process waits for it (it exits, or gives its kept
leases back). A server that hangs delays only its own releases. A request
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

import collections
import contextlib
import dataclasses
import logging
import math
import multiprocessing.util
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

import redis

from locked_targets.errors import ConfigurationError
from locked_targets.process_state import Once, ProcessLocal, ProcessLocalMap
from locked_targets.rwlock.connection import RedisConnection
from locked_targets.rwlock.error_replies import count_failure, is_unavailable
from locked_targets.rwlock.script_batch import ScriptBatch

logger = logging.getLogger(__name__)

# How long a handed-over request waits for others to share its round trip.
_GATHER_SECONDS = 0.002
# How long it waits while a revocation listener hears waiters' requests for locks (``wanted``):
# long enough to ride along with the caller's next request to the server (``send_along``), mostly.
_HOLD_BACK_SECONDS = 0.05
# How many locks recently asked for by a waiter the releaser remembers (the oldest are forgotten).
_WANTED_REMEMBERED = 4096
# After a failed send, try the requests again this soon.
_RETRY_AFTER_SECONDS = 0.2
# How long a process's exit waits for its queued releases (Redis may be gone).
_EXIT_WAIT_SECONDS = 5.0
# How long an acquisition waits for this process's own release of the same lock, on its way.
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
        self._in_flight: collections.Counter[str] = collections.Counter()
        """The locks of the untried requests on their way (sent by the thread, or riding along in a
        caller's batch), counted: another request for one of them waits until they are answered,
        so that the requests for a lock reach Redis in the order they were handed over."""
        self._waited_for = 0
        """How many callers wait for the queue to be sent: then nothing waits to be gathered."""
        self._awaiting_answers = 0
        """How many callers wait only for the requests on their way (``send_along``)."""
        self._thread: threading.Thread | None = None
        self._wakes_at = 0.0
        """When the thread plans to wake (infinity: when woken); 0 while it is awake."""
        self._listeners = 0
        """How many revocation listeners hear this server's waiters ask for locks (``wanted``)."""
        self._wanted: collections.OrderedDict[str, float] = collections.OrderedDict()
        """When (monotonic) a waiter last asked for a lock, by the lock's base, the latest last."""

    def hand_over(self, request: Handover) -> None:
        with self._changed:
            now = time.monotonic()
            not_before = now + self._gather_seconds(request, now)
            self._queue.append(_Queued(request, not_before))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._send_forever, name="locked_targets-releases", daemon=True
                )
                self._thread.start()
            # Waking the thread costs the caller more than the request: only when it must send
            # sooner than it planned to wake (it takes everything untried with it then).
            if not_before < self._wakes_at:
                self._changed.notify_all()

    def _gather_seconds(self, request: Handover, now: float) -> float:
        """How long ``request`` may wait to be sent (called holding the condition): held back while
        waiters can ask for its lock and none has, within the lease it ends."""
        asked_at = self._wanted.get(request.lock)
        lease = request.give_up_at - now
        if self._listeners and (asked_at is None or now - asked_at > lease):
            return _HOLD_BACK_SECONDS
        return _GATHER_SECONDS

    def wanted(self, lock: str) -> None:
        """A waiter in some process asks for ``lock`` (heard by a revocation listener): send this
        process's queued requests for it soon, and those handed over later too."""
        with self._changed:
            now = time.monotonic()
            self._wanted[lock] = now
            self._wanted.move_to_end(lock)
            while len(self._wanted) > _WANTED_REMEMBERED:
                self._wanted.popitem(last=False)
            self._send_soon(lambda queued: queued.request.lock == lock, now)

    def listener_started(self) -> None:
        """A revocation listener of this server now hears its waiters: requests may be held back."""
        with self._changed:
            self._listeners += 1

    def listener_stopped(self) -> None:
        """A revocation listener stopped: with none left, a waiter's request may go unheard, so
        nothing is held back any more."""
        with self._changed:
            self._listeners -= 1
            if not self._listeners:
                self._send_soon(lambda queued: True, time.monotonic())

    def _send_soon(self, which: Callable[[_Queued], bool], now: float) -> None:
        """Send the untried queued requests ``which`` selects after a gathering pause at most
        (called holding the condition)."""
        soon = now + _GATHER_SECONDS
        sooner = False
        for queued in self._queue:
            if not queued.tried and which(queued) and queued.not_before > soon:
                queued.not_before = soon
                sooner = True
        if sooner and soon < self._wakes_at:
            self._changed.notify_all()

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        """A caller waits for the queue (called holding the condition): send it without gathering more."""
        self._waited_for += 1
        self._changed.notify_all()
        try:
            yield
        finally:
            self._waited_for -= 1

    def wait_until_sent(self, deadline: float) -> bool:
        """Wait until every request handed over so far was sent once (answered, or failed and
        retried in the background while its lease lasts); False if ``deadline`` passed first."""
        with self._changed, self._waiting():
            while self._in_flight or any(not queued.tried for queued in self._queue):
                left = deadline - time.monotonic()
                if left <= 0:
                    untried = sum(not queued.tried for queued in self._queue) + self._in_flight.total()
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
            retry = self._send(due)
            with self._changed:
                self._answered(due, retry)

    def _wait_for_due(self) -> list[_Queued]:
        """Take the requests to send now out of the queue, waiting for one to be due (called holding
        the condition): every untried one goes with the first due, or at once if a caller waits;
        not those for a lock with a request on its way."""
        while True:
            now = time.monotonic()
            sendable = self._sendable()
            due = any(queued.not_before <= now for queued in sendable)
            if due or (self._waited_for and any(not queued.tried for queued in sendable)):
                return self._take(
                    [queued for queued in sendable if queued.not_before <= now or not queued.tried]
                )
            later = min((queued.not_before for queued in sendable), default=None)
            self._wakes_at = math.inf if later is None else later
            self._changed.wait(timeout=None if later is None else later - now)
            self._wakes_at = 0.0

    def _sendable(self) -> list[_Queued]:
        """The queued requests whose lock has no request on its way (called holding the condition)."""
        return [queued for queued in self._queue if queued.request.lock not in self._in_flight]

    def _take(self, sent: list[_Queued]) -> list[_Queued]:
        """Take ``sent`` out of the queue, on its way (called holding the condition)."""
        taken = {id(queued) for queued in sent}
        self._queue = [queued for queued in self._queue if id(queued) not in taken]
        self._in_flight.update(queued.request.lock for queued in sent if not queued.tried)
        return sent

    def _answered(self, sent: list[_Queued], retry: list[_Queued]) -> None:
        """``sent`` is answered, ``retry`` to be tried again (called holding the condition)."""
        answered = [queued.request.lock for queued in sent if not queued.tried]
        self._in_flight.subtract(answered)
        self._in_flight = +self._in_flight  # drop the locks with nothing left on its way
        self._queue.extend(retry)
        # Wake whoever this concerns: a caller waiting for the queue, or the thread, for a retry or
        # a request that waited for these; not the thread otherwise (waking it costs the caller).
        if (
            retry
            or self._waited_for
            or self._awaiting_answers
            or any(queued.request.lock in answered for queued in self._queue)
        ):
            self._changed.notify_all()

    def send_along(self, batch: ScriptBatch, after: Collection[str] = ()) -> list[Any]:
        """Send ``batch``, which the caller sends to this server anyway, with every untried request
        queued for it ahead of the batch's own calls: they share its round trip instead of taking
        one of their own, and go before the caller's acquisitions of the same locks. Returns the
        replies to the batch's own calls. Those requests are answered, or, if the batch failed,
        queued to be tried again while their leases last.

        ``after``: the locks of the batch's own calls, which must find this process's past requests
        for them in Redis: one on its way is waited for (briefly) first; one queued rides along. On a
        cluster only those ride along: a batch goes node by node there, and each of them goes to the
        node its lock's own call goes to anyway, where a request for another lock could add a node,
        and a round trip, to the batch. Nor do others ride with a batch that carries the caller's
        work (``ScriptBatch.meanwhile``): they would be on their way, holding back this process's
        next requests for their locks, until that work is done."""
        cluster = self._connection.is_cluster
        riding: list[_Queued] = []
        replies: list[Any] = []
        failure: BaseException | None = None
        try:
            with self._changed:
                if self._in_flight:
                    self._wait_for_answers(after)
                # Only the requests for the batch's own locks wait on a batch that carries the
                # caller's work: until it is done, those riding would stay on their way.
                only_after = cluster or batch.meanwhile is not None
                riding = self._take(
                    [
                        queued
                        for queued in self._sendable()
                        if not queued.tried and (not only_after or queued.request.lock in after)
                    ]
                )
            if not riding:
                return batch.send()
            ahead = ScriptBatch(self._connection)
            for queued in riding:
                queued.request.add(ahead)
            batch.put_first(ahead)
            replies = batch.send()
        except BaseException as error:
            failure = error
            raise
        finally:
            # Whatever happened (an interrupt too), the riding requests are answered: by their
            # replies, or by the failure, and then tried again while their leases last.
            if failure is not None:
                shown = (
                    failure
                    if isinstance(failure, redis.RedisError | OSError)
                    else ConnectionError(repr(failure))
                )
                replies = [shown] * len(riding)
            self._answer_riding(riding, replies[: len(riding)])
        own = range(len(riding), len(replies))
        if any(index < len(riding) for index in batch.reloaded) and any(
            index not in batch.reloaded for index in own
        ):
            # The server lacked a riding request's script (it restarted) but not the batch's own:
            # they ran before the request was sent again, so they go again, after it. Every script
            # takes a call sent twice, as a retry whose reply was lost.
            batch.drop_first(len(riding))
            return batch.send()
        return replies[len(riding) :]

    def _wait_for_answers(self, locks: Collection[str]) -> None:
        """Wait (briefly) until no request for ``locks`` is on its way (called holding the condition)."""
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        self._awaiting_answers += 1
        try:
            while any(lock in self._in_flight for lock in locks) and time.monotonic() < deadline:
                self._changed.wait(timeout=deadline - time.monotonic())
        finally:
            self._awaiting_answers -= 1

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
        return self._answer(due, replies)

    def _answer(self, sent: list[_Queued], replies: list[object]) -> list[_Queued]:
        """Hand each reply to its request's callback; return the requests to try again later."""
        retry: list[_Queued] = []
        now = time.monotonic()
        for queued, reply in zip(sent, replies, strict=True):
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

    def _answer_riding(self, riding: list[_Queued], replies: list[object]) -> None:
        if not riding:
            return
        retry: list[_Queued] = []
        try:
            retry = self._answer(riding, replies)
        finally:  # no longer on their way, whatever a callback raised: their locks are free to send
            with self._changed:
                self._answered(riding, retry)

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


def wait_until_sent(
    timeout_seconds: float = _EXIT_WAIT_SECONDS, server: RedisConnection | None = None
) -> bool:
    """Wait until every release this process handed over so far (to ``server`` only, if given)
    was sent once; False on timeout."""
    deadline = time.monotonic() + timeout_seconds
    releasers = _releasers.values() if server is None else [releaser_for(server)]
    return all([releaser.wait_until_sent(deadline) for releaser in releasers])
