"""LockedTarget on local files: gokart's semantics, every access under the file's lock."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pickle
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gokart
import luigi
import pandas as pd
import pytest
import redis
from gokart.file_processor import FileProcessor, make_file_processor
from gokart.utils import get_dataframe_type_from_task

import locked_targets
import locked_targets.locks
import locked_targets.target
from helpers.gokart_targets import dump_pausing_before_publishing, wait_for_file, wrapped_gokart_target
from helpers.lock_processes import SPAWN
from helpers.paused_redis import requests_held_back, writes_paused
from helpers.target_processes import (
    dump_value,
    frame_model_target,
    hold_lock_of,
    load_frame,
    load_model_repeatedly,
    save_frame,
)
from helpers.targets import ThroughAnother, locked_target
from helpers.unnamed_files import skip_unless_unnamed_files_in, unnamed_file_sizes, unnamed_files_open
from locked_targets import LockedTarget, LockLost, LockTimeout, Settings
from locked_targets.errors import CommitRefused
from locked_targets.factories import make_target
from locked_targets.locks import lock_key_for
from locked_targets.process_state import Once
from locked_targets.storage import storage_kind_for
from locked_targets.storage.base import StorageFileTarget
from locked_targets.storage.local import WriteOnceLocalTarget, WrittenAhead
from locked_targets.task import _dataframe_type_of
from locked_targets.testing import RedisServer


def hold_in_another_process(path: str, settings: Settings, mode: str, seconds: float) -> float:
    """Start a process holding the lock; return once it holds it (monotonic time it was acquired)."""
    acquired = SPAWN.Event()
    process = SPAWN.Process(target=hold_lock_of, args=(path, settings, mode, seconds, acquired))
    process.start()
    assert acquired.wait(timeout=60), "the holder process did not take the lock"
    return time.monotonic()


def test_dump_then_load_round_trips(tmp_path: Path, settings: Settings) -> None:
    target = locked_target(str(tmp_path / "x.pkl"), settings)
    target.dump({"answer": 42})
    assert target.exists()
    assert target.load() == {"answer": 42}


def test_dump_skips_when_another_application_already_wrote(tmp_path: Path, settings: Settings) -> None:
    path = str(tmp_path / "x.pkl")
    locked_target(path, settings).dump("first")
    locked_target(path, settings).dump("second")
    assert locked_target(path, settings).load() == "first"


def test_remove_deletes_the_file(tmp_path: Path, settings: Settings) -> None:
    target = locked_target(str(tmp_path / "x.pkl"), settings)
    target.dump("x")
    target.remove()
    assert not target.exists()
    target.remove()  # removing what is gone is not an error, as in gokart


def test_load_waits_while_another_application_writes(tmp_path: Path, settings: Settings) -> None:
    path = str(tmp_path / "x.pkl")
    locked_target(path, settings).dump("x")
    hold_in_another_process(path, settings, "write", seconds=5.0)
    started = time.monotonic()
    assert locked_target(path, settings).load() == "x"
    assert time.monotonic() - started > 1.0


def test_exists_waits_while_another_application_removes(tmp_path: Path, settings: Settings) -> None:
    path = str(tmp_path / "x.pkl")
    hold_in_another_process(path, settings, "write", seconds=5.0)
    started = time.monotonic()
    locked_target(path, settings).exists()
    assert time.monotonic() - started > 1.0


def test_dump_waits_while_another_application_reads(tmp_path: Path, settings: Settings) -> None:
    path = str(tmp_path / "x.pkl")
    hold_in_another_process(path, settings, "read", seconds=5.0)
    started = time.monotonic()
    locked_target(path, settings).dump("x")
    assert time.monotonic() - started > 1.0


def test_a_long_wait_is_logged_naming_the_holder(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "x.pkl")
    hold_in_another_process(path, settings, "write", seconds=5.0)
    with caplog.at_level(logging.INFO, logger="locked_targets"):
        locked_target(path, settings).exists()
    waits = [record.getMessage() for record in caplog.records if "waiting" in record.getMessage()]
    assert len(waits) == 1
    assert "task OtherApplication_0" in waits[0]
    assert path in waits[0]


def test_path_and_last_modification_time_pass_through(tmp_path: Path, settings: Settings) -> None:
    target = locked_target(str(tmp_path / "x.pkl"), settings)
    target.dump("x")
    assert target.path() == str(tmp_path / "x.pkl")
    assert abs(target.last_modification_time().timestamp() - time.time()) < 60


def test_model_target_round_trips(tmp_path: Path, settings: Settings) -> None:
    target = frame_model_target(str(tmp_path / "model.zip"), str(tmp_path / "tmp"), settings, unique_id="abc")
    frame = pd.DataFrame({"value": range(10)})
    target.dump(frame)
    assert target.path() == str(tmp_path / "model_abc.zip")
    pd.testing.assert_frame_equal(target.load(), frame)
    target.remove()
    assert not target.exists()


def test_concurrent_model_loads_never_collide(tmp_path: Path, settings: Settings) -> None:
    path, temporary_directory = str(tmp_path / "model.zip"), str(tmp_path / "tmp")
    frame_model_target(path, temporary_directory, settings).dump(pd.DataFrame({"value": range(200_000)}))
    with SPAWN.Pool(8) as pool:
        results = pool.starmap_async(
            load_model_repeatedly, [(path, temporary_directory, settings, 15)] * 8
        ).get(timeout=240)
    failures = [failure for _, process_failures in results for failure in process_failures]
    print(f"model loads: {sum(whole for whole, _ in results)} whole, {len(failures)} failed")
    assert failures == []
    assert sum(whole for whole, _ in results) == 8 * 15


def test_large_data_frame_target_round_trips(tmp_path: Path, settings: Settings) -> None:
    luigi.configuration.get_config().set("locked_targets", "redis_url", str(settings.redis_url))  # type: ignore[no-untyped-call]
    target = locked_targets.make_large_data_frame_target(
        str(tmp_path / "large.zip"), temporary_directory=str(tmp_path / "tmp"), max_byte=1000
    )
    frame = pd.DataFrame({"value": range(1000)})
    target.dump(frame)
    pd.testing.assert_frame_equal(target.load().sort_index(), frame)


def test_without_redis_nothing_is_locked_and_one_warning_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locked_targets.target, "_warned", Once())
    with caplog.at_level(logging.WARNING, logger="locked_targets"):
        for name in ("a.pkl", "b.pkl"):
            target = locked_target(str(tmp_path / name), Settings())
            target.dump(name)
            assert target.load() == name
    warnings = [record for record in caplog.records if "NOT locked" in record.getMessage()]
    assert len(warnings) == 1


class Producer(locked_targets.TaskOnKart[pd.DataFrame]):
    """A task that swaps gokart's base class for locked_targets'."""

    def run(self) -> None:
        self.dump(pd.DataFrame({"value": range(5)}))


class Consumer(locked_targets.TaskOnKart[int]):
    producer: gokart.TaskOnKart[pd.DataFrame] = gokart.TaskInstanceParameter()

    def run(self) -> None:
        frame = self.load(self.producer)
        self.dump(int(frame["value"].sum()))


def redis_parameters(settings: Settings) -> dict[str, Any]:
    """The task parameters ``redis_host`` and ``redis_port`` of the test's server."""
    assert settings.redis_url is not None
    host, port = settings.redis_url.removeprefix("redis://").split("/")[0].split(":")
    return {"redis_host": host, "redis_port": int(port)}


