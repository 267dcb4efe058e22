"""The S3 and GCS storage kinds against real servers: gokart targets, zip clients, atomic writes."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import gcsfs.core
import luigi.format
import pandas as pd
import pytest
from gokart.file_processor import make_file_processor
from gokart.target import TargetOnKart

from helpers.object_stores import GCS_PROJECT, GCS_TOKEN, independent_gcs
from locked_targets.settings import Settings
from locked_targets.storage import storage_kind_for

MEBIBYTE = 2**20
LARGE_OBJECT_BYTES = 12 * MEBIBYTE  # above S3's multipart and gcsfs's resumable-upload thresholds
CLOCK_TOLERANCE = timedelta(seconds=2)  # moto keeps modification times to the second


@dataclasses.dataclass(frozen=True)
class Store:
    """One object store under test: a fresh bucket, settings that reach it, and a view from another client."""

    root: str
    settings: Settings
    exists_elsewhere: Callable[[str], bool]

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"


def s3_object_exists(endpoint: str, path: str) -> bool:
    bucket, key = path.removeprefix("s3://").split("/", 1)
    listing = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket, Prefix=key)
    return any(item["Key"] == key for item in listing.get("Contents", []))


@pytest.fixture
def s3_store(s3_endpoint: str, s3_root: str, s3_settings: Settings) -> Store:
    return Store(s3_root, s3_settings, lambda path: s3_object_exists(s3_endpoint, path))


@pytest.fixture
def gcs_store(gcs_endpoint: str, gcs_root: str, gcs_settings: Settings) -> Store:
    return Store(gcs_root, gcs_settings, lambda path: bool(independent_gcs(gcs_endpoint).exists(path)))


@pytest.fixture(params=["s3", "gcs"])
def store(request: pytest.FixtureRequest) -> Store:
    chosen: Store = request.getfixturevalue(f"{request.param}_store")
    return chosen


def single_file_target(path: str, settings: Settings) -> TargetOnKart:
    return storage_kind_for(path).single_file_target(path, make_file_processor(path), settings)


def read_tree(directory: Path) -> dict[str, bytes]:
    return {
        str(file.relative_to(directory)): file.read_bytes() for file in directory.rglob("*") if file.is_file()
    }


def write_then_fail(target: luigi.target.FileSystemTarget) -> None:
    with target.open("w") as writer:  # type: ignore[no-untyped-call]
        writer.write(os.urandom(MEBIBYTE))
        raise RuntimeError("the writer failed")


def test_pickled_object_round_trips(store: Store) -> None:
    target = single_file_target(store.path("object.pkl"), store.settings)
    target.dump({"answer": 42, "items": [1, 2, 3]})
    assert target.load() == {"answer": 42, "items": [1, 2, 3]}


def test_dataframe_round_trips_as_csv(store: Store) -> None:
    frame = pd.DataFrame({"number": [1, 2, 3], "word": ["one", "two", "three"]})
    target = single_file_target(store.path("frame.csv"), store.settings)
    target.dump(frame)
    pd.testing.assert_frame_equal(target.load(), frame)


def test_target_exists_once_dumped(store: Store) -> None:
    target = single_file_target(store.path("object.pkl"), store.settings)
    assert not target.exists()
    target.dump("value")
    assert target.exists()


def test_removed_target_no_longer_exists(store: Store) -> None:
    target = single_file_target(store.path("object.pkl"), store.settings)
    target.dump("value")
    target.remove()
    assert not target.exists()
    assert not store.exists_elsewhere(target.path())


def test_multi_megabyte_object_round_trips_intact(store: Store) -> None:
    payload = os.urandom(LARGE_OBJECT_BYTES)
    target = single_file_target(store.path("large.pkl"), store.settings)
    target.dump(payload)
    assert target.load() == payload


@pytest.mark.parametrize("path", ["s3://bucket/a//b/./c/../d.pkl", "gs://bucket/a//b/./c/../d.pkl"])
def test_identity_keeps_keys_literal(path: str) -> None:
    assert storage_kind_for(path).identity(path) == path


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("s3:///key.pkl", "S3 path 's3:///key.pkl' has no bucket: expected s3://bucket/key"),
        ("gs:///key.pkl", "GCS path 'gs:///key.pkl' has no bucket: expected gs://bucket/object"),
    ],
)
def test_identity_rejects_a_path_without_bucket(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        storage_kind_for(path).identity(path)


def test_s3_keys_differing_only_in_dot_segments_are_different_objects(s3_store: Store) -> None:
    names = ["a/b.pkl", "a/./b.pkl", "a//b.pkl"]
    for name in names:
        single_file_target(s3_store.path(name), s3_store.settings).dump(name)
    assert [single_file_target(s3_store.path(name), s3_store.settings).load() for name in names] == names


def test_last_modification_time_is_when_the_object_was_written(store: Store) -> None:
    target = single_file_target(store.path("object.pkl"), store.settings)
    before = datetime.now(timezone.utc)
    target.dump("value")
    after = datetime.now(timezone.utc)
    assert before - CLOCK_TOLERANCE <= target.last_modification_time() <= after + CLOCK_TOLERANCE


def test_last_modification_time_of_a_missing_object_is_file_not_found(store: Store) -> None:
    target = single_file_target(store.path("missing.pkl"), store.settings)
    with pytest.raises(FileNotFoundError):
        target.last_modification_time()


def test_zip_client_round_trips_a_directory(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "nested").mkdir(parents=True)
    (source / "model.pkl").write_bytes(os.urandom(MEBIBYTE))
    (source / "nested" / "load_function.pkl").write_bytes(b"load")
    path = store.path("model.zip")
    kind = storage_kind_for(path)
    kind.zip_client(path, str(source), store.settings).make_archive()
    destination = tmp_path / "destination"
    kind.zip_client(path, str(destination), store.settings).unpack_archive()
    assert read_tree(destination) == read_tree(source)


def test_zip_client_leaves_no_temporary_archive(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "model.pkl").write_bytes(b"model")
    path = store.path("model.zip")
    kind = storage_kind_for(path)
    kind.zip_client(path, str(source), store.settings).make_archive()
    kind.zip_client(path, str(tmp_path / "destination"), store.settings).unpack_archive()
    assert sorted(os.listdir(tmp_path)) == ["destination", "source"]


def test_zip_client_archive_exists_until_removed(store: Store, tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"model")
    path = store.path("model.zip")
    client = storage_kind_for(path).zip_client(path, str(tmp_path), store.settings)
    assert not client.exists()
    client.make_archive()
    assert client.exists()
    client.remove()
    assert not client.exists()


def test_zip_client_refuses_to_archive_a_missing_directory(store: Store, tmp_path: Path) -> None:
    path = store.path("model.zip")
    client = storage_kind_for(path).zip_client(path, str(tmp_path / "missing"), store.settings)
    with pytest.raises(FileNotFoundError, match="is not found"):
        client.make_archive()


def test_object_is_invisible_until_its_writer_closes(store: Store) -> None:
    path = store.path("being-written.bin")
    target = storage_kind_for(path).file_system_target(path, luigi.format.Nop, store.settings)
    writer = target.open("w")  # type: ignore[no-untyped-call]
    writer.write(os.urandom(LARGE_OBJECT_BYTES))
    assert not store.exists_elsewhere(path)
    writer.close()
    assert store.exists_elsewhere(path)


def test_failed_write_publishes_nothing(store: Store) -> None:
    path = store.path("failed.bin")
    target = storage_kind_for(path).file_system_target(path, luigi.format.Nop, store.settings)
    with pytest.raises(RuntimeError, match="the writer failed"):
        write_then_fail(target)
    assert not store.exists_elsewhere(path)


def test_gcs_exists_is_not_answered_from_a_stale_listing(gcs_store: Store, gcs_endpoint: str) -> None:
    path = gcs_store.path("directory/object.bin")
    target = storage_kind_for(path).file_system_target(path, luigi.format.Nop, gcs_store.settings)
    other_process = independent_gcs(gcs_endpoint)
    other_process.pipe_file(gcs_store.path("directory/neighbour.bin"), b"")
    # The process-wide gcsfs instance behind the GCS kind now caches a listing without the object.
    gcsfs.core.GCSFileSystem(endpoint_url=gcs_endpoint, token=GCS_TOKEN, project=GCS_PROJECT).ls(
        gcs_store.path("directory")
    )
    other_process.pipe_file(path, b"written elsewhere")
    assert target.exists()  # type: ignore[no-untyped-call]
    other_process.rm(path)
    assert not target.exists()  # type: ignore[no-untyped-call]


def test_gcs_dump_stores_gokart_labels_as_object_metadata(gcs_store: Store, gcs_endpoint: str) -> None:
    path = gcs_store.path("labelled.pkl")
    single_file_target(path, gcs_store.settings).dump(
        "value", task_params={"path": "data/input.csv", "rows": "3"}, custom_labels={"team": "cache"}
    )
    metadata = independent_gcs(gcs_endpoint).info(path)["metadata"]
    assert metadata == {"path": "data/input.csv", "rows": "3", "team": "cache"}
