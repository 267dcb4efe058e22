"""Fault injection with real processes and signals: nothing torn, nothing lost.

Each scenario prints one line of counts: operations, faults injected, torn reads, and
dumps lost or overwritten. The last two must be 0.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from helpers.fault_processes import (
    STALLED_BEFORE_COMMIT,
    STALLED_BEFORE_COMPLETION,
    dump_model_stalling,
    dump_stalling,
    dump_stalling_before_completion,
    model_target,
    payload_of,
    whole_writer,
)
from helpers.lock_processes import SPAWN
from helpers.s3_uploads import unfinished_uploads
from helpers.targets import locked_target
from helpers.unnamed_files import skip_unless_unnamed_files_in
from locked_targets.locks import lock_key_for
from locked_targets.settings import Settings


def target_on(
    kind: str, name: str, request: pytest.FixtureRequest, tmp_path: Path, settings: Settings
) -> tuple[str, Settings]:
    """A target called ``name`` on ``kind`` (local, s3 or gcs), and ``settings`` that also reach it."""
    if kind == "local":
        return str(tmp_path / "cache" / name), settings
    store: Settings = request.getfixturevalue(f"{kind}_settings")
    root: str = request.getfixturevalue(f"{kind}_root")
    reaching = dataclasses.replace(
        store,
        redis_url=settings.redis_url,
        key_prefix=settings.key_prefix,
        lease_seconds=settings.lease_seconds,
    )
    return f"{root}/cache/{name}", reaching


@pytest.fixture(params=["local", "s3"])
def target_and_settings(
    request: pytest.FixtureRequest, tmp_path: Path, settings: Settings
) -> tuple[str, Settings]:
    """A target on a storage that enforces create-if-absent, and settings that reach it."""
    return target_on(request.param, "faulted.pkl", request, tmp_path, settings)


@pytest.fixture
def private_temporary_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory of this test and of the processes it starts, where uploads are staged."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.fixture(params=["s3", "gcs"])
def staging_target_and_settings(
    request: pytest.FixtureRequest, tmp_path: Path, settings: Settings, private_temporary_directory: Path
) -> tuple[str, Settings]:
    """A target on a storage whose dumps stage a named file, with a lease of 2 s; it lands under ``tmp_path``.

    Local dumps stage nothing where the kernel makes unnamed files (``test_commit`` covers the others).
    """
    short = dataclasses.replace(settings, lease_seconds=2.0)
    return target_on(request.param, "staged.pkl", request, tmp_path, short)


def staged(directory: Path) -> list[Path]:
    """What dumps staged under ``directory`` and left there."""
    return sorted(directory.rglob(".locked_targets-*"))


def start_stalling(
    dump: Callable[..., None], *arguments: Any, stall_seconds: float, stalls_at: str = STALLED_BEFORE_COMMIT
) -> tuple[multiprocessing.process.BaseProcess, multiprocessing.Queue[str]]:
    """A process running ``dump(*arguments, events, stall_seconds)``; returns once it stalls ``stalls_at``."""
    events: multiprocessing.Queue[str] = SPAWN.Queue()
    process = SPAWN.Process(target=dump, args=(*arguments, events, stall_seconds))
    process.start()
    assert events.get(timeout=60) == stalls_at
    return process, events


def start_stalling_writer(
    path: str, settings: Settings, writer: str, *, stall_seconds: float
) -> tuple[multiprocessing.process.BaseProcess, multiprocessing.Queue[str]]:
    """A process that dumps ``writer``'s payload and stalls before the commit; returns once it stalls."""
    return start_stalling(dump_stalling, path, settings, writer, stall_seconds=stall_seconds)


def kill(process: multiprocessing.process.BaseProcess) -> None:
    process.kill()
    process.join(timeout=30)


def load_survivor(
    scenario: str,
    path: str,
    settings: Settings,
    *,
    expected: str,
    operations: int,
    faults: int,
    torn_before: bool = False,
) -> str | None:
    """Load what the target holds now, print the scenario's counts, and return its writer (None if torn)."""
    survivor = whole_writer(locked_target(path, settings).load())
    torn = int(torn_before or survivor is None)
    lost = int(survivor != expected)
    print(
        f"{scenario}: {operations} operations, {faults} faults injected, "
        f"{torn} torn reads, {lost} lost or overwritten dumps"
    )
    return survivor


def test_a_writer_paused_past_its_lease_cannot_overwrite_its_successor(
    target_and_settings: tuple[str, Settings],
) -> None:
    path, settings = target_and_settings
    short = dataclasses.replace(settings, lease_seconds=2.0)
    paused, events = start_stalling_writer(path, short, "paused", stall_seconds=1.0)
    assert paused.pid is not None
    os.kill(paused.pid, signal.SIGSTOP)
    time.sleep(3.0)  # past its lease: the lock is free for the next application
    locked_target(path, short).dump(payload_of("successor"))
    os.kill(paused.pid, signal.SIGCONT)
    outcome = events.get(timeout=60)
    paused.join(timeout=30)
    survivor = load_survivor(
        "SIGSTOP past the lease", path, short, expected="successor", operations=3, faults=1
    )
    assert outcome.startswith("LockLost")
    assert survivor == "successor"