def producer_on(tmp_path: Path, settings: Settings, **parameters: Any) -> Producer:
    return Producer(workspace_directory=str(tmp_path), **redis_parameters(settings), **parameters)


def test_task_on_kart_builds_with_locked_targets(tmp_path: Path, settings: Settings) -> None:
    consumer = Consumer(
        producer=producer_on(tmp_path, settings),
        workspace_directory=str(tmp_path),
        **redis_parameters(settings),
    )
    assert isinstance(consumer.output(), LockedTarget)
    assert gokart.build(consumer, reset_register=False) == 10


def test_a_run_builds_each_of_its_files_targets_once(tmp_path: Path, settings: Settings) -> None:
    """gokart builds a file's target again for each use; within a run, the first one serves."""
    producer = producer_on(tmp_path, settings)
    before = producer.output()
    producer.trigger_event(luigi.Event.START)
    first = producer.output()
    assert producer.output() is first
    assert producer._get_task_log_target() is producer._get_task_log_target()  # type: ignore[no-untyped-call]
    producer.run()
    producer.trigger_event(luigi.Event.SUCCESS)
    assert producer.output() is not first
    assert before is not first
    after = producer.output()
    assert isinstance(after, LockedTarget)
    assert after.load()["value"].tolist() == list(range(5))


