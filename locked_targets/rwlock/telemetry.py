"""Metrics and traces of the locks, through the OpenTelemetry API: every instrument, its name and attributes.

The API records nothing until the application installs an SDK (a ``MeterProvider``, a
``TracerProvider``); instruments made before that forward to it once it is there. A metric's
attributes are few and bounded, so it has a handful of series: the lock's mode and namespace,
the storage kind, an outcome, a Redis error's kind. Never a path, a lock key or a task, which
would make a series per file. The core cannot tell a namespace or a storage kind: the gokart
face passes them in (``lock_labels``, kept in ``ReadWriteLock.telemetry_labels``).

Spans are children of the application's current span. Without an SDK a span is not made
current: that would cost more than everything else recorded here together.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from types import TracebackType

from opentelemetry import metrics, trace

from locked_targets.errors import BackendUnavailable, CommitRefused, LockTimeout

MODE = "lock.mode"
"""``read`` or ``write``."""
NAMESPACE = "lock.namespace"
"""``target`` (a cache file's reads and writes) or ``run`` (a task's run lock)."""
STORAGE = "storage.kind"
"""``local``, ``s3`` or ``gcs``."""
OUTCOME = "outcome"
ERROR_TYPE = "error.type"
"""A Redis failure's kind (``connection``, ``timeout``, ``oom``...), never its message."""
WAITED = "lock.wait_seconds"
"""On an acquisition's span only: how long it took."""

NO_LABELS: Mapping[str, str] = {}

# Seconds: from a round trip on loopback to a long run() under a run lock.
_DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip

_meter = metrics.get_meter("locked_targets")
_tracer = trace.get_tracer("locked_targets")


def _duration(name: str, description: str) -> metrics.Histogram:
    return _meter.create_histogram(
        f"locked_targets.{name}",
        unit="s",
        description=description,
        explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
    )


def _counter(name: str, unit: str, description: str) -> metrics.Counter:
    return _meter.create_counter(f"locked_targets.{name}", unit=unit, description=description)


_wait = _duration("lock.wait.duration", "How long an acquisition took, to its grant, timeout or failure")
_hold = _duration("lock.hold.duration", "How long a lock was held, from its grant to its release")
_acquisitions = _counter("lock.acquisitions", "{acquisition}", "Locks granted by Redis")
_timeouts = _counter("lock.timeouts", "{timeout}", "Acquisitions that gave up at their wait timeout")
_lost = _counter("lock.lost", "{lock}", "Held locks whose lease was lost")
_revocations = _counter("shared_lease.revocations", "{revocation}", "Kept shared leases a writer asked back")
_refused_commits = _counter(
    "commit.refusals", "{commit}", "Commits the storage refused: the object was there"
)
_redis_errors = _counter("redis.errors", "{error}", "Redis failures met, by kind")
_run_skips = _counter("run_lock.skips", "{task}", "Tasks another application computed while this one waited")


def lock_labels(*, namespace: str, storage: str) -> Mapping[str, str]:
    """What every measurement of one lock carries: its namespace and its storage kind."""
    return {NAMESPACE: namespace, STORAGE: storage}


def acquisition(mode: str, labels: Mapping[str, str]) -> Acquisition:
    """Around one acquisition, waits and retries included: its span, its wait time, a timeout."""
    return Acquisition({**labels, MODE: mode})


def record_granted(mode: str, labels: Mapping[str, str]) -> None:
    """Redis granted a lock (acquired, or taken ahead)."""
    _acquisitions.add(1, {**labels, MODE: mode})


def record_hold(mode: str, labels: Mapping[str, str], held_seconds: float, *, lost: bool) -> None:
    """A holding ended: released, downgraded, given up by an upgrade, or found lost at its end."""
    _hold.record(held_seconds, {**labels, MODE: mode, OUTCOME: "lost" if lost else "released"})


def record_lost(mode: str, labels: Mapping[str, str]) -> None:
    _lost.add(1, {**labels, MODE: mode})


def record_revoked(labels: Mapping[str, str]) -> None:
    _revocations.add(1, labels)


def commit(labels: Mapping[str, str]) -> AbstractContextManager[None]:
    """Around a dump's commit, and its write unless written ahead of its lock: its span, and a
    refusal by the storage."""
    return _Commit(labels)


def record_redis_error(kind: str) -> None:
    _redis_errors.add(1, {ERROR_TYPE: kind})


def record_run_skipped(labels: Mapping[str, str]) -> None:
    _run_skips.add(1, labels)


class _Spanned:
    """A block in a span, child of the current one, current itself while it records (with an SDK);
    a class, not a generator: an acquisition takes a few, and each costs the thread running tasks."""

    def __init__(self, name: str, attributes: Mapping[str, str]) -> None:
        self.attributes = attributes
        self.span = _tracer.start_span(name, attributes=attributes)
        self._current = trace.use_span(self.span, end_on_exit=True) if self.span.is_recording() else None

    def __enter__(self) -> None:
        if self._current is not None:
            self._current.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            self.ended(kind)
        finally:  # the span ends, and stops being current, whatever recording it raised
            if self._current is not None:
                self._current.__exit__(kind, error, traceback)

    def ended(self, kind: type[BaseException] | None) -> None:
        """Record how the block ended: normally (``kind`` None), or by raising ``kind``."""
        raise NotImplementedError


class Acquisition(_Spanned):
    """An acquisition's span and wait time, less the caller's own work done while its request was
    on its way (``leave_out``): a dump's write is no wait for the lock."""

    def __init__(self, attributes: Mapping[str, str]) -> None:
        super().__init__("locked_targets.acquire", attributes)
        self._started = time.monotonic()
        self._working = 0.0

    def leave_out(self, seconds: float) -> None:
        """Count ``seconds`` of the caller's own work, done during the acquisition, as no wait."""
        self._working += seconds

    def ended(self, kind: type[BaseException] | None) -> None:
        waited = time.monotonic() - self._started - self._working
        if kind is None:
            outcome = "acquired"
        elif issubclass(kind, LockTimeout):
            outcome = "timeout"
            _timeouts.add(1, self.attributes)
        elif issubclass(kind, BackendUnavailable):
            outcome = "redis_error"
        else:
            outcome = "error"
        self.span.set_attributes({OUTCOME: outcome, WAITED: waited})
        _wait.record(waited, {**self.attributes, OUTCOME: outcome})


class _Commit(_Spanned):
    def __init__(self, labels: Mapping[str, str]) -> None:
        super().__init__("locked_targets.commit", labels)

    def ended(self, kind: type[BaseException] | None) -> None:
        if kind is None:
            outcome = "committed"
        elif issubclass(kind, CommitRefused):
            outcome = "refused"
            _refused_commits.add(1, self.attributes)
        else:
            outcome = "error"
        self.span.set_attribute(OUTCOME, outcome)
