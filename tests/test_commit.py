"""The write-once commit on every storage kind: a dump publishes create-if-absent, after its guard agrees.

Local files and S3 (moto's server enforces ``If-None-Match: *``) are tested as they are.
gcp-storage-emulator ignores ``ifGenerationMatch``, so GCS is tested through
``PreconditionFront``: a small HTTP front that records what each upload asks for and answers
412, as GCS does, when an upload with ``ifGenerationMatch=0`` names an object the emulator
already has. What it shows is that uploads send the precondition and that a 412 becomes
``CommitRefused``; that GCS itself enforces it is GCS's documented behaviour, not tested here.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import http.client
import http.server
import json
import logging
import os
import random
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import boto3
import luigi.format
import pandas
import pytest
from gokart.file_processor import make_file_processor

import locked_targets.storage.local
from helpers.object_stores import GCS_PROJECT, GCS_TOKEN, HOST, independent_gcs
from helpers.s3_uploads import leave_unfinished_upload, unfinished_uploads
from helpers.unnamed_files import skip_unless_unnamed_files_in
from locked_targets.errors import CommitRefused, LockLost
from locked_targets.locks import lock_key_for
from locked_targets.process_state import Once
from locked_targets.settings import Settings
from locked_targets.storage import storage_kind_for
from locked_targets.storage.commit import FENCING_TOKEN_METADATA_KEY, CommitGuard, guarded_by

MEBIBYTE = 2**20
LARGE_OBJECT_BYTES = 12 * MEBIBYTE  # an S3 multipart upload, a GCS resumable upload
O_TMPFILE = getattr(os, "O_TMPFILE", 0)
SIZES = pytest.mark.parametrize("size", [1024, LARGE_OBJECT_BYTES], ids=["small", "large"])
FENCED = CommitGuard(check=lambda: None, fencing_token=7)
"""The guard of a dump that holds its target's exclusive lock."""
WITHOUT_REDIS = CommitGuard(check=lambda: None, fencing_token=None)
"""The guard of a ``LockedTarget``'s dump when no Redis is configured: no lock, no token."""
_HOP_BY_HOP_HEADERS = {"connection", "content-length", "keep-alive", "transfer-encoding"}


class PreconditionFront:
    """GCS's ``ifGenerationMatch=0`` in front of an emulator that ignores it; records every upload's query."""

    def __init__(self, emulator: str) -> None:
        self.upload_queries: list[dict[str, list[str]]] = []
        self._emulator = urlsplit(emulator).netloc
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one(self) -> None:
                front._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test output is for the tests."""

        self._server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length", 0)))
        path, _, query_string = request.path.partition("?")
        query = parse_qs(query_string)
        if path.startswith("/upload/"):
            self.upload_queries.append(query)
            if query.get("ifGenerationMatch") == ["0"] and self._exists(path, query, body):
                self._reply(request, 412, {}, _PRECONDITION_FAILED)
                return
        status, headers, reply = self._forward(request.command, request.path, dict(request.headers), body)
        self._reply(request, status, headers, reply)

    def _exists(self, upload_path: str, query: dict[str, list[str]], body: bytes) -> bool:
        bucket = upload_path.split("/b/", 1)[1].split("/", 1)[0]
        # A resumable upload names its object in the query, a single-request one in its first part.
        name = (
            query["name"][0]
            if "name" in query
            else json.loads(body.split(b"\n\n", 1)[1].split(b"\n--")[0])["name"]
        )
        status, _headers, _reply = self._forward(
            "GET", f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}", {}, b""
        )
        return status == 200

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(self._emulator, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    @staticmethod
    def _reply(
        request: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        request.send_response(status)
        for name, value in headers.items():
            if name.lower() not in _HOP_BY_HOP_HEADERS:
                request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)


_PRECONDITION_FAILED = json.dumps(
    {
        "error": {
            "code": 412,
            "message": "At least one of the pre-conditions you specified did not hold.",
            "errors": [{"domain": "global", "reason": "conditionNotMet", "locationType": "header"}],
        }
    }
).encode()


@dataclasses.dataclass(frozen=True)
class Storage:
    """One storage kind under test: a fresh root, settings that reach it, and another client's view of it."""

    root: str
    settings: Settings
    read: Callable[[str], bytes]
    """The object's bytes as another process would read them; FileNotFoundError if there is none."""
    metadata: Callable[[str], dict[str, str]]

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def exists(self, path: str) -> bool:
        try:
            self.read(path)
        except FileNotFoundError:
            return False
        return True