def test_a_run_sees_a_change_of_configuration(
    tmp_path: Path, settings: Settings, luigi_config: luigi.configuration.LuigiConfigParser
) -> None:
    producer = producer_on(tmp_path, settings)
    producer.trigger_event(luigi.Event.START)
    first = producer.output()
    luigi_config.set("locked_targets", "lease_seconds", "20")  # type: ignore[no-untyped-call]
    changed = producer.output()
    producer.trigger_event(luigi.Event.FAILURE, RuntimeError("not run"))
    assert changed is not first
    assert isinstance(changed, LockedTarget)
    assert changed._settings.lease_seconds == 20


def test_a_run_builds_a_target_with_the_callers_processor_afresh(tmp_path: Path, settings: Settings) -> None:
    producer = producer_on(tmp_path, settings)
    producer.trigger_event(luigi.Event.START)
    first = producer.make_target("other.pkl", processor=make_file_processor("other.pkl"))
    again = producer.make_target("other.pkl", processor=make_file_processor("other.pkl"))
    producer.trigger_event(luigi.Event.FAILURE, RuntimeError("not run"))
    assert again is not first


def test_a_failed_run_keeps_none_of_its_targets(tmp_path: Path, settings: Settings) -> None:
    producer = producer_on(tmp_path, settings)
    producer.trigger_event(luigi.Event.START)
    during = producer.output()
    producer.trigger_event(luigi.Event.FAILURE, RuntimeError("the run failed"))
    assert producer.output() is not during


def test_a_run_builds_a_target_again_when_its_unique_id_changes(tmp_path: Path, settings: Settings) -> None:
    """Without ``cache_unique_id``, gokart computes a task's unique id again each time."""
    producer = producer_on(tmp_path, settings, cache_unique_id=False)
    producer.trigger_event(luigi.Event.START)
    first = producer.output()
    assert producer.output() is first
    producer.task_unique_id = "given-later"
    again = producer.output()
    producer.trigger_event(luigi.Event.FAILURE, RuntimeError("not run"))
    assert isinstance(again, LockedTarget)
    assert again is not first
    assert again.path().endswith("_given-later.pkl")


def processor_of(target: LockedTarget) -> FileProcessor:
    processor: FileProcessor = target._target._processor  # type: ignore[attr-defined]
    return processor


def test_a_tasks_targets_share_the_processor_gokart_picks_for_their_extension(
    tmp_path: Path, settings: Settings
) -> None:
    producer = producer_on(tmp_path, settings)
    pickled = processor_of(producer.make_target("a.pkl"))
    assert processor_of(producer.make_target("b.pkl")) is pickled
    assert type(pickled) is type(make_file_processor("a.pkl"))
    assert processor_of(producer.make_target("c.csv")) is not pickled


def test_a_tasks_targets_write_as_gokart_does_for_their_extension(tmp_path: Path, settings: Settings) -> None:
    producer = producer_on(tmp_path, settings)
    frame = pd.DataFrame({"left": [1], "right": [2]})
    producer.make_target("c.csv").dump(frame)
    producer.make_target("d.tsv").dump(frame)
    assert (tmp_path / f"c_{producer.make_unique_id()}.csv").read_text().splitlines()[0] == "left,right"
    assert (tmp_path / f"d_{producer.make_unique_id()}.tsv").read_text().splitlines()[0] == "left\tright"


