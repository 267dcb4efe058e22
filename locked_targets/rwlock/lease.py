"""Leases of held locks, renewed for the whole process by one background thread.

A held lock is trusted only until its lease ends: ``confirmed_until`` moves forward
with each successful renewal, measured from when the renewal was *sent*, so the local
view never outlives the server's. A renewal that Redis refuses (the token is gone) or
that cannot reach Redis before the lease ends marks the lock lost; every operation
checks ``ensure_held()`` before it commits, and ``release()`` reports a lost lock.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import math
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import redis

from locked_targets.errors import LockLost
from locked_targets.process_state import ProcessLocal
from locked_targets.rwlock import scripts, telemetry
from locked_targets.rwlock.clock import SYSTEM_CLOCK, Clock
from locked_targets.rwlock.connection import RedisConnection
from locked_targets.rwlock.error_replies import count_failure
from locked_targets.rwlock.keys import LockKeys
from locked_targets.rwlock.releases import Handover, releaser_for
from locked_targets.rwlock.script_batch import ScriptBatch

logger = logging.getLogger(__name__)

# After a failed renewal, try again this soon (bounded by the renewal interval).
RETRY_AFTER_ERROR_SECONDS = 1.0
# A lease is trusted locally a little less long than Redis grants it: the server rounds
# its clock to the millisecond, and the two clocks may run at slightly different rates.
DRIFT_FACTOR = 0.01
DRIFT_MARGIN_SECONDS = 0.002


def trusted_until(sent_at: float, lease_seconds: float) -> float:
    """Until when a lease granted or renewed by a request sent at ``sent_at`` is trusted here."""
    return sent_at + lease_seconds * (1 - DRIFT_FACTOR) - DRIFT_MARGIN_SECONDS


@dataclasses.dataclass(frozen=True)
class LeaseTerms:
    """How long a holder may go unrenewed, how often it renews, and how long it retries a failing Redis."""

    lease_seconds: float
    renewal_interval_seconds: float
    redis_retry_deadline_seconds: float | None = None
    """How long a failing Redis is retried (``on_redis_error = wait``); None: fail at once."""
    fencing_memory_seconds: float = scripts.DEFAULT_FENCING_MEMORY_SECONDS
    """How long the fencing counter outlives the last exclusive grant (at least one lease)."""


class LockMode(enum.Enum):
    """Shared holders may overlap each other; an exclusive holder overlaps nobody."""

    SHARED = "read"
    EXCLUSIVE = "write"


class HeldLock:
    """One acquisition of a lock: its token, its lease, and whether it is still trusted."""

    def __init__(
        self,
        *,
        connection: RedisConnection,
        keys: LockKeys,
        terms: LeaseTerms,
        mode: LockMode,
        token: str,
        lease_started: float,
        fencing_token: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
        telemetry_labels: Mapping[str, str] = telemetry.NO_LABELS,
    ) -> None:
        self.connection = connection
        self.keys = keys
        self.terms = terms
        self.mode = mode
        self.token = token
        self.fencing_token = fencing_token
        """Grows with every exclusive grant of this lock; None for a shared hold."""
        self.telemetry_labels = telemetry_labels
        self._clock = clock
        self._held_since = lease_started
        self.confirmed_until = trusted_until(lease_started, terms.lease_seconds)
        # Counted from the lease's start, as the lease is: a grant read long after its request
        # was sent (the caller worked meanwhile) is not left unrenewed past its interval.
        self.next_renewal = lease_started + terms.renewal_interval_seconds
        self._lost: tuple[str, float] | None = None
        self._released = False

    @property
    def lost(self) -> bool:
        return self._lost is not None or self._clock.monotonic() >= self.confirmed_until

    def lease_left_seconds(self) -> float:
        """How long the lease is still trusted here (negative once it ended)."""
        return self.confirmed_until - self._clock.monotonic()

    def renew_now(self) -> bool:
        """Renew the lease from the calling thread (one round trip); True if Redis still knew this holder.

        Redis errors are raised, not judged: the caller decides what a failed renewal means.
        """
        sent_at = self._clock.monotonic()
        if self.extend() != 1:
            return False
        self.extension_answered(1, sent_at)
        return True

    def ensure_held(self) -> None:
        """Raise ``LockLost`` unless the lease is still confirmed."""
        if self._lost is None and self._clock.monotonic() >= self.confirmed_until:
            self.mark_lost("its lease ended before it could be renewed")
        if self._lost is not None:
            reason, wall_time = self._lost
            raise LockLost(
                lock_key=self.keys.base,
                path=self.keys.path,
                reason=reason,
                lost_at=_utc(wall_time),
            )

    def release(self) -> None:
        """Give the lock back, without waiting for Redis (``releases``); raise ``LockLost`` if it
        had already slipped away, as far as the renewals have told.

        A release Redis answers with "not held" (it restarted, or a failover forgot the lock)
        comes after the caller went on: it is logged, and changes nothing the caller did.
        """
        self.stop_renewing()
        self._hand_over(
            functools.partial(scripts.release, self.connection, self.keys, self.token),
            self._release_answered,
        )
        self.ensure_held()

    def give_up(self) -> None:
        """Release a lease that a step which took the lock exclusively may already have dropped
        (an upgrade): Redis's answer says nothing about a loss, so it is not judged."""
        self.stop_renewing()
        self._hand_over(functools.partial(scripts.release, self.connection, self.keys, self.token), _unjudged)

    def release_quietly(self) -> None:
        """Give the lock back where nothing done under it is left to judge: a lost lock is only logged."""
        try:
            self.release()
        except LockLost as error:
            logger.debug("giving back the lock of %s: %s", self.keys.path, error)

    def downgrade(self, description: str) -> HeldLock:
        """Turn this exclusive hold into a shared one (the same token), without waiting for Redis.

        The shared hold is trusted as long as the exclusive lease was, until Redis confirms
        the change, which renews the lease; if Redis says the token no longer held the lock,
        it is lost. Raises ``LockLost`` (releasing instead) if the lock had slipped away.
        """
        if self.lost:
            self.release()
        self.stop_renewing()
        shared = HeldLock(
            connection=self.connection,
            keys=self.keys,
            terms=self.terms,
            mode=LockMode.SHARED,
            token=self.token,
            lease_started=self._clock.monotonic(),
            clock=self._clock,
            telemetry_labels=self.telemetry_labels,
        )
        shared.confirmed_until = self.confirmed_until
        sent_no_earlier_than = self._clock.monotonic()
        self._hand_over(
            functools.partial(
                scripts.downgrade,
                self.connection,
                self.keys,
                self.token,
                self.terms.lease_seconds,
                description,
            ),
            functools.partial(shared._downgrade_answered, sent_no_earlier_than),
        )
        lease_keeper().keep(shared)
        return shared

    def stop_renewing(self) -> None:
        """Renew this lease no more: it is being released, or handed to a step that gives it up."""
        if not self._released:
            held_seconds = self._clock.monotonic() - self._held_since
            telemetry.record_hold(self.mode.value, self.telemetry_labels, held_seconds, lost=self.lost)
        self._released = True  # a renewal answered after this point says nothing about the lock
        lease_keeper().forget(self)

    def _hand_over(self, add: Callable[..., object], answered: Callable[[object], None]) -> None:
        releaser_for(self.connection).hand_over(
            Handover(
                connection=self.connection,
                lock=self.keys.base,
                add=lambda batch: add(batch=batch),
                answered=answered,
                # Redis ends the lease by itself no later than a lease after its last renewal.
                give_up_at=self._clock.monotonic() + self.terms.lease_seconds,
            )
        )

    def _release_answered(self, reply: object) -> None:
        if isinstance(reply, Exception):
            logger.warning(
                "could not release the lock of %s (its lease will end it): %s", self.keys.path, reply
            )
        elif reply != 1 and self._lost is None:
            self.mark_lost(
                "Redis no longer knew this holder at release: its lease had expired or Redis restarted"
            )

    def _downgrade_answered(self, sent_no_earlier_than: float, reply: object) -> None:
        if reply == 1 or isinstance(reply, Exception):
            self.extension_answered(reply, sent_no_earlier_than)
        else:
            self.mark_lost("Redis no longer knew this holder when its write lock became a read lock")

    def verify(self, why: str) -> None:
        """Ask Redis (one round trip) whether this holder still owns the lock; mark it lost if not."""
        with self.connection.errors_translated():
            owned = self.extend()
        if owned != 1:
            self.mark_lost(why)
        self.ensure_held()

    def mark_lost(self, reason: str) -> None:
        if self._lost is None:
            self._lost = (reason, self._clock.wall())
            telemetry.record_lost(self.mode.value, self.telemetry_labels)
            logger.warning(
                "lost the %s lock of %s (lock key %s) held by pid %d on host %s: %s",
                self.mode.value,
                self.keys.path,
                self.keys.base,
                os.getpid(),
                socket.gethostname(),
                reason,
                extra={"lock_path": self.keys.path, "lock_key": self.keys.base},
            )

    def extend(self, batch: ScriptBatch | None = None) -> Any:
        """Renew the lease (with ``batch``, only add the renewal to it): 1 while still owned."""
        return scripts.extend(self.connection, self.keys, self.token, self.terms.lease_seconds, batch)

    def extension_answered(self, reply: object, sent_at: float) -> None:
        if self._released:
            return
        if isinstance(reply, Exception):
            self.extension_failed(reply)
        elif reply == 1:
            self.confirmed_until = trusted_until(sent_at, self.terms.lease_seconds)
            self.next_renewal = sent_at + self.terms.renewal_interval_seconds
        else:
            self.mark_lost(
                "Redis no longer knew this holder at renewal: its lease had expired or Redis restarted"
            )

    def extension_failed(self, error: BaseException) -> None:
        if self._released:
            return
        now = self._clock.monotonic()
        if now >= self.confirmed_until:
            self.mark_lost(f"could not renew its lease before it ended: {error}")
        else:
            logger.warning("could not renew the lease of %s, retrying: %s", self.keys.path, error)
            self.next_renewal = now + min(RETRY_AFTER_ERROR_SECONDS, self.terms.renewal_interval_seconds)