def no_metadata(path: str) -> dict[str, str]:
    return {}


def s3_object(endpoint: str, path: str) -> dict[str, Any]:
    bucket, key = path.removeprefix("s3://").split("/", 1)
    client = boto3.client("s3", endpoint_url=endpoint)
    try:
        found = client.get_object(Bucket=bucket, Key=key)
    except client.exceptions.NoSuchKey as error:
        raise FileNotFoundError(path) from error
    return dict(found)


@pytest.fixture
def staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temporary directory, private to this test, so leftover temporary files can be seen."""
    directory = tmp_path / "staging"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.fixture
def gcs_front(gcs_endpoint: str) -> Iterator[PreconditionFront]:
    front = PreconditionFront(gcs_endpoint)
    yield front
    front.stop()


@pytest.fixture
def local_storage(tmp_path: Path, staging: Path) -> Storage:
    return Storage(str(tmp_path / "cache"), Settings(), lambda path: Path(path).read_bytes(), no_metadata)


@pytest.fixture
def named_local_storage(local_storage: Storage, monkeypatch: pytest.MonkeyPatch) -> Storage:
    """Local files where the kernel makes no unnamed files (NFS, most FUSE): dumps stage a named file.

    ``open(O_TMPFILE)`` fails as it fails there (no such mount here); every other open is real.
    """
    if not O_TMPFILE:
        return local_storage  # no O_TMPFILE on this platform: every local dump stages a named file
    really_open = os.open

    def open_refusing_unnamed_files(path: str, flags: int, *arguments: Any, **directory: Any) -> int:
        if flags & O_TMPFILE == O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported", path)
        return really_open(path, flags, *arguments, **directory)

    monkeypatch.setattr(os, "open", open_refusing_unnamed_files)
    return local_storage


@pytest.fixture
def s3_storage(s3_endpoint: str, s3_root: str, s3_settings: Settings, staging: Path) -> Storage:
    return Storage(
        s3_root,
        s3_settings,
        lambda path: bytes(s3_object(s3_endpoint, path)["Body"].read()),
        lambda path: dict(s3_object(s3_endpoint, path)["Metadata"]),
    )


@pytest.fixture
def gcs_storage(gcs_endpoint: str, gcs_root: str, gcs_front: PreconditionFront, staging: Path) -> Storage:
    return Storage(
        gcs_root,
        Settings(gcs_endpoint_url=gcs_front.url, gcs_token=GCS_TOKEN, gcs_project=GCS_PROJECT),
        lambda path: bytes(independent_gcs(gcs_endpoint).cat_file(path)),
        lambda path: dict(independent_gcs(gcs_endpoint).info(path).get("metadata") or {}),
    )


@pytest.fixture(params=["local", "named_local", "s3", "gcs"])
def storage(request: pytest.FixtureRequest) -> Storage:
    chosen: Storage = request.getfixturevalue(f"{request.param}_storage")
    return chosen


@pytest.fixture(params=["named_local", "s3", "gcs"])
def staging_storage(request: pytest.FixtureRequest) -> Storage:
    """A storage whose dumps write a named temporary file before the commit."""
    chosen: Storage = request.getfixturevalue(f"{request.param}_storage")
    return chosen


@pytest.fixture(params=["local", "named_local"])
def any_local_storage(request: pytest.FixtureRequest) -> Storage:
    chosen: Storage = request.getfixturevalue(f"{request.param}_storage")
    return chosen


@pytest.fixture(params=["s3", "gcs"])
def object_store(request: pytest.FixtureRequest) -> Storage:
    chosen: Storage = request.getfixturevalue(f"{request.param}_storage")
    return chosen


def writer(path: str, settings: Settings) -> Any:
    """An open writer of the raw bytes of ``path``: what a gokart dump writes through."""
    return storage_kind_for(path).file_system_target(path, luigi.format.Nop, settings).open("w")  # type: ignore[no-untyped-call]


def publish(path: str, payload: bytes, settings: Settings) -> None:
    with writer(path, settings) as file:
        file.write(payload)


def publish_archive(path: str, source: Path, settings: Settings) -> None:
    storage_kind_for(path).zip_client(path, str(source), settings).make_archive()


def directory_with(tmp_path: Path, name: str, payload: bytes) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "model.pkl").write_bytes(payload)
    return directory


def temporary_files(tmp_path: Path) -> list[Path]:
    """Files a publish stages: beside the final file, in the temporary directory, beside the source."""
    return [*tmp_path.rglob(".locked_targets-*"), *tmp_path.glob("*.zip")]


def staging_directory_of(path: str) -> str:
    """The name of the directory where locked dumps of ``path`` stage: named after its lock."""
    digest = lock_key_for(path, Settings()).base.rpartition("{")[2].rstrip("}")
    return f".locked_targets-{digest}.publish"


def stale_writer(path: str, settings: Settings) -> Any:
    """A locked writer that has written its data and lost its lock: its commit is yet to come.

    Every writer opened after it in the same guard is a later holder of the lock.
    """
    stale = writer(path, settings)
    stale.write(b"stale")
    return stale


def half_written(path: str, settings: Settings) -> Any:
    """A writer that has written b"half", flushed, and not closed."""
    half = writer(path, settings)
    half.write(b"half")
    half.flush()
    return half


def stale_and_live_writers(path: str, settings: Settings) -> tuple[Any, Any]:
    """A stale writer yet to commit, and the next holder's writer, which has written b"li" so far."""
    stale = stale_writer(path, settings)
    live = writer(path, settings)
    live.write(b"li")
    live.flush()
    return stale, live