def test_an_extension_gokart_does_not_know_is_refused_every_time(tmp_path: Path, settings: Settings) -> None:
    producer = producer_on(tmp_path, settings)
    for _ in range(2):  # gokart's assertion (a KeyError under python -O); nothing remembered
        with pytest.raises((AssertionError, KeyError), match=r"\.nope"):
            producer.make_target("e.nope")


def test_a_tasks_own_store_index_in_feather_picks_its_processor(tmp_path: Path, settings: Settings) -> None:
    with_index = producer_on(tmp_path, settings).make_target("f.feather")
    without_index = producer_on(tmp_path, settings, store_index_in_feather=False).make_target("f.feather")
    assert processor_of(with_index)._store_index_in_feather is True  # type: ignore[attr-defined]
    assert processor_of(without_index)._store_index_in_feather is False  # type: ignore[attr-defined]


class Declared(locked_targets.TaskOnKart[int]):
    first: int = luigi.IntParameter(default=1)
    second: str = luigi.Parameter(default="second")


class Redeclared(Declared):
    second = "a plain attribute hides the base's parameter"
    first: int = luigi.IntParameter(default=10)
    third: int = luigi.IntParameter(default=3)


class GivesAParameter:
    """A descriptor that a class reads as a parameter it holds."""

    def __init__(self) -> None:
        self.parameter = luigi.IntParameter(default=5)

    def __get__(self, instance: object, owner: type) -> Any:
        return self.parameter


class Unusual(locked_targets.TaskOnKart[int]):
    zeta: str = luigi.Parameter(default="zeta")
    alpha = zeta  # one parameter, two names: luigi orders them by name
    given = GivesAParameter()
    task_family = luigi.Parameter(default="luigi's metaclass property answers for this name")


def found_by_luigi(task_class: type[luigi.Task]) -> list[tuple[str, luigi.Parameter[Any]]]:
    found: list[tuple[str, luigi.Parameter[Any]]] = luigi.Task.get_params.__func__(task_class)  # type: ignore[attr-defined]
    return found


@pytest.mark.parametrize("task_class", [Declared, Redeclared, Unusual, Producer, Consumer])
def test_a_tasks_parameters_are_those_luigi_finds(task_class: type[locked_targets.TaskOnKart[Any]]) -> None:
    assert task_class.get_params() == found_by_luigi(task_class)


def test_a_plain_attribute_hides_a_bases_parameter_as_in_luigi() -> None:
    assert "second" not in dict(Redeclared.get_params())
    assert Redeclared(third=30).to_str_params()["first"] == "10"  # type: ignore[no-untyped-call]


def test_a_parameter_a_class_gains_later_is_found() -> None:
    assert "added" not in dict(Redeclared.get_params())  # read, and remembered, before it changes
    Redeclared.added = luigi.IntParameter(default=4)  # type: ignore[attr-defined]
    try:
        assert ("added", Redeclared.added) in Redeclared.get_params()  # type: ignore[attr-defined]
    finally:
        del Redeclared.added  # type: ignore[attr-defined]
    assert "added" not in dict(Redeclared.get_params())


def test_a_base_classs_change_is_seen_by_its_subclasses() -> None:
    assert Redeclared.get_params() == found_by_luigi(Redeclared)
    replaced = Declared.__dict__["second"]
    Declared.gained = luigi.Parameter(default="gained")  # type: ignore[attr-defined]
    Declared.second = luigi.Parameter(default="replaced")
    try:
        assert ("gained", Declared.gained) in Redeclared.get_params()  # type: ignore[attr-defined]
        assert Declared.get_params() == found_by_luigi(Declared)
        assert dict(Declared.get_params())["second"] is not replaced
    finally:
        del Declared.gained  # type: ignore[attr-defined]
        Declared.second = replaced
    assert Redeclared.get_params() == found_by_luigi(Redeclared)
    assert dict(Declared.get_params())["second"] is replaced


