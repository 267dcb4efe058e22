"""A Redis read/write lock with leases, token ownership, writer preference and woken waiters.

Invariants, all enforced atomically by the Lua scripts (``scripts``):

- At any time a lock has either one exclusive holder (``writer`` key) or any number of
  shared holders (``readers`` sorted set), never both.
- Every holder owns a random token and a lease; only the owner of a token can renew or
  release it, and a holder that stops renewing (crashed, paused) loses the lock when its
  lease ends, so nobody waits on a dead process for longer than one lease.
- Once a writer waits (``waiting_writers``), no new reader is admitted, so a stream of
  readers cannot starve a writer. A waiting writer's place also has a lease.
- A release publishes on the lock's channel; waiters sleep on that channel (bounded by
  the blocking holder's remaining lease) instead of polling. On a Redis 7+ cluster it is a
  shard channel, in the lock's slot (``subscription.Subscription``).
- A writer blocked by readers publishes on the lock's revoke channel, so processes that
  keep shared leases between reads (``shared_leases``) give them back at once.
- Every key carries a TTL no shorter than the longest live lease in it.
- With ``min_replicas_acked``, a grant is held only once that many replicas acknowledged it
  (``WAIT``, on the connection that sent it): a failover to one of them keeps the lock.

Time is the Redis server's (``TIME``), so clients on different machines agree on leases.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager

import redis

from locked_targets.errors import BackendUnavailable, ConfigurationError, LockError, LockTimeout
from locked_targets.rwlock import scripts, telemetry
from locked_targets.rwlock.clock import SYSTEM_CLOCK, Clock
from locked_targets.rwlock.connection import RedisConnection
from locked_targets.rwlock.holders import describe_holder, readable_blocker
from locked_targets.rwlock.keys import LockKeys
from locked_targets.rwlock.lease import HeldLock, LeaseTerms, LockMode, lease_keeper
from locked_targets.rwlock.releases import Handover, releaser_for
from locked_targets.rwlock.retry import with_redis_retries
from locked_targets.rwlock.script_batch import ScriptBatch
from locked_targets.rwlock.shared_leases import SharedLeases
from locked_targets.rwlock.subscription import Subscription, subscription_to
from locked_targets.rwlock.taken_ahead import TakenLock, taken_ahead
from locked_targets.rwlock.waiting import WaitReporter

logger = logging.getLogger(__name__)

DEFAULT_MIN_REPLICAS_TIMEOUT_SECONDS = 0.5
"""How long a grant waits for its replicas' acknowledgement, unless configured."""