def fail_while_writing(path: str, settings: Settings) -> None:
    with writer(path, settings) as file:
        file.write(b"half")
        raise RuntimeError("the writer failed")


def lock_lost(path: str) -> None:
    raise LockLost(lock_key="test:lock", path=path, reason="renewal failed", lost_at="12:00:00")


def test_first_publish_of_a_name_succeeds(storage: Storage) -> None:
    path = storage.path("object.bin")
    publish(path, b"payload", storage.settings)
    assert storage.read(path) == b"payload"


@SIZES
def test_publish_over_an_existing_object_is_refused_and_keeps_it(storage: Storage, size: int) -> None:
    path = storage.path("object.bin")
    first = os.urandom(size)
    publish(path, first, storage.settings)
    with pytest.raises(CommitRefused, match="already exists"):
        publish(path, os.urandom(size), storage.settings)
    assert storage.read(path) == first


def test_refused_publish_leaves_no_temporary_file(storage: Storage, tmp_path: Path) -> None:
    path = storage.path("object.bin")
    publish(path, b"first", storage.settings)
    with pytest.raises(CommitRefused):
        publish(path, b"second", storage.settings)
    assert temporary_files(tmp_path) == []


def test_gokart_dump_after_remove_publishes_again(storage: Storage) -> None:
    path = storage.path("object.pkl")
    target = storage_kind_for(path).single_file_target(path, make_file_processor(path), storage.settings)
    target.dump("first run")
    target.remove()
    target.dump("rerun")
    assert target.load() == "rerun"