class Answers:
    """A descriptor whose answer its owner may change: luigi reads it anew every time."""

    def __init__(self) -> None:
        self.answer: object = "not a parameter yet"

    def __get__(self, instance: object, owner: type) -> object:
        return self.answer


class AnswersLater(locked_targets.TaskOnKart[int]):
    varying = Answers()


def test_a_descriptor_is_asked_again_every_time() -> None:
    assert "varying" not in dict(AnswersLater.get_params())
    descriptor = AnswersLater.__dict__["varying"]
    parameter: luigi.Parameter[str] = luigi.Parameter(default="now one")  # type: ignore[assignment]
    descriptor.answer = parameter
    assert ("varying", parameter) in AnswersLater.get_params()
    assert AnswersLater.get_params() == found_by_luigi(AnswersLater)


class ArrayLike:
    """A value whose ``==`` answers with no truth value, as a NumPy array's does."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("the truth value of an array is ambiguous")

    __hash__ = object.__hash__


def test_an_attribute_replaced_by_one_whose_equality_fails_is_a_change() -> None:
    Declared.table = ArrayLike()  # type: ignore[attr-defined]
    try:
        assert Declared.get_params() == found_by_luigi(Declared)
        Declared.table = ArrayLike()  # type: ignore[attr-defined]
        assert Declared.get_params() == found_by_luigi(Declared)
    finally:
        del Declared.table  # type: ignore[attr-defined]


class PolarsLike:
    """Named as gokart recognises a polars DataFrame (polars itself is not installed here)."""


PolarsLike.__module__ = "polars.dataframe.frame"
PolarsLike.__name__ = PolarsLike.__qualname__ = "DataFrame"
U = TypeVar("U")


class PolarsProducer(locked_targets.TaskOnKart[PolarsLike]):
    pass


class GenericProducer(locked_targets.TaskOnKart[U]):
    pass


class BoundProducer(GenericProducer[PolarsLike]):
    pass


@pytest.mark.parametrize("task_class", [PolarsProducer, BoundProducer, GenericProducer, Producer, Consumer])
def test_a_task_classs_dataframe_type_is_gokarts(task_class: type[locked_targets.TaskOnKart[Any]]) -> None:
    assert _dataframe_type_of(task_class) == get_dataframe_type_from_task(task_class)


class ForgottenWhileLoading(ThroughAnother):
    """Loads through another processor, after making Redis forget the reader (as a restart would)."""

    def __init__(self, inner: FileProcessor, forget: Callable[[], object]) -> None:
        super().__init__(inner)
        self._forget = forget

    def load(self, file: Any) -> Any:
        self._forget()
        return super().load(file)


def test_a_load_whose_lease_redis_forgot_raises_lock_lost_once_a_renewal_has_told(
    tmp_path: Path, settings: Settings, redis_client: redis.Redis
) -> None:
    cold = dataclasses.replace(settings, shared_lease_idle_seconds=0, lease_seconds=1.0)
    path = str(tmp_path / "x.pkl")
    locked_target(path, cold).dump("x")
    readers = lock_key_for(path, cold).readers

    def forget_for_longer_than_a_renewal_interval() -> None:
        redis_client.delete(readers)
        time.sleep(cold.lease_seconds)

    processor = ForgottenWhileLoading(make_file_processor(path), forget_for_longer_than_a_renewal_interval)
    target = make_target(path, processor=processor, settings=cold)
    with pytest.raises(LockLost, match="no longer knew this holder"):
        target.load()


class RecordsFencingToken(ThroughAnother):
    """Dumps through another processor and records the fencing token it was given."""

    def __init__(self, inner: FileProcessor) -> None:
        super().__init__(inner)
        self.tokens: list[int | None] = []

    def dump(self, obj: Any, file: Any) -> None:
        self.tokens.append(locked_targets.current_fencing_token())
        super().dump(obj, file)


def test_a_dump_can_read_its_growing_fencing_token(tmp_path: Path, settings: Settings) -> None:
    path = str(tmp_path / "x.pkl")
    processor = RecordsFencingToken(make_file_processor(path))
    target = make_target(path, processor=processor, settings=settings)
    target.dump("first")
    target.remove()
    target.dump("second")
    first, second = processor.tokens
    assert first is not None
    assert second is not None
    assert second > first
    assert locked_targets.current_fencing_token() is None


@pytest.fixture(params=["local", "s3"])
def cache_without_redis(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, Settings]:
    """A cache root and settings without Redis: on local disk, or in a bucket of moto's S3 server."""
    if request.param == "local":
        return str(tmp_path / "cache"), Settings()
    s3_endpoint: str = request.getfixturevalue("s3_endpoint")
    # gokart's own S3 client, too, talks only to moto (the child process inherits this).
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return request.getfixturevalue("s3_root"), Settings(s3_endpoint_url=s3_endpoint)