def _unjudged(reply: object) -> None:
    """The answer to a release whose token may be gone for a good reason."""


def _utc(wall_time: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall_time))


class LeaseKeeper:
    """Renews every held lease of this process, from a single daemon thread (on the system clock)."""

    def __init__(self) -> None:
        self._held: dict[str, HeldLock] = {}
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wakes_at = 0.0

    def keep(self, held: HeldLock) -> None:
        with self._changed:
            self._held[held.token] = held
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._renew_forever, name="locked_targets-leases", daemon=True
                )
                self._thread.start()
            # Waking the thread costs more than the rest of an acquisition: only when it must
            # renew this lease before it planned to wake up.
            if held.next_renewal < self._wakes_at:
                self._changed.notify()

    def forget(self, held: HeldLock) -> None:
        with self._changed:
            self._held.pop(held.token, None)

    def _renew_forever(self) -> None:
        while True:
            due = self._wait_for_due_leases()
            by_connection: dict[RedisConnection, list[HeldLock]] = defaultdict(list)
            for held in due:
                by_connection[held.connection].append(held)
            for connection, group in by_connection.items():
                try:
                    _renew_together(connection, group)
                except Exception as error:
                    for held in group:
                        held.extension_failed(error)

    def _wait_for_due_leases(self) -> list[HeldLock]:
        with self._changed:
            while True:
                now = SYSTEM_CLOCK.monotonic()
                due = [held for held in self._held.values() if held.next_renewal <= now and not held.lost]
                if due:
                    return due
                upcoming = [held.next_renewal for held in self._held.values() if not held.lost]
                self._wakes_at = min(upcoming) if upcoming else math.inf
                self._changed.wait(timeout=self._wakes_at - now if upcoming else None)
                self._wakes_at = 0.0


def _renew_together(connection: RedisConnection, group: list[HeldLock]) -> None:
    """Extend a group of leases on one server in a single round trip."""
    sent_at = SYSTEM_CLOCK.monotonic()
    try:
        batch = ScriptBatch(connection.background)
        for held in group:
            held.extend(batch)
        replies = batch.send()
    except (redis.RedisError, OSError) as error:
        count_failure(error)
        for held in group:
            held.extension_failed(error)
        return
    for held, reply in zip(group, replies, strict=True):
        held.extension_answered(reply, sent_at)


# One renewal thread per process; a forked child starts its own (the parent's is not there).
_keeper: ProcessLocal[LeaseKeeper] = ProcessLocal(LeaseKeeper)


def lease_keeper() -> LeaseKeeper:
    """The process's lease keeper, started on first use."""
    return _keeper.get()