@dataclasses.dataclass(frozen=True, eq=False)
class ReadWriteLock:
    """One lock (of a cache file, or of a task run): shared for readers, exclusive for writers."""

    connection: RedisConnection
    keys: LockKeys
    terms: LeaseTerms
    _: dataclasses.KW_ONLY
    wait_timeout_seconds: float | None = None
    """How long an acquisition waits for the lock before ``LockTimeout``; None: for ever."""
    task: str | None = None
    """The task on whose behalf the lock is held, as holders' descriptions name it."""
    label: str | None = None
    """How messages name this lock ("run lock"); without it, its mode does ("read lock")."""
    shared_leases: Callable[[], SharedLeases] | None = None
    """This process's kept shared leases, asked for at each use (a forked child gets its own),
    so repeated reads cost no round trip; None: every read acquires and releases."""
    telemetry_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """What this lock's metrics and spans carry besides its mode (``telemetry.lock_labels``)."""
    clock: Clock = SYSTEM_CLOCK
    min_replicas_acked: int = 0
    """How many replicas must acknowledge a grant (``WAIT``) before it is held; 0: no WAIT is sent."""
    min_replicas_timeout_seconds: float = DEFAULT_MIN_REPLICAS_TIMEOUT_SECONDS
    """How long a grant waits for that before it is given back (and ``BackendUnavailable`` raised)."""

    def shared(self) -> AbstractContextManager[HeldLock]:
        """Hold the lock as one of possibly many readers for the duration of a ``with`` block.

        A thread that holds the lock exclusively, taken ahead, reads under that.
        """
        ahead = taken_ahead().peek(self.keys.base)
        if ahead is not None:
            return _lent(ahead)
        if self.shared_leases is not None:
            return self.shared_leases().hold(self.keys.base, self._acquire_shared)
        return self._shared_once()

    def _acquire_shared(self) -> HeldLock:
        return self.acquire(LockMode.SHARED)

    @contextmanager
    def _shared_once(self) -> Iterator[HeldLock]:
        held = self.acquire(LockMode.SHARED)
        try:
            yield held
        finally:
            held.release()

    @contextmanager
    def exclusive(self, meanwhile: Callable[[], None] | None = None) -> Iterator[HeldLock]:
        """Hold the lock alone for the duration of the block.

        ``meanwhile``: the caller's work that needs no lock, done while its request is on its
        way to Redis instead of before or after it (a local dump writes its object then, into a
        file no one can see). It runs at most once, once the first request is sent; not at all if
        none is sent (the lock was taken ahead). That request takes the lock only if it is free
        (the attempts that wait afterwards queue as a waiting writer), and the work's time is no
        wait: not in the wait timeout, nor in ``lock.wait.duration``. It may take long: the lease
        counts from the send, so a grant it used half the lease of is renewed before the block
        starts, and one Redis no longer holds for this process by then is asked for again. If it
        raises, the attempt is given back and its error raised.

        With kept shared leases, a lease this process keeps on the lock is given up in the
        acquiring step itself (an upgrade), and then the exclusive hold ends as a kept shared
        lease (a downgrade): a file the process was reading, it reads again after writing
        it at no round trip. (A file it only writes, such as gokart's log files, is released.)
        """
        leases = self.shared_leases() if self.shared_leases is not None else None
        taken = taken_ahead().claim(self.keys.base)
        if taken is not None:
            held, upgraded = taken.held, taken.upgraded
        else:
            kept = leases.take_for_upgrade(self.keys.base) if leases is not None else None
            upgraded = kept is not None
            try:
                held = self.acquire(
                    LockMode.EXCLUSIVE,
                    giving_up=kept.token if kept is not None else None,
                    meanwhile=meanwhile,
                )
            except BaseException:
                if kept is not None:  # the step that gives it up may never have run
                    kept.give_up()
                raise
        try:
            yield held
        finally:
            if taken is not None and taken.writes:
                # Still taken ahead, for the thread's next write of a file that shares it; if
                # lost, that write must acquire afresh.
                if held.lost:
                    taken_ahead().forget(self.keys.base)
                    held.release_quietly()
            elif leases is not None and upgraded:
                leases.keep_downgraded(self.keys.base, held, self._description(LockMode.SHARED))
            else:
                held.release()

    def acquire(
        self, mode: LockMode, *, giving_up: str | None = None, meanwhile: Callable[[], None] | None = None
    ) -> HeldLock:
        """Take the lock in ``mode``, waiting (woken by releases) up to the wait timeout.

        ``giving_up``: the token of this process's own shared lease, dropped by the same
        step that takes the exclusive lock. ``meanwhile``: as ``exclusive`` says (not with the
        attempts made again while waiting or retrying). With a Redis retry deadline, a failing
        Redis is retried until it.
        """
        work = _WorkMeanwhile(meanwhile, self.clock) if meanwhile is not None else None
        acquisition = telemetry.acquisition(mode.value, self.telemetry_labels)
        with acquisition:
            try:
                return with_redis_retries(
                    lambda: self._acquire_once(mode, giving_up, work),
                    what=f"acquiring the {self.name(mode)} of {self.keys.path}",
                    redis_retry_deadline_seconds=self.terms.redis_retry_deadline_seconds,
                    clock=self.clock,
                )
            finally:
                if work is not None:
                    acquisition.leave_out(work.seconds)  # the caller's work is no wait

    def name(self, mode: LockMode) -> str:
        """How messages name this lock held in ``mode``: 'read lock', 'write lock', or its label."""
        return self.label or f"{mode.value} lock"

    def _description(self, mode: LockMode) -> str:
        return describe_holder(
            path=self.keys.path, task=self.task, lock=self.name(mode), since=self.clock.wall()
        )

    def _acquire_once(self, mode: LockMode, giving_up: str | None, work: _WorkMeanwhile | None) -> HeldLock:
        token = secrets.token_hex(16)
        description = self._description(mode)
        started = self.clock.monotonic()
        attempt_to_get = functools.partial(self._try_acquire, mode, token, description, giving_up)
        try:
            with self.connection.errors_translated():
                attempt = attempt_to_get(work)
                granted_at = started
                if isinstance(attempt, scripts.Blocked):
                    # The lease runs from when the winning attempt was sent, not from when waiting
                    # began; the wait (and its timeout) from then, less the caller's work meanwhile.
                    waiting_since = started + (work.seconds if work is not None else 0.0)
                    granted_at, attempt = self._wait(mode, attempt_to_get, token, waiting_since, attempt)
        # A failure may come after the grant (a WAIT refused or unanswered): give it back too.
        except (BackendUnavailable, ConfigurationError, redis.RedisError):
            self._abandon(token)
            raise
        except LockTimeout:
            raise  # its waiting place is withdrawn already (``_wait``)
        except BaseException:
            # Anything else (an interrupt, or the work run meanwhile raising) may come after the
            # grant, its reply unread: give it back too, without waiting on Redis.
            self._abandon_later(token)
            raise
        held = self._register(mode, token, granted_at, attempt.fencing_token)
        # Only work done meanwhile holds the reply back long: every other grant is read at once.
        if work is None or held.lease_left_seconds() > self.terms.lease_seconds / 2:
            return held
        return self._renewed_after_long_meanwhile(held, mode)

    def _renewed_after_long_meanwhile(self, held: HeldLock, mode: LockMode) -> HeldLock:
        """``held``, whose lease the work done meanwhile used half of or more: renewed now (one round
        trip), so it is not left to a renewal planned for after it ends; if Redis no longer holds it
        for this process, given up and asked for again (what was done meanwhile needed no lock)."""
        try:
            with self.connection.errors_translated():
                renewed = held.renew_now()
        except BaseException:
            held.give_up()
            raise
        if renewed:
            return held
        held.give_up()
        return self._acquire_once(mode, None, None)

    def _abandon(self, token: str) -> None:
        """Undo an attempt whose reply may have been lost, so it leaves no ghost holder for a lease."""
        try:
            scripts.release(self.connection, self.keys, token)
        except (redis.RedisError, OSError) as error:
            logger.debug("could not abandon an attempt on %s: %s", self.keys.path, error)

    def _abandon_later(self, token: str) -> None:
        """``_abandon``, sent in the background (``releases``): nothing waits for a Redis that
        failed, and it is retried while the lease it would end lasts."""
        releaser_for(self.connection).hand_over(
            Handover(
                connection=self.connection,
                lock=self.keys.base,
                add=functools.partial(scripts.release, self.connection, self.keys, token),
                answered=functools.partial(_abandon_answered, self.keys.path),
                give_up_at=self.clock.monotonic() + self.terms.lease_seconds,
            )
        )

    def _try_acquire(
        self,
        mode: LockMode,
        token: str,
        description: str,
        giving_up: str | None,
        work: _WorkMeanwhile | None = None,
    ) -> scripts.Attempt:
        """One attempt; with ``min_replicas_acked``, a grant its replicas did not acknowledge in
        time raises ``BackendUnavailable`` (and ``_acquire_once`` gives it back).

        An attempt that carries work to do meanwhile (``work``, not run yet) takes the lock only if
        it is free, and otherwise leaves no waiting writer's place: during the work it would keep
        new readers out of a lock that may be let go of meanwhile. The attempts that wait take one.

        A release of this lock this process handed over a moment ago must reach Redis first, or
        the attempt would wait for (or, with no wait timeout left, fail on) its own past hold:
        it rides along in front of the attempt (``Releaser.send_along``). ``WAIT`` follows the
        attempt on its connection, in the same round trip: it counts that connection's writes.
        """
        acknowledging = _acknowledging_batch(self.connection, [self])
        batch = acknowledging if acknowledging is not None else ScriptBatch(self.connection)
        if work is not None and not work.ran:
            batch.meanwhile = work
        if mode is LockMode.SHARED:
            scripts.add_shared_attempts(
                batch, self.connection, [(self.keys, token, self.terms.lease_seconds, description)]
            )
        else:
            scripts.acquire_exclusive(
                self.connection,
                self.keys,
                token,
                self.terms.lease_seconds,
                description,
                fencing_memory_seconds=self.terms.fencing_memory_seconds,
                giving_up=giving_up,
                in_line=batch.meanwhile is None,
                batch=batch,
            )
        (reply,) = releaser_for(self.connection).send_along(batch, after=[self.keys.base])
        if isinstance(reply, Exception):
            raise reply
        attempt = (
            scripts.shared_attempt(reply) if mode is LockMode.SHARED else scripts.exclusive_attempt(reply)
        )
        if acknowledging is not None and isinstance(attempt, scripts.Granted):
            acknowledging.ensure_acknowledged(f"the {self.name(mode)} of {self.keys.path}")
        return attempt

    def _wait(
        self,
        mode: LockMode,
        attempt_to_get: Callable[[], scripts.Attempt],
        token: str,
        started: float,
        blocked: scripts.Blocked,
    ) -> tuple[float, scripts.Granted]:
        """Retry each time a release is published; return when the winning attempt was sent, and it."""
        reporter = WaitReporter(path=self.keys.path, lock=self.name(mode), started=started, clock=self.clock)
        released: Subscription | None = None
        try:
            released = subscription_to(self.connection, self.keys.released_channel)
            while True:
                attempt_at = self.clock.monotonic()
                attempt = attempt_to_get()
                if isinstance(attempt, scripts.Granted):
                    return attempt_at, attempt
                holder = readable_blocker(attempt)
                reporter.still_waiting(holder)
                timeout = min(
                    attempt.lease_left_seconds,
                    self.terms.renewal_interval_seconds,
                    reporter.seconds_to_next_report(),
                )
                if self.wait_timeout_seconds is not None:
                    remaining = started + self.wait_timeout_seconds - self.clock.monotonic()
                    if remaining <= 0:
                        raise LockTimeout(
                            path=self.keys.path,
                            lock_key=self.keys.base,
                            lock=self.name(mode),
                            holder=holder,
                            waited_seconds=self.clock.monotonic() - started,
                        )
                    timeout = min(timeout, remaining)
                released.next_message(timeout=timeout)
        except BaseException:
            if mode is LockMode.EXCLUSIVE:
                self._cancel_wait(token)
            raise
        finally:
            if released is not None:
                released.close()

    def _cancel_wait(self, token: str) -> None:
        # Best effort: if Redis is gone, the waiting place expires with its lease anyway,
        # and the error that ended the wait is the one the caller must see.
        try:
            scripts.cancel_wait(self.connection, self.keys, token)
        except (redis.RedisError, OSError) as error:
            logger.debug("could not withdraw a waiting writer of %s: %s", self.keys.path, error)

    def _register(self, mode: LockMode, token: str, started: float, fencing_token: int | None) -> HeldLock:
        held = HeldLock(
            connection=self.connection,
            keys=self.keys,
            terms=self.terms,
            mode=mode,
            token=token,
            lease_started=started,
            fencing_token=fencing_token,
            clock=self.clock,
            telemetry_labels=self.telemetry_labels,
        )
        lease_keeper().keep(held)
        telemetry.record_granted(mode.value, self.telemetry_labels)
        return held


