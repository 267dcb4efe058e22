"""Fault injection with real processes and signals: nothing torn, nothing lost.

Each scenario prints one line of counts: operations, faults injected, torn reads, and
dumps lost or overwritten. The last two must be 0.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import redis

from helpers.fault_processes import dump_stalling, payload_of, whole_writer
from helpers.lock_processes import SPAWN
from helpers.targets import locked_target
from locked_targets.locks import lock_key_for
from locked_targets.settings import Settings


@pytest.fixture(params=["local", "s3"])
def target_and_settings(
    request: pytest.FixtureRequest, tmp_path: Path, settings: Settings
) -> tuple[str, Settings]:
    """A target on a storage that enforces create-if-absent, and settings that reach it."""
    if request.param == "local":
        return str(tmp_path / "cache" / "faulted.pkl"), settings
    s3_settings: Settings = request.getfixturevalue("s3_settings")
    root: str = request.getfixturevalue("s3_root")
    merged = dataclasses.replace(settings, s3_endpoint_url=s3_settings.s3_endpoint_url)
    return f"{root}/cache/faulted.pkl", merged


def start_stalling_writer(
    path: str, settings: Settings, writer: str, *, stall_seconds: float
) -> tuple[multiprocessing.process.BaseProcess, multiprocessing.Queue[str]]:
    """A process that dumps ``writer``'s payload and stalls before the commit; returns once it stalls."""
    events: multiprocessing.Queue[str] = SPAWN.Queue()
    process = SPAWN.Process(target=dump_stalling, args=(path, settings, writer, events, stall_seconds))
    process.start()
    assert events.get(timeout=60) == "written, not yet committed"
    return process, events


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
    doomed.kill()
    killed_at = time.monotonic()
    doomed.join(timeout=30)
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