def test_two_writers_of_one_seeded_task_stage_in_different_files(storage: Storage) -> None:
    """gokart seeds ``random`` per task; luigi's temporary names from it would make both write one file."""
    path = storage.path("object.bin")
    random.seed(0)
    first = writer(path, storage.settings)
    random.seed(0)
    second = writer(path, storage.settings)
    first.write(b"first")
    second.write(b"second")
    first.close()
    with pytest.raises(CommitRefused):
        second.close()
    assert storage.read(path) == b"first"


def test_a_locked_dump_stages_in_a_directory_named_after_its_lock(staging_storage: Storage) -> None:
    path = staging_storage.path("object.bin")
    with guarded_by(FENCED), writer(path, staging_storage.settings) as file:
        staged_in = os.path.dirname(file.tmp_path)
    assert os.path.basename(staged_in) == staging_directory_of(path)


def test_a_dump_without_a_lock_stages_under_a_random_name(staging_storage: Storage) -> None:
    """Two unlocked writers of one target may run at once: a name of the target's would be shared."""
    path = staging_storage.path("object.bin")
    with guarded_by(WITHOUT_REDIS):
        first = writer(path, staging_storage.settings)
        second = writer(path, staging_storage.settings)
        first.close()
        with pytest.raises(CommitRefused):
            second.close()
    assert first.tmp_path != second.tmp_path
    assert staging_directory_of(path) not in first.tmp_path + second.tmp_path


def test_a_locked_publish_leaves_nothing_staged(storage: Storage, tmp_path: Path) -> None:
    with guarded_by(FENCED):
        publish(storage.path("object.bin"), b"payload", storage.settings)
    assert temporary_files(tmp_path) == []


def test_a_locked_writer_that_raises_leaves_nothing_staged(storage: Storage, tmp_path: Path) -> None:
    path = storage.path("object.bin")
    with guarded_by(FENCED), pytest.raises(RuntimeError, match="the writer failed"):
        fail_while_writing(path, storage.settings)
    assert not storage.exists(path)
    assert temporary_files(tmp_path) == []


def test_a_locked_dump_clears_what_a_dead_writer_staged(staging_storage: Storage, tmp_path: Path) -> None:
    path = staging_storage.path("object.bin")
    with guarded_by(FENCED):
        dead = half_written(path, staging_storage.settings)
        dead.raw.close()  # its process was killed: the file is closed, and never published
        publish(path, b"whole", staging_storage.settings)
    assert not os.path.exists(dead.tmp_path)
    assert temporary_files(tmp_path) == []
    assert staging_storage.read(path) == b"whole"


def test_a_stale_writer_never_publishes_the_live_holders_file(staging_storage: Storage) -> None:
    """A writer paused past its lease whose commit comes while the next holder writes publishes nothing."""
    path = staging_storage.path("object.bin")
    with guarded_by(FENCED):
        stale, live = stale_and_live_writers(path, staging_storage.settings)
        with pytest.raises(FileNotFoundError):
            stale.close()
        assert not staging_storage.exists(path)
        live.write(b"ve")
        live.close()
    assert staging_storage.read(path) == b"live"


def test_a_stale_writer_whose_successor_has_published_is_refused(storage: Storage) -> None:
    path = storage.path("object.bin")
    with guarded_by(FENCED):
        stale = stale_writer(path, storage.settings)
        publish(path, b"successor", storage.settings)
        with pytest.raises(CommitRefused):
            stale.close()
    assert storage.read(path) == b"successor"


@pytest.fixture
def unnamed_local_storage(local_storage: Storage, tmp_path: Path) -> Storage:
    skip_unless_unnamed_files_in(tmp_path)
    return local_storage


def test_a_local_dump_names_nothing_before_its_commit(unnamed_local_storage: Storage, tmp_path: Path) -> None:
    path = unnamed_local_storage.path("object.bin")
    with guarded_by(FENCED), writer(path, unnamed_local_storage.settings) as file:
        file.write(b"payload")
        file.flush()
        assert [*tmp_path.rglob("*.*")] == []
        written = os.fstat(file.fileno())
    assert os.path.samestat(os.stat(path), written), "the file written is the file published, not a copy"
    assert unnamed_local_storage.read(path) == b"payload"