def test_a_wrapped_gokart_target_publishes_create_if_absent(
    cache_without_redis: tuple[str, Settings], tmp_path: Path
) -> None:
    """A writer that found no file, then another publishes: the first one's publish is refused.

    Without Redis both writers pass the existence check, as a writer that lost its lock
    without noticing would; only the storage can then keep the first object.
    """
    root, settings = cache_without_redis
    path = f"{root}/x.pkl"
    paused, resume = str(tmp_path / "paused"), str(tmp_path / "resume")
    first_writer = SPAWN.Process(
        target=dump_pausing_before_publishing, args=(path, settings, "stale writer", paused, resume)
    )
    first_writer.start()
    try:
        wait_for_file(paused)
        wrapped_gokart_target(path, settings).dump("published first")
    finally:
        Path(resume).touch()
        first_writer.join(timeout=60)
    assert first_writer.exitcode == 0
    assert wrapped_gokart_target(path, settings).load() == "published first"


def foreign_model_target(directory: Path) -> gokart.target.TargetOnKart:
    """gokart's own model target: one locked_targets cannot rebuild."""
    return gokart.target.make_model_target(
        str(directory / "model.zip"), str(directory / "tmp"), save_frame, load_frame
    )


def test_a_target_that_cannot_be_rebuilt_is_kept_and_warned_of_once(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locked_targets.target, "_warned", Once())
    models = [foreign_model_target(tmp_path / "a"), foreign_model_target(tmp_path / "b")]
    with caplog.at_level(logging.WARNING, logger="locked_targets"):
        wrapped = [LockedTarget(model, settings=settings) for model in models]
    assert [each.wrapped for each in wrapped] == models
    warnings = [record.getMessage() for record in caplog.records if "cannot publish" in record.getMessage()]
    assert len(warnings) == 1
    assert "ModelTarget" in warnings[0]


def test_targets_locked_targets_built_are_wrapped_without_a_warning(
    tmp_path: Path, settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locked_targets.target, "_warned", Once())
    with caplog.at_level(logging.WARNING, logger="locked_targets"):
        single = locked_target(str(tmp_path / "x.pkl"), settings)
        LockedTarget(single.wrapped, settings=settings)
        frame_model_target(str(tmp_path / "model.zip"), str(tmp_path / "tmp"), settings)
    assert [record.getMessage() for record in caplog.records] == []


def test_building_a_target_connects_to_no_redis_until_the_target_is_used(
    tmp_path: Path, settings: Settings
) -> None:
    # A database of its own gives this test a Redis URL no other test has connected to.
    unused_url = urllib.parse.urlsplit(str(settings.redis_url))._replace(path="/11").geturl()
    unused = dataclasses.replace(settings, redis_url=unused_url)
    connections = len(locked_targets.locks._connections.values())
    target = locked_target(str(tmp_path / "x.pkl"), unused)
    assert len(locked_targets.locks._connections.values()) == connections
    target.exists()
    assert len(locked_targets.locks._connections.values()) == connections + 1


