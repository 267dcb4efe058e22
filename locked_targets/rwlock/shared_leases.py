"""Shared leases a process keeps between reads, and gives back as soon as a writer asks.

Once a process holds the shared lock of a target, further reads of it in that process
need no Redis round trip: the shared lease stays registered in Redis, renewed like any
other, and is lent to each local read. A writer that finds readers in its way publishes
on the lock's revoke channel; this process's listener then stops lending that lease and
releases it as soon as the local reads in progress end. Leases unused for
``shared_lease_idle_seconds`` are released too, and every kept lease is released when the process
exits (normally, or as a multiprocessing child).

Safety never depends on the listener: a kept lease is a real reader registration, so no
writer can get in while a local read uses it. The listener only bounds how long a
writer waits. A lease is kept only if the listener was subscribed before the lease was
acquired, so no revocation can have been published unseen; a listener that loses its
connection gives back every kept lease before it listens again. A listener the server's ACL
refuses (a user without ``&*}:revoke``, as Redis 7 creates users) stops for good, since that
does not heal by itself: the process then keeps no lease, and says so once, with the rule to add.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from locked_targets.errors import ConfigurationError
from locked_targets.process_state import Once
from locked_targets.rwlock import telemetry
from locked_targets.rwlock.connection import RedisConnection
from locked_targets.rwlock.error_replies import count_failure
from locked_targets.rwlock.keys import REVOKE_CHANNEL_PATTERN, base_of_revoke_channel
from locked_targets.rwlock.lease import HeldLock
from locked_targets.rwlock.releases import Releaser, releaser_for, wait_until_sent
from locked_targets.rwlock.scripts import WAITING_FOR_THE_WRITER
from locked_targets.rwlock.subscription import subscription_to

logger = logging.getLogger(__name__)

_SWEEP_EVERY_SECONDS = 1.0
_RECONNECT_AFTER_SECONDS = 1.0
# How long keeping leases ahead waits for a listener just started to subscribe.
_LISTENING_WAIT_SECONDS = 1.0
# The users (as redis_url shows them) whose revocation listener the server's ACL refused, reported once.
_refusals_reported = Once()


@dataclasses.dataclass
class _KeptLease:
    held: HeldLock
    readers: int = 1
    revoked: bool = False
    idle_since: float = 0.0


class SharedLeases:
    """The shared leases this process keeps on one Redis server, and their revocation listener."""

    def __init__(self, connection: RedisConnection, shared_lease_idle_seconds: float) -> None:
        self._connection = connection
        self._shared_lease_idle_seconds = shared_lease_idle_seconds
        self._kept: dict[str, _KeptLease] = {}
        self._mutex = threading.Lock()
        self._listening = threading.Event()
        # Set once the listener's first subscription has succeeded or failed.
        self._tried_listening = threading.Event()
        self._listener: threading.Thread | None = None
        self._failures_in_a_row = 0
        self._subscription = 0  # counts the listener's subscriptions, so a kept lease can name its own
        self._revocations_heard = 0  # a revocation heard while a lease was being acquired forbids keeping it

    def hold(self, base: str, acquire: Callable[[], HeldLock]) -> AbstractContextManager[HeldLock]:
        """Hold the shared lock ``base`` for a block: a kept lease if there is one, else ``acquire()``."""
        return _SharedHold(self, base, acquire)

    def _take(self, base: str, acquire: Callable[[], HeldLock]) -> tuple[HeldLock, _KeptLease | None]:
        kept = self._lend(base)
        if kept is not None:
            return kept.held, kept
        noted = self._noted_before_acquiring()
        held = acquire()
        if noted is None:
            return held, None
        return held, self._keep(base, held, *noted)

    def _noted_before_acquiring(self) -> tuple[int, int] | None:
        """The listener's subscription and the revocations it heard so far, noted before acquiring a
        lease: it is kept only if the listener heard every revocation from then on (same
        subscription, never interrupted). None if no listener hears them now: nothing is kept."""
        with self._mutex:
            return (self._subscription, self._revocations_heard) if self._listening.is_set() else None

    def keeps(self, base: str) -> bool:
        """Whether this process keeps a lease of ``base`` that reads can use."""
        with self._mutex:
            kept = self._kept.get(base)
            return kept is not None and not kept.revoked and not kept.held.lost

    def noted_for_keeping_ahead(self) -> tuple[int, int] | None:
        """``_noted_before_acquiring`` for leases acquired ahead of their reads (``keep_idle``). A
        listener started now is waited for (briefly) until its first subscription succeeds or
        fails; one that stopped, or is reconnecting, is not: then nothing is kept."""
        self._start_listener()
        self._tried_listening.wait(timeout=_LISTENING_WAIT_SECONDS)
        return self._noted_before_acquiring()

    def keep_idle(self, base: str, held: HeldLock, noted: tuple[int, int]) -> bool:
        """Keep ``held``, a shared lease acquired ahead of its reads, unused until a read lends it;
        False if it cannot be kept (one is kept already, or a revocation may have been missed):
        then the caller releases it."""
        return self._keep(base, held, *noted, readers=0) is not None

    def take_for_upgrade(self, base: str) -> HeldLock | None:
        """The kept lease of ``base``, no longer kept nor renewed, for an exclusive acquisition
        to give up in its own step; None if there is none, or local reads still use it
        (then it is revoked, and released when they end)."""
        with self._mutex:
            kept = self._kept.get(base)
            if kept is None:
                return None
            kept.revoked = True
            if kept.readers > 0:
                return None
            del self._kept[base]
        kept.held.stop_renewing()
        return kept.held

    def keep_downgraded(self, base: str, held: HeldLock, description: str) -> None:
        """End the exclusive hold ``held``: kept as a shared lease if this process can keep
        one, else released. Raises ``LockLost`` if the lock had slipped away.

        Unlike a lease acquired shared, no revocation can have been missed: a writer asks
        only once readers block it, and until the downgrade there is no reader to block it.
        """
        with self._mutex:
            keep = self._listening.is_set() and base not in self._kept and not held.lost
        if not keep:
            held.release()
            return
        shared = held.downgrade(description)
        with self._mutex:
            if base in self._kept or not self._listening.is_set():
                kept = None
            else:
                kept = self._kept[base] = _KeptLease(shared, readers=0, idle_since=time.monotonic())
        if kept is None:
            shared.release_quietly()

    def revoke(self, base: str) -> None:
        """Stop lending the lease of ``base``; release it now if no local read uses it."""
        with self._mutex:
            kept = self._kept.get(base)
            if kept is None:
                return
            kept.revoked = True
            if kept.readers > 0:
                return
            del self._kept[base]
        kept.held.release_quietly()

    def release_all(self) -> None:
        """Give back every kept lease that no local read uses (at exit, or when revocations may be missed)."""
        with self._mutex:
            bases = list(self._kept)
        for base in bases:
            self.revoke(base)
        # At exit, nothing else would wait for them. Only this server's: a listener that lost its
        # server must not hurry the releases this process holds back for others.
        wait_until_sent(server=self._connection)

    def _lend(self, base: str) -> _KeptLease | None:
        self._start_listener()
        with self._mutex:
            kept = self._kept.get(base)
            if kept is None or kept.revoked or kept.held.lost:
                return None
            kept.readers += 1
            return kept

    def _keep(
        self, base: str, held: HeldLock, subscription: int, heard: int, readers: int = 1
    ) -> _KeptLease | None:
        with self._mutex:
            if (
                base in self._kept  # another thread keeps one already
                or subscription != self._subscription  # the listener lost Redis meanwhile
                or not self._listening.is_set()
                or heard != self._revocations_heard  # a writer may have asked for this very lease
            ):
                return None
            kept = self._kept[base] = _KeptLease(held, readers=readers, idle_since=time.monotonic())
            return kept

    def _give_back_after_read(self, base: str, kept: _KeptLease) -> None:
        with self._mutex:
            kept.readers -= 1
            release_now = kept.readers == 0 and (kept.revoked or kept.held.lost)
            if release_now and self._kept.get(base) is kept:
                del self._kept[base]
            kept.idle_since = time.monotonic()
        if release_now:
            kept.held.release()  # raises LockLost if the lease slipped away during the read
        else:
            kept.held.ensure_held()

    def _start_listener(self) -> None:
        if self._listener is None:
            with self._mutex:
                if self._listener is None:
                    self._listener = threading.Thread(
                        target=self._listen_forever, name="locked_targets-revocations", daemon=True
                    )
                    self._listener.start()

    def _listen_forever(self) -> None:
        while True:
            try:
                self._listen()
            except Exception as error:
                self._tried_listening.set()
                refusal = self._connection.refusal_of(error)
                if refusal is not None:
                    self._keep_no_leases(refusal)
                    return
                # One warning per outage: the listener retries every second until Redis is back.
                log = logger.warning if self._failures_in_a_row == 0 else logger.debug
                log("revocation listener lost Redis at %s, retrying: %s", self._connection.address, error)
                count_failure(error)
                self._failures_in_a_row += 1
            self._stop_lending()
            time.sleep(_RECONNECT_AFTER_SECONDS)

    def _stop_lending(self) -> None:
        """Keep and lend no lease until the listener listens again: a revocation may go unheard."""
        with self._mutex:
            self._listening.clear()
            self._subscription += 1
        self.release_all()

    def _keep_no_leases(self, refusal: ConfigurationError) -> None:
        """The listener stops for good: without it no lease is kept, which is safe, only slower."""
        self._stop_lending()
        log = logger.warning if _refusals_reported.first_time(self._connection.shown_url) else logger.debug
        log(
            "kept shared leases are off at %s for this process (every read takes and gives back its "
            "lock): the revocation listener may not PSUBSCRIBE %s, which needs +psubscribe and &%s in the "
            "user's rules (Redis matches a PSUBSCRIBE pattern against them literally). %s",
            self._connection.address,
            REVOKE_CHANNEL_PATTERN,
            REVOKE_CHANNEL_PATTERN,
            refusal,
        )

    def _listen(self) -> None:
        # Classic pub/sub, also on a Redis 7 cluster: sharded pub/sub has no pattern form, and one
        # PSUBSCRIBE on any node of a cluster hears the revoke channels of every slot, since a cluster
        # forwards each classic PUBLISH to all its nodes. Revocations are few (a writer asks only
        # when readers are in its way), so they cost the cluster bus little.
        # A waiter blocked by a holder also says so on the revoke channel: this process's queued
        # releases of that lock are sent at once (``releases``), which they may not be otherwise.
        revocations = subscription_to(self._connection.background, REVOKE_CHANNEL_PATTERN, pattern=True)
        releaser = releaser_for(self._connection)
        releaser.listener_started()
        try:
            self._listening.set()
            self._tried_listening.set()
            self._failures_in_a_row = 0
            swept_at = time.monotonic()
            while True:
                message = revocations.next_message(timeout=_SWEEP_EVERY_SECONDS)
                if message is not None and message["type"] == "pmessage":
                    self._heard(releaser, message["channel"], message["data"])
                if time.monotonic() - swept_at >= _SWEEP_EVERY_SECONDS:
                    self._release_idle()
                    swept_at = time.monotonic()
        finally:
            releaser.listener_stopped()
            revocations.close()

    def _heard(self, releaser: Releaser, channel: bytes, data: bytes) -> None:
        """A message on a lock's revoke channel: a waiter asks for the lock. One the writer blocks
        leaves kept leases alone (there are none, the writer is in)."""
        base = base_of_revoke_channel(channel.decode(errors="replace"))
        releaser.wanted(base)
        if data.decode(errors="replace") == WAITING_FOR_THE_WRITER:
            return
        with self._mutex:
            self._revocations_heard += 1
            kept = self._kept.get(base)
        if kept is not None and not kept.revoked:
            telemetry.record_revoked(kept.held.telemetry_labels)
        self.revoke(base)

    def _release_idle(self) -> None:
        idle_before = time.monotonic() - self._shared_lease_idle_seconds
        with self._mutex:
            idle = [
                base
                for base, kept in self._kept.items()
                if kept.readers == 0 and kept.idle_since < idle_before
            ]
        for base in idle:
            self.revoke(base)


class _SharedHold:
    """One read under a shared lease: lent from the kept ones, or acquired (and kept if possible)."""

    __slots__ = ("_acquire", "_base", "_held", "_kept", "_leases")

    def __init__(self, leases: SharedLeases, base: str, acquire: Callable[[], HeldLock]) -> None:
        self._leases = leases
        self._base = base
        self._acquire = acquire

    def __enter__(self) -> HeldLock:
        self._held, self._kept = self._leases._take(self._base, self._acquire)
        return self._held

    def __exit__(self, *exc_info: object) -> None:
        if self._kept is None:
            self._held.release()
        else:
            self._leases._give_back_after_read(self._base, self._kept)