def test_a_local_writer_never_closed_leaves_nothing(unnamed_local_storage: Storage, tmp_path: Path) -> None:
    """What a killed writer leaves: the kernel frees its unnamed file (``tests/faults`` kills one)."""
    path = unnamed_local_storage.path("object.bin")
    with guarded_by(FENCED):
        abandoned = half_written(path, unnamed_local_storage.settings)
        del abandoned
        gc.collect()
        publish(path, b"whole", unnamed_local_storage.settings)
    assert [file.name for file in tmp_path.rglob("*.*")] == ["object.bin"]
    assert unnamed_local_storage.read(path) == b"whole"


def test_a_stale_local_writer_publishes_only_its_own_whole_file(unnamed_local_storage: Storage) -> None:
    """No other writer can reach an unnamed file: the live holder's commit is refused, the stale one stays."""
    path = unnamed_local_storage.path("object.bin")
    with guarded_by(FENCED):
        stale, live = stale_and_live_writers(path, unnamed_local_storage.settings)
        stale.close()
        live.write(b"ve")
        with pytest.raises(CommitRefused):
            live.close()
    assert unnamed_local_storage.read(path) == b"stale"


def test_a_local_file_is_published_where_its_path_names_at_the_commit(
    unnamed_local_storage: Storage, tmp_path: Path
) -> None:
    """As a named file's link: the directory replaced while the file was written is not where it lands."""
    path = unnamed_local_storage.path("object.bin")
    file = half_written(path, unnamed_local_storage.settings)
    os.rename(tmp_path / "cache", tmp_path / "replaced")
    os.mkdir(tmp_path / "cache")
    file.close()
    assert unnamed_local_storage.read(path) == b"half"
    assert [*(tmp_path / "replaced").iterdir()] == []


def test_a_local_parquet_dump_writes_by_name(any_local_storage: Storage) -> None:
    """gokart's parquet and feather processors write to ``file.name``, not through the file."""
    path = any_local_storage.path("frame.parquet")
    target = storage_kind_for(path).single_file_target(
        path, make_file_processor(path), any_local_storage.settings
    )
    with guarded_by(FENCED):
        target.dump(pandas.DataFrame({"column": [1, 2]}))
    assert target.load()["column"].tolist() == [1, 2]


def test_guard_that_raises_stops_the_publish(storage: Storage, tmp_path: Path) -> None:
    path = storage.path("object.bin")
    with guarded_by(CommitGuard(check=lambda: lock_lost(path), fencing_token=3)), pytest.raises(LockLost):
        publish(path, b"stale", storage.settings)
    assert not storage.exists(path)
    assert temporary_files(tmp_path) == []


def test_guard_is_asked_once_when_the_data_is_complete(storage: Storage) -> None:
    path = storage.path("object.bin")
    written: list[bool] = []
    with guarded_by(CommitGuard(check=lambda: written.append(storage.exists(path)), fencing_token=None)):
        file = writer(path, storage.settings)
        file.write(b"payload")
        assert written == []
        file.close()
    assert written == [False]
    assert storage.read(path) == b"payload"


@SIZES
def test_fencing_token_is_recorded_in_the_object_metadata(object_store: Storage, size: int) -> None:
    path = object_store.path("object.bin")
    with guarded_by(FENCED):
        publish(path, os.urandom(size), object_store.settings)
    assert object_store.metadata(path)[FENCING_TOKEN_METADATA_KEY] == "7"


def test_unguarded_publish_records_no_fencing_token(object_store: Storage) -> None:
    path = object_store.path("object.bin")
    publish(path, b"payload", object_store.settings)
    assert FENCING_TOKEN_METADATA_KEY not in object_store.metadata(path)