class _WorkMeanwhile:
    """The caller's work done while an acquisition's request is on its way: run once, with the
    first request sent (the attempts made again while waiting or retrying carry none), and timed,
    for that time is no wait."""

    def __init__(self, work: Callable[[], None], clock: Clock) -> None:
        self._work = work
        self._clock = clock
        self.ran = False
        self.seconds = 0.0

    def __call__(self) -> None:
        if self.ran:
            return
        self.ran = True
        started = self._clock.monotonic()
        try:
            self._work()
        finally:
            self.seconds = self._clock.monotonic() - started


def _abandon_answered(path: str, reply: object) -> None:
    if isinstance(reply, Exception):
        logger.debug("could not abandon an attempt on %s (its lease will end it): %s", path, reply)


@contextmanager
def _lent(held: HeldLock) -> Iterator[HeldLock]:
    """A read under a lock the thread holds anyway: checked at its end, not released."""
    yield held
    held.ensure_held()


def take_ahead(locks: Sequence[ReadWriteLock]) -> bool:
    """Take the exclusive lock of every one of ``locks`` at once (one round trip per server),
    for the calling thread's coming writes (``taken_ahead``); True if all were free.

    Nothing waits: if any is held by another, or Redis fails, none is kept and the writes
    acquire their locks one at a time. A kept shared lease of one of them is given up
    in the same step (an upgrade). Locks that are one lock (the same keys: files that share
    a lock) are taken once, and serve as many writes.
    """
    writes = collections.Counter(lock.keys.base for lock in locks)
    distinct = {lock.keys.base: lock for lock in locks}  # any of one lock's objects will do
    attempts = [_AheadAttempt.prepare(lock) for lock in distinct.values()]
    granted: list[HeldLock] = []
    try:
        by_connection: dict[RedisConnection, list[_AheadAttempt]] = {}
        for attempt in attempts:
            by_connection.setdefault(attempt.lock.connection, []).append(attempt)
        for connection, mine in by_connection.items():
            acknowledging = _acknowledging_batch(connection, [attempt.lock for attempt in mine])
            batch = acknowledging if acknowledging is not None else ScriptBatch(connection)
            for attempt in mine:
                attempt.add(batch)
            sent_at = SYSTEM_CLOCK.monotonic()
            with connection.errors_translated():
                replies = releaser_for(connection).send_along(
                    batch, after=[attempt.lock.keys.base for attempt in mine]
                )
            if acknowledging is not None:  # before any is registered: unanswered attempts are abandoned
                acknowledging.ensure_acknowledged(f"{len(mine)} write locks taken ahead")
            for attempt, reply in zip(mine, replies, strict=True):
                held = attempt.answered(reply, sent_at)
                if held is not None:
                    granted.append(held)
    except (LockError, redis.RedisError, OSError) as error:
        logger.debug("could not take %d locks ahead: %s", len(locks), error)
    except BaseException:
        for attempt in attempts:
            attempt.give_back()
        raise
    if len(granted) == len(attempts):
        taken_ahead().keep(
            [
                TakenLock(attempt.held, attempt.giving_up is not None, writes[attempt.lock.keys.base])
                for attempt in attempts
                if attempt.held
            ]
        )
        return True
    for attempt in attempts:
        attempt.give_back()
    return False