def test_a_commit_after_redis_forgot_the_lock_is_refused_by_the_storage(
    target_and_settings: tuple[str, Settings], redis_client: redis.Redis
) -> None:
    path, settings = target_and_settings
    stale, events = start_stalling_writer(path, settings, "stale", stall_seconds=3.0)
    redis_client.delete(lock_key_for(path, settings).writer)  # Redis forgot it, as after a restart
    locked_target(path, settings).dump(payload_of("successor"))
    outcome = events.get(timeout=60)
    stale.join(timeout=30)
    survivor = load_survivor(
        "Redis forgot a writer's lock", path, settings, expected="successor", operations=3, faults=1
    )
    assert outcome.startswith("LockLost"), outcome
    assert "refused its commit" in outcome
    assert survivor == "successor"


def test_a_writer_killed_mid_dump_leaves_nothing_torn_and_frees_the_lock(
    target_and_settings: tuple[str, Settings],
) -> None:
    path, settings = target_and_settings
    short = dataclasses.replace(settings, lease_seconds=2.0)
    doomed, _ = start_stalling_writer(path, short, "doomed", stall_seconds=30.0)
    killed_at = time.monotonic()
    kill(doomed)
    visible = locked_target(path, short).exists()
    locked_target(path, short).dump(payload_of("survivor"))
    took = time.monotonic() - killed_at
    survivor = load_survivor(
        "kill -9 mid-dump", path, short, expected="survivor", operations=4, faults=1, torn_before=visible
    )
    assert not visible, "a dump that never committed must not be visible"
    assert survivor == "survivor"
    assert took < 2.0 + 2.0, "the lock frees within the dead writer's lease"


def test_killed_connections_during_renewal_never_let_two_writers_commit(
    target_and_settings: tuple[str, Settings], redis_client: redis.Redis
) -> None:
    path, settings = target_and_settings
    short = dataclasses.replace(settings, lease_seconds=3.0)  # renewed every second
    writer, events = start_stalling_writer(path, short, "first", stall_seconds=4.0)
    kills = 0
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:  # every connection but ours, again and again
        kills += int(redis_client.client_kill_filter(_type="normal", skipme=True))
        time.sleep(0.2)
    second = locked_target(path, short)
    second.dump(payload_of("second"))
    outcome = events.get(timeout=60)
    writer.join(timeout=30)
    expected = "first" if outcome == "dumped" else "second"  # a writer that lost its lock published nothing
    survivor = load_survivor(
        "CLIENT KILL during renewal", path, short, expected=expected, operations=3, faults=kills
    )
    assert outcome == "dumped" or outcome.startswith("LockLost"), outcome
    assert survivor == expected


def test_the_next_dump_clears_what_a_killed_writer_staged(
    staging_target_and_settings: tuple[str, Settings], tmp_path: Path
) -> None:
    path, settings = staging_target_and_settings
    doomed, _ = start_stalling_writer(path, settings, "doomed", stall_seconds=30.0)
    kill(doomed)
    left_behind = staged(tmp_path)
    locked_target(path, settings).dump(payload_of("survivor"))
    assert left_behind != [], "the killed writer left its staged file"
    assert staged(tmp_path) == []
    assert whole_writer(locked_target(path, settings).load()) == "survivor"


@pytest.mark.usefixtures("private_temporary_directory")
def test_a_killed_local_writer_leaves_nothing(tmp_path: Path, settings: Settings) -> None:
    skip_unless_unnamed_files_in(tmp_path)
    path = str(tmp_path / "cache" / "staged.pkl")
    short = dataclasses.replace(settings, lease_seconds=2.0)
    doomed, _ = start_stalling_writer(path, short, "doomed", stall_seconds=30.0)
    kill(doomed)
    assert [file for file in tmp_path.rglob("*") if file.is_file()] == []
    locked_target(path, short).dump(payload_of("survivor"))
    assert [file.name for file in tmp_path.rglob("*") if file.is_file()] == ["staged.pkl"]
    assert whole_writer(locked_target(path, short).load()) == "survivor"


@pytest.mark.usefixtures("private_temporary_directory")
def test_the_next_dump_aborts_the_multipart_upload_of_a_killed_writer(
    request: pytest.FixtureRequest, tmp_path: Path, settings: Settings, s3_endpoint: str
) -> None:
    path, short = target_on(
        "s3", "large.pkl", request, tmp_path, dataclasses.replace(settings, lease_seconds=2.0)
    )
    doomed, _ = start_stalling(
        dump_stalling_before_completion,
        path,
        short,
        "doomed",
        stall_seconds=30.0,
        stalls_at=STALLED_BEFORE_COMPLETION,
    )
    kill(doomed)
    left_behind = unfinished_uploads(s3_endpoint, path)
    locked_target(path, short).dump(payload_of("survivor"))  # large enough for a multipart upload too
    assert len(left_behind) == 1
    assert unfinished_uploads(s3_endpoint, path) == []
    assert whole_writer(locked_target(path, short).load()) == "survivor"


@pytest.mark.usefixtures("private_temporary_directory")
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_the_next_model_dump_clears_what_a_killed_writer_staged(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, settings: Settings
) -> None:
    path, short = target_on(
        kind, "model.zip", request, tmp_path, dataclasses.replace(settings, lease_seconds=2.0)
    )
    working = str(tmp_path / "work")
    doomed, _ = start_stalling(dump_model_stalling, path, working, short, "doomed", stall_seconds=30.0)
    kill(doomed)
    left_behind = staged(tmp_path)
    model_target(path, working, short).dump(payload_of("survivor"))
    assert left_behind != [], "the killed writer left its model's files"
    assert staged(tmp_path) == []
    assert whole_writer(model_target(path, working, short).load()) == "survivor"
