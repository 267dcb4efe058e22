"""Metrics and spans reach an OpenTelemetry SDK the application installs, with bounded attributes.

The SDK's providers can be set once per process: one session fixture installs them, with an
in-memory reader that hands out what was recorded since its last read (delta temporality),
and an in-memory span exporter; each test starts from an empty read.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.synchronize
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import luigi
import luigi.configuration
import pytest
import redis
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from helpers.lock_processes import SPAWN
from helpers.target_processes import hold_lock_of
from helpers.targets import locked_target, written_under_the_lock
from locked_targets import BackendUnavailable, LockLost, LockTimeout
from locked_targets.locks import lock_for
from locked_targets.run_lock import run_under_lock
from locked_targets.rwlock import LockMode
from locked_targets.rwlock.telemetry import ERROR_TYPE, MODE, NAMESPACE, OUTCOME, STORAGE
from locked_targets.settings import Settings
from locked_targets.testing import RedisServer

LOCAL_TARGET = {NAMESPACE: "target", STORAGE: "local"}


@dataclasses.dataclass(frozen=True)
class Sdk:
    """The SDK's in-memory ends: what was measured, and the spans that ended."""

    reader: InMemoryMetricReader
    spans: InMemorySpanExporter

    def points(self) -> dict[str, list[Any]]:
        """Every data point recorded since the last call, by instrument name."""
        found: dict[str, list[Any]] = defaultdict(list)
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data is not None else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    found[metric.name].extend(metric.data.data_points)
        return found


@pytest.fixture(scope="session")
def sdk() -> Sdk:
    delta = AggregationTemporality.DELTA
    reader = InMemoryMetricReader(preferred_temporality={Counter: delta, Histogram: delta})
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracer_provider)
    return Sdk(reader, spans)


@pytest.fixture
def recorded(sdk: Sdk) -> Sdk:
    """The SDK, with what earlier tests (and their background threads) recorded read and dropped."""
    sdk.points()
    sdk.spans.clear()
    return sdk


@pytest.fixture
def unkept(settings: Settings) -> Settings:
    """Every read acquires and releases its own lease, so each one is measured."""
    return dataclasses.replace(settings, shared_lease_idle_seconds=0)


def counted(points: list[Any], attributes: Mapping[str, str]) -> int:
    """The sum of a counter's points whose attributes are exactly ``attributes``."""
    return sum(point.value for point in points if dict(point.attributes) == dict(attributes))


def measured(points: list[Any], attributes: Mapping[str, str]) -> tuple[int, float]:
    """How many measurements a histogram's points with exactly ``attributes`` hold, and their sum."""
    matching = [point for point in points if dict(point.attributes) == dict(attributes)]
    return sum(point.count for point in matching), sum(point.sum for point in matching)


def start_holder(
    path: str, settings: Settings, mode: str, seconds: float
) -> multiprocessing.process.BaseProcess:
    """Another application holding the lock of ``path`` in ``mode`` for ``seconds``; returns once it does."""
    acquired: multiprocessing.synchronize.Event = SPAWN.Event()
    holder = SPAWN.Process(target=hold_lock_of, args=(path, settings, mode, seconds, acquired))
    holder.start()
    assert acquired.wait(timeout=30), "the other application never got the lock"
    return holder


def test_an_acquisition_that_waits_records_its_wait_and_its_hold(
    tmp_path: Path, unkept: Settings, recorded: Sdk
) -> None:
    path = str(tmp_path / "waited.pkl")
    locked_target(path, unkept).dump("x")
    holder = start_holder(path, unkept, "write", seconds=1.0)
    recorded.points()
    assert locked_target(path, unkept).load() == "x"
    holder.join(timeout=30)
    points = recorded.points()
    read = {**LOCAL_TARGET, MODE: "read"}
    waits, waited = measured(points["locked_targets.lock.wait.duration"], {**read, OUTCOME: "acquired"})
    holds, held = measured(points["locked_targets.lock.hold.duration"], {**read, OUTCOME: "released"})
    assert waits == 1
    # At least: a shared lease an earlier test's target kept may be given back meanwhile.
    assert holds >= 1
    assert waited > 0.1, "the load waited for the other application's write lock"
    assert held > 0
    assert counted(points["locked_targets.lock.acquisitions"], read) == 1