def keep_shared_ahead(locks: Sequence[ReadWriteLock]) -> int:
    """Acquire the shared leases of ``locks`` at once (one round trip per server) and keep them,
    unused, for the reads that come next (``shared_leases``); how many are kept.

    For reads about to be made one by one, such as luigi's completeness checks of a task's
    dependencies: each then costs no round trip. Nothing waits: a lock a writer holds or waits
    for, a lease kept already, or a failure is left to its read. A lock that keeps no leases,
    or that asks replicas to acknowledge grants, is left out.
    """
    by_leases: dict[SharedLeases, dict[str, ReadWriteLock]] = {}
    for lock in locks:
        if lock.shared_leases is None or lock.min_replicas_acked:
            continue
        leases = lock.shared_leases()
        if not leases.keeps(lock.keys.base):
            by_leases.setdefault(leases, {})[lock.keys.base] = lock
    return sum(_keep_shared_ahead_in(leases, list(mine.values())) for leases, mine in by_leases.items())


def _keep_shared_ahead_in(leases: SharedLeases, locks: list[ReadWriteLock]) -> int:
    """``keep_shared_ahead`` for ``locks``, whose leases ``leases`` keeps (all on its one server)."""
    noted = leases.noted_for_keeping_ahead()
    if noted is None:
        return 0
    connection = locks[0].connection
    batch = ScriptBatch(connection)
    tokens = [secrets.token_hex(16) for _ in locks]
    scripts.add_shared_attempts(
        batch,
        connection,
        [
            (lock.keys, token, lock.terms.lease_seconds, lock._description(LockMode.SHARED))
            for lock, token in zip(locks, tokens, strict=True)
        ],
    )
    sent_at = SYSTEM_CLOCK.monotonic()
    try:
        with connection.errors_translated():
            # This process's own releases of them, handed over a moment ago, go first.
            replies = releaser_for(connection).send_along(batch, after=[lock.keys.base for lock in locks])
    except (LockError, redis.RedisError, OSError) as error:
        logger.debug("could not keep %d shared leases ahead: %s", len(locks), error)
        for lock, token in zip(locks, tokens, strict=True):
            lock._abandon_later(token)
        return 0
    kept = 0
    for lock, token, reply in zip(locks, tokens, replies, strict=True):
        if isinstance(reply, Exception):  # on a cluster, a node may have failed after granting
            lock._abandon_later(token)
            continue
        if not isinstance(scripts.shared_attempt(reply), scripts.Granted):
            continue
        held = lock._register(LockMode.SHARED, token, sent_at, None)
        if leases.keep_idle(lock.keys.base, held, noted):
            kept += 1
        else:
            held.release_quietly()
    return kept