def test_a_target_builds_its_lock_once_and_keeps_it(tmp_path: Path, settings: Settings) -> None:
    target = locked_target(str(tmp_path / "x.pkl"), settings)
    target.dump("kept")
    lock = target._file_lock()
    assert target.load() == "kept"
    assert target._file_lock() is lock


def test_a_local_dump_writes_its_file_while_its_lock_is_asked_for(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    skip_unless_unnamed_files_in(tmp_path)
    settings = Settings(redis_url=private_redis.url, key_prefix="written-ahead:", lease_seconds=30)
    path = tmp_path / "cache" / "x.pkl"  # its directory too is made ahead
    value = "written" * 10_000
    observer = redis.Redis.from_url(private_redis.url)
    dumper = SPAWN.Process(target=dump_value, args=(str(path), settings, value))
    with writes_paused(observer):
        dumper.start()
        assert dumper.pid is not None
        deadline = time.monotonic() + 60
        # The whole object, in a file no one can see, while the lock request waits in Redis.
        while not (
            requests_held_back(observer)
            and path.parent.exists()
            and any(size > len(value) for size in unnamed_file_sizes(dumper.pid, path.parent))
        ):
            assert time.monotonic() < deadline, "the dump never wrote its file while its lock request waited"
            time.sleep(0.01)
        assert not path.exists()
    dumper.join(timeout=60)
    assert dumper.exitcode == 0
    assert locked_target(str(path), settings).load() == value
    observer.close()


def when_a_file_is_written_ahead_in(directory: Path, then: Callable[[], object]) -> Callable[[], None]:
    """Watch, in a thread, for this process to hold an unnamed file open in ``directory`` (up to
    30 s), one a dump writes ahead of its lock, then run ``then``; the function returned waits for
    the watch, and fails as it failed."""
    failures: list[BaseException] = []

    def watch() -> None:
        try:
            deadline = time.monotonic() + 30
            while not unnamed_files_open(os.getpid(), directory):
                assert time.monotonic() < deadline, "the dump never wrote a file ahead of its lock"
                time.sleep(0.005)
            then()
        except BaseException as failure:
            failures.append(failure)

    watcher = threading.Thread(target=watch)
    watcher.start()

    def watched() -> None:
        watcher.join()
        if failures:
            raise failures[0]

    return watched


def test_a_dump_that_skips_lets_go_of_the_file_it_wrote_ahead(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    skip_unless_unnamed_files_in(tmp_path)
    settings = Settings(redis_url=private_redis.url, key_prefix="skips:", lease_seconds=30)
    path = str(tmp_path / "x.pkl")
    observer = redis.Redis.from_url(private_redis.url)
    second = locked_target(path, settings)

    def first_published_meanwhile() -> None:
        Path(path).write_bytes(pickle.dumps("first"))  # another application, while this one waits
        observer.client_unpause()

    with writes_paused(observer):
        watched = when_a_file_is_written_ahead_in(tmp_path, first_published_meanwhile)
        second.dump("second")  # its lock request waits in Redis until the watch sees its file open
        watched()
    assert unnamed_files_open(os.getpid(), tmp_path) == []  # the file exists: the dump skipped
    assert second.load() == "first"
    observer.close()


def test_a_dump_that_times_out_lets_go_of_the_file_it_wrote_ahead(tmp_path: Path, settings: Settings) -> None:
    skip_unless_unnamed_files_in(tmp_path)
    path = str(tmp_path / "x.pkl")
    hold_in_another_process(path, settings, "write", seconds=5.0)
    watched = when_a_file_is_written_ahead_in(tmp_path, lambda: None)
    impatient = locked_target(path, dataclasses.replace(settings, wait_timeout_seconds=1.0))
    with pytest.raises(LockTimeout):
        impatient.dump("x")
    watched()
    assert unnamed_files_open(os.getpid(), tmp_path) == []


def test_a_dump_whose_directory_is_removed_while_it_waits_publishes_into_it_made_again(
    tmp_path: Path, settings: Settings
) -> None:
    skip_unless_unnamed_files_in(tmp_path)
    directory = tmp_path / "cache"
    directory.mkdir()
    path = str(directory / "x.pkl")
    hold_in_another_process(path, settings, "write", seconds=5.0)
    watched = when_a_file_is_written_ahead_in(directory, lambda: shutil.rmtree(directory))
    target = locked_target(path, settings)
    target.dump("x")  # waits for the holder's lock, its file written meanwhile
    watched()
    assert target.load() == "x"


class _RefusesPickling:
    def __reduce__(self) -> str:
        raise TypeError("this object refuses to be pickled")


def test_a_dump_whose_object_fails_to_serialize_publishes_nothing_and_gives_its_lock_back(
    tmp_path: Path, settings: Settings
) -> None:
    skip_unless_unnamed_files_in(tmp_path)
    path = str(tmp_path / "x.pkl")
    with pytest.raises(TypeError, match="refuses to be pickled"):
        locked_target(path, settings).dump(_RefusesPickling())
    assert not os.path.exists(path)
    assert unnamed_files_open(os.getpid(), tmp_path) == []
    # Given back, not left to its 30 s lease: another application's dump gets the lock at once.
    other = SPAWN.Process(
        target=dump_value, args=(path, dataclasses.replace(settings, wait_timeout_seconds=1.0), "next")
    )
    other.start()
    other.join(timeout=60)
    assert other.exitcode == 0
    assert locked_target(path, settings).load() == "next"


def test_a_dump_onto_a_file_there_already_skips_without_serializing_its_object(
    tmp_path: Path, settings: Settings
) -> None:
    path = str(tmp_path / "x.pkl")
    locked_target(path, settings).dump("first")
    locked_target(path, settings).dump(_RefusesPickling())  # gokart's skip: never serialized
    assert locked_target(path, settings).load() == "first"
    assert unnamed_files_open(os.getpid(), tmp_path) == []


def test_a_file_written_ahead_is_refused_at_its_commit_if_the_name_was_taken_meanwhile(
    tmp_path: Path,
) -> None:
    skip_unless_unnamed_files_in(tmp_path)
    path = str(tmp_path / "x.pkl")
    processor = make_file_processor(path)
    target = WriteOnceLocalTarget(path, format=processor.format())  # type: ignore[no-untyped-call]

    def written_under_a_lock() -> None:
        pytest.fail("the file was written ahead: nothing is written again")

    with WrittenAhead(target, written_under_a_lock, functools.partial(processor.dump, "ahead")) as ahead:
        assert ahead.meanwhile is not None
        ahead.meanwhile()
        assert len(unnamed_files_open(os.getpid(), tmp_path)) == 1
        Path(path).write_bytes(b"another writer's")  # a stale writer published first
        with pytest.raises(CommitRefused):
            ahead.publish()
    assert Path(path).read_bytes() == b"another writer's"
    assert unnamed_files_open(os.getpid(), tmp_path) == []


class _DumpsAndCounts(StorageFileTarget):
    """A storage target whose own ``_dump`` does more than gokart's write (as gokart's GCS target does)."""

    dumps = 0

    def _dump(self, obj: Any, *args: Any, **kwargs: Any) -> None:
        type(self).dumps += 1
        super()._dump(obj, *args, **kwargs)


def test_a_target_whose_own_dump_does_more_is_written_through_it(tmp_path: Path, settings: Settings) -> None:
    path = str(tmp_path / "x.pkl")
    kind = storage_kind_for(path)
    processor = make_file_processor(path)
    inner = _DumpsAndCounts(
        kind.file_system_target(path, processor.format(), settings), processor, kind, settings
    )
    LockedTarget(inner, settings=settings).dump("x")
    assert _DumpsAndCounts.dumps == 1
    assert locked_target(path, settings).load() == "x"