def test_gcs_labels_are_added_beside_the_fencing_token(gcs_storage: Storage) -> None:
    path = gcs_storage.path("labelled.pkl")
    target = storage_kind_for(path).single_file_target(path, make_file_processor(path), gcs_storage.settings)
    with guarded_by(FENCED):
        target.dump("value", custom_labels={"team": "cache"})
    assert gcs_storage.metadata(path) == {FENCING_TOKEN_METADATA_KEY: "7", "team": "cache"}


@SIZES
def test_gcs_uploads_ask_for_create_if_absent(
    gcs_storage: Storage, gcs_front: PreconditionFront, size: int
) -> None:
    publish(gcs_storage.path("object.bin"), os.urandom(size), gcs_storage.settings)
    assert gcs_front.upload_queries
    assert all(query.get("ifGenerationMatch") == ["0"] for query in gcs_front.upload_queries)


def test_archive_over_an_existing_one_is_refused_and_keeps_it(storage: Storage, tmp_path: Path) -> None:
    path = storage.path("model.zip")
    publish_archive(path, directory_with(tmp_path, "first", b"first model"), storage.settings)
    archived = storage.read(path)
    with pytest.raises(CommitRefused):
        publish_archive(path, directory_with(tmp_path, "second", b"second model"), storage.settings)
    assert storage.read(path) == archived
    assert temporary_files(tmp_path) == []


def test_archive_after_remove_publishes_again(storage: Storage, tmp_path: Path) -> None:
    path = storage.path("model.zip")
    kind = storage_kind_for(path)
    publish_archive(path, directory_with(tmp_path, "first", b"first model"), storage.settings)
    kind.zip_client(path, str(tmp_path / "first"), storage.settings).remove()
    publish_archive(path, directory_with(tmp_path, "second", b"second model"), storage.settings)
    kind.zip_client(path, str(tmp_path / "unpacked"), storage.settings).unpack_archive()
    assert (tmp_path / "unpacked" / "model.pkl").read_bytes() == b"second model"


def test_guard_that_raises_stops_the_archive(storage: Storage, tmp_path: Path) -> None:
    path = storage.path("model.zip")
    with guarded_by(CommitGuard(check=lambda: lock_lost(path), fencing_token=3)), pytest.raises(LockLost):
        publish_archive(path, directory_with(tmp_path, "model", b"model"), storage.settings)
    assert not storage.exists(path)
    assert temporary_files(tmp_path) == []


def test_a_locked_archive_leaves_nothing_staged(storage: Storage, tmp_path: Path) -> None:
    with guarded_by(FENCED):
        publish_archive(
            storage.path("model.zip"), directory_with(tmp_path, "model", b"model"), storage.settings
        )
    assert temporary_files(tmp_path) == []


def test_fencing_token_is_recorded_in_the_archive_metadata(object_store: Storage, tmp_path: Path) -> None:
    path = object_store.path("model.zip")
    with guarded_by(FENCED):
        publish_archive(path, directory_with(tmp_path, "model", b"model"), object_store.settings)
    assert object_store.metadata(path)[FENCING_TOKEN_METADATA_KEY] == "7"


def test_gcs_archive_upload_asks_for_create_if_absent(
    gcs_storage: Storage, gcs_front: PreconditionFront, tmp_path: Path
) -> None:
    publish_archive(
        gcs_storage.path("model.zip"), directory_with(tmp_path, "model", b"model"), gcs_storage.settings
    )
    assert gcs_front.upload_queries
    assert all(query.get("ifGenerationMatch") == ["0"] for query in gcs_front.upload_queries)