@dataclasses.dataclass
class _AheadAttempt:
    """One lock's part in ``take_ahead``."""

    lock: ReadWriteLock
    token: str
    giving_up: HeldLock | None
    held: HeldLock | None = None
    answered_at_all: bool = False

    @classmethod
    def prepare(cls, lock: ReadWriteLock) -> _AheadAttempt:
        leases = lock.shared_leases() if lock.shared_leases is not None else None
        kept = leases.take_for_upgrade(lock.keys.base) if leases is not None else None
        return cls(lock, secrets.token_hex(16), kept)

    def add(self, batch: ScriptBatch) -> None:
        lock = self.lock
        scripts.acquire_exclusive(
            lock.connection,
            lock.keys,
            self.token,
            lock.terms.lease_seconds,
            lock._description(LockMode.EXCLUSIVE),
            fencing_memory_seconds=lock.terms.fencing_memory_seconds,
            giving_up=self.giving_up.token if self.giving_up is not None else None,
            in_line=False,
            batch=batch,
        )

    def answered(self, reply: object, sent_at: float) -> HeldLock | None:
        if isinstance(reply, Exception):
            raise reply
        assert isinstance(reply, list)
        self.answered_at_all = True
        attempt = scripts.exclusive_attempt(reply)
        if isinstance(attempt, scripts.Granted):
            self.held = self.lock._register(LockMode.EXCLUSIVE, self.token, sent_at, attempt.fencing_token)
        return self.held

    def give_back(self) -> None:
        """Release what this attempt may hold (an unanswered attempt may have been granted)."""
        if self.held is not None:
            self.held.release_quietly()
        elif not self.answered_at_all:
            self.lock._abandon(self.token)
        if self.giving_up is not None:
            self.giving_up.give_up()