class _SlowToSerialize:
    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        time.sleep(0.5)
        return (str, ("slow",))


def test_a_dumps_write_done_while_its_request_waits_is_no_wait(
    tmp_path: Path, unkept: Settings, recorded: Sdk
) -> None:
    started = time.monotonic()
    locked_target(str(tmp_path / "slow.pkl"), unkept).dump(_SlowToSerialize())
    took = time.monotonic() - started
    write = {**LOCAL_TARGET, MODE: "write"}
    waits, waited = measured(
        recorded.points()["locked_targets.lock.wait.duration"], {**write, OUTCOME: "acquired"}
    )
    (acquire,) = [
        span for span in recorded.spans.get_finished_spans() if span.name == "locked_targets.acquire"
    ]
    assert acquire.start_time is not None
    assert acquire.end_time is not None
    assert took >= 0.5
    assert acquire.end_time - acquire.start_time >= 500_000_000, "the write was not done in the acquisition"
    assert waits == 1
    assert waited < 0.25, "the 0.5 s write done while the request was on its way counted as a wait"


def test_a_wait_timeout_is_counted(tmp_path: Path, unkept: Settings, recorded: Sdk) -> None:
    path = str(tmp_path / "busy.pkl")
    holder = start_holder(path, unkept, "write", seconds=3.0)
    impatient = dataclasses.replace(unkept, wait_timeout_seconds=0.2)
    with pytest.raises(LockTimeout):
        locked_target(path, impatient).exists()
    holder.join(timeout=30)
    points = recorded.points()
    read = {**LOCAL_TARGET, MODE: "read"}
    assert counted(points["locked_targets.lock.timeouts"], read) == 1
    assert measured(points["locked_targets.lock.wait.duration"], {**read, OUTCOME: "timeout"})[0] == 1
    assert counted(points["locked_targets.lock.acquisitions"], read) == 0


def lose_a_write_lock(path: str, settings: Settings, redis_client: redis.Redis) -> None:
    """Hold the write lock of ``path`` with a 1 s lease, have Redis forget it, and let the renewal notice."""
    lock = lock_for(path, dataclasses.replace(settings, lease_seconds=1.0), wait_timeout_seconds=None)
    held = lock.acquire(LockMode.EXCLUSIVE)
    redis_client.delete(lock.keys.writer)
    deadline = time.monotonic() + 10
    while not held.lost and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(LockLost):
        held.release()


def test_a_lost_lease_is_counted(
    tmp_path: Path, settings: Settings, redis_client: redis.Redis, recorded: Sdk
) -> None:
    lose_a_write_lock(str(tmp_path / "forgotten.pkl"), settings, redis_client)
    points = recorded.points()
    write = {**LOCAL_TARGET, MODE: "write"}
    assert counted(points["locked_targets.lock.lost"], write) == 1
    assert measured(points["locked_targets.lock.hold.duration"], {**write, OUTCOME: "lost"})[0] == 1


def test_a_lost_lock_is_logged_once_with_what_an_operator_needs(
    tmp_path: Path, settings: Settings, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "forgotten.pkl")
    with caplog.at_level(logging.WARNING, logger="locked_targets"):
        lose_a_write_lock(path, settings, redis_client)
    lines = [record for record in caplog.records if record.getMessage().startswith("lost the")]
    assert len(lines) == 1
    line = lines[0].getMessage()
    key = lock_for(path, settings, wait_timeout_seconds=None).keys.base
    for needed in (f"write lock of {path}", key, f"pid {multiprocessing.current_process().pid}", "host "):
        assert needed in line
    assert "Redis no longer knew this holder" in line


def test_a_writer_asking_back_a_kept_shared_lease_is_counted_where_it_was_kept(
    tmp_path: Path, settings: Settings, recorded: Sdk
) -> None:
    keeping = dataclasses.replace(settings, shared_lease_idle_seconds=60)
    path = str(tmp_path / "kept.pkl")
    target = locked_target(path, keeping)
    target.dump("x")
    target.load()  # starts the revocation listener
    time.sleep(0.5)
    target.load()  # keeps its lease
    writer = start_holder(path, keeping, "write", seconds=0.1)  # gets in once the lease is given back
    writer.join(timeout=30)
    assert counted(recorded.points()["locked_targets.shared_lease.revocations"], LOCAL_TARGET) == 1