@pytest.fixture
def without_hard_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system whose ``link(2)`` fails as FUSE and SMB mounts fail it (no such mount here)."""

    def refuse(source: str, destination: str, **directories: int) -> None:
        raise OSError(errno.EPERM, "Operation not permitted", source)

    monkeypatch.setattr(os, "link", refuse)
    monkeypatch.setattr(locked_targets.storage.local, "_warned_devices", Once())


@pytest.mark.usefixtures("without_hard_links")
def test_local_publish_without_hard_links_renames_and_warns_once(
    any_local_storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="locked_targets.storage.local"):
        publish(any_local_storage.path("first.bin"), b"first", any_local_storage.settings)
        publish(any_local_storage.path("second.bin"), b"second", any_local_storage.settings)
    assert any_local_storage.read(any_local_storage.path("first.bin")) == b"first"
    assert any_local_storage.read(any_local_storage.path("second.bin")) == b"second"
    assert [
        record.message for record in caplog.records if "write-once is not enforced" in record.message
    ] != []
    # Only this logger's: a background release of an earlier test's lock may log meanwhile.
    assert len([record for record in caplog.records if record.name == "locked_targets.storage.local"]) == 1


@pytest.mark.usefixtures("without_hard_links")
def test_local_publish_without_hard_links_asks_the_guard_last_once_the_file_is_whole(
    any_local_storage: Storage, tmp_path: Path
) -> None:
    """The rename that publishes follows the last check: copying a large file can outlast a lease."""
    staged_when_asked: list[list[bytes]] = []

    def check() -> None:
        staged_when_asked.append([path.read_bytes() for path in temporary_files(tmp_path) if path.is_file()])

    with guarded_by(CommitGuard(check=check, fencing_token=7)):
        publish(any_local_storage.path("object.bin"), b"payload", any_local_storage.settings)
    assert staged_when_asked[-1] == [b"payload"], "the last check came before the file to rename was whole"


@pytest.mark.usefixtures("without_hard_links")
def test_local_publish_without_hard_links_still_refuses_an_existing_file(any_local_storage: Storage) -> None:
    path = any_local_storage.path("object.bin")
    publish(path, b"first", any_local_storage.settings)
    with pytest.raises(CommitRefused):
        publish(path, b"second", any_local_storage.settings)
    assert any_local_storage.read(path) == b"first"


def test_s3_refused_multipart_upload_leaves_no_parts(s3_storage: Storage, s3_endpoint: str) -> None:
    path = s3_storage.path("large.bin")
    publish(path, os.urandom(LARGE_OBJECT_BYTES), s3_storage.settings)
    with pytest.raises(CommitRefused):
        publish(path, os.urandom(LARGE_OBJECT_BYTES), s3_storage.settings)
    bucket = path.removeprefix("s3://").split("/", 1)[0]
    assert "Uploads" not in boto3.client("s3", endpoint_url=s3_endpoint).list_multipart_uploads(Bucket=bucket)


def uploads_left_after_a_large_publish(
    storage: Storage, endpoint: str, left_at: str, guard: CommitGuard
) -> int:
    """Leave an unfinished upload of ``left_at``, publish a large ``large.bin``: how many are left."""
    leave_unfinished_upload(endpoint, storage.path(left_at))
    with guarded_by(guard):
        publish(storage.path("large.bin"), os.urandom(LARGE_OBJECT_BYTES), storage.settings)
    return len(unfinished_uploads(endpoint, storage.path(left_at)))


def test_a_locked_multipart_upload_aborts_those_dead_writers_left_of_its_key(
    s3_storage: Storage, s3_endpoint: str
) -> None:
    assert uploads_left_after_a_large_publish(s3_storage, s3_endpoint, "large.bin", FENCED) == 0


def test_a_locked_multipart_upload_leaves_other_keys_uploads_alone(
    s3_storage: Storage, s3_endpoint: str
) -> None:
    """``large.bin.backup`` is listed with ``large.bin`` as the prefix, but is another key."""
    assert uploads_left_after_a_large_publish(s3_storage, s3_endpoint, "large.bin.backup", FENCED) == 1


def test_an_unlocked_multipart_upload_leaves_unfinished_uploads_alone(
    s3_storage: Storage, s3_endpoint: str
) -> None:
    """Without the lock an unfinished upload may be a live writer's."""
    assert uploads_left_after_a_large_publish(s3_storage, s3_endpoint, "large.bin", WITHOUT_REDIS) == 1