def _acknowledging_batch(
    connection: RedisConnection, locks: Sequence[ReadWriteLock]
) -> _AcknowledgedBatch | None:
    """A batch of the acquisitions of ``locks`` on ``connection``, acknowledged by as many replicas
    as the most demanding of them asks; None if none asks (no WAIT is sent)."""
    replicas = max(lock.min_replicas_acked for lock in locks)
    if replicas == 0:
        return None
    return _AcknowledgedBatch(connection, replicas, max(lock.min_replicas_timeout_seconds for lock in locks))


class _AcknowledgedBatch(ScriptBatch):
    """Script calls followed by ``WAIT``, in one round trip on one connection.

    ``WAIT numreplicas timeout`` answers how many replicas acknowledged every write the connection
    that sends it made, so it must follow the calls on their connection: a pipeline has one.
    """

    def __init__(self, connection: RedisConnection, replicas: int, timeout_seconds: float) -> None:
        super().__init__(connection, wait_for_replicas=(replicas, scripts.milliseconds(timeout_seconds)))
        self._replicas = replicas
        self._timeout_seconds = timeout_seconds

    def ensure_acknowledged(self, what: str) -> None:
        """Raise unless enough replicas acknowledged the writes sent: ``BackendUnavailable``, or the
        error ``WAIT`` got, translated (an ACL without ``+wait`` is a ``ConfigurationError``, and so
        is a server that does not run ``WAIT`` at all)."""
        acknowledged = self.acknowledged or 0
        if isinstance(acknowledged, Exception):
            translated = (
                self._connection.translated(acknowledged)
                if isinstance(acknowledged, redis.RedisError)
                else acknowledged
            )
            if isinstance(translated, BackendUnavailable | ConfigurationError):
                raise translated
            raise ConfigurationError(
                "min_replicas_acked",
                self._replicas,
                f"the server at {self._connection.address} does not answer WAIT ({translated}): lock on "
                "one that does, or set min_replicas_acked = 0",
            ) from None
        if acknowledged < self._replicas:
            raise BackendUnavailable(
                address=self._connection.address,
                reason=(
                    f"{acknowledged} of the {self._replicas} replicas min_replicas_acked asks for "
                    f"acknowledged {what} within min_replicas_timeout_seconds ({self._timeout_seconds:g} s): "
                    "it was given back, so that no failover can forget a lock that is held"
                ),
            )