class PublishedFirst:
    """Pickled inside a dump under its lock, it publishes the target's file first, as a stale holder would."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        Path(self.path).write_bytes(b"the stale holder's")
        return (str, ("this dump's",))


def test_a_refused_commit_is_counted(tmp_path: Path, settings: Settings, recorded: Sdk) -> None:
    path = str(tmp_path / "contested.pkl")
    written_under_the_lock(path, settings).dump(PublishedFirst(path))
    assert Path(path).read_bytes() == b"the stale holder's"
    assert counted(recorded.points()["locked_targets.commit.refusals"], LOCAL_TARGET) == 1


def test_spans_are_children_of_the_applications_span(tmp_path: Path, unkept: Settings, recorded: Sdk) -> None:
    target = locked_target(str(tmp_path / "traced.pkl"), unkept)
    with trace.get_tracer("application").start_as_current_span("pipeline step") as application:
        target.dump("x")
        target.load()
    spans = [span for span in recorded.spans.get_finished_spans() if span.name.startswith("locked_targets.")]
    assert sorted(span.name for span in spans) == [
        "locked_targets.acquire",
        "locked_targets.acquire",
        "locked_targets.commit",
    ]
    parent = application.get_span_context()
    for span in spans:
        assert span.parent is not None
        assert span.parent.span_id == parent.span_id
        assert span.parent.trace_id == parent.trace_id
    assert sorted(attributes_of(span)[MODE] for span in spans if span.name == "locked_targets.acquire") == [
        "read",
        "write",
    ]
    assert all(attributes_of(span)[OUTCOME] in {"acquired", "committed"} for span in spans)


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_no_metric_carries_a_path_a_key_or_a_task(tmp_path: Path, settings: Settings, recorded: Sdk) -> None:
    path = str(tmp_path / "private-name.pkl")
    target = locked_target(path, settings)
    target.dump("x")
    target.load()
    target.remove()
    lock = lock_for(path, settings, task="PrivateTask_0123", wait_timeout_seconds=None)
    lock.acquire(LockMode.EXCLUSIVE).release()
    points = [point for found in recorded.points().values() for point in found]
    assert len(points) >= 3, "the SDK received the acquisitions, waits and holds"
    for point in points:
        assert set(point.attributes) <= {MODE, NAMESPACE, STORAGE, OUTCOME, ERROR_TYPE}
        for value in point.attributes.values():
            assert "private" not in str(value).lower()
            assert lock.keys.base not in str(value)


def test_a_redis_error_is_counted_by_its_kind(tmp_path: Path, recorded: Sdk) -> None:
    server = RedisServer().start()
    settings = Settings(redis_url=server.url)
    lock = lock_for(str(tmp_path / "unreachable.pkl"), settings, wait_timeout_seconds=None)
    server.stop()
    with pytest.raises(BackendUnavailable):
        lock.acquire(LockMode.SHARED)
    # At least: revocation listeners of servers that earlier tests stopped count theirs too.
    assert counted(recorded.points()["locked_targets.redis.errors"], {ERROR_TYPE: "connection"}) >= 1


@pytest.fixture
def luigi_locked_targets_section(settings: Settings) -> Iterator[None]:
    """luigi's configuration names the test's Redis and key prefix, as an application's would."""
    config = luigi.configuration.get_config()  # type: ignore[no-untyped-call]
    config.remove_section("locked_targets")
    config.add_section("locked_targets")
    config.set("locked_targets", "redis_url", str(settings.redis_url))
    config.set("locked_targets", "key_prefix", settings.key_prefix)
    yield
    config.remove_section("locked_targets")


class ComputedElsewhere(luigi.Task):
    path = luigi.Parameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(self.path)  # type: ignore[no-untyped-call]


def test_a_run_skipped_under_the_run_lock_is_counted(
    tmp_path: Path, luigi_locked_targets_section: None, recorded: Sdk
) -> None:
    path = tmp_path / "computed.txt"
    path.write_text("by another application")
    ran: list[bool] = []
    assert run_under_lock(ComputedElsewhere(path=str(path)), lambda: ran.append(True)) is None
    assert ran == []
    skips = recorded.points()["locked_targets.run_lock.skips"]
    assert counted(skips, {NAMESPACE: "run", STORAGE: "local"}) == 1
