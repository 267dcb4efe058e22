"""Eight OS processes hammer one target on each storage kind: nothing torn, nothing written twice.

The last test runs the same harness as plain gokart (no lock, no write-once commit) and
shows that it does see damage then, so the assertions above can fail.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import redis

from helpers.hammer import HammerReport, hammer
from helpers.lock_processes import SPAWN
from helpers.redis_keys import keys_without_ttl
from locked_targets.settings import Settings
from locked_targets.testing import read_lines

PROCESSES = 8
OPERATIONS_PER_PROCESS = 40


def run_hammer(path: str, settings: Settings, locked: bool, audit_log: Path) -> list[HammerReport]:
    arguments = [
        (path, settings, locked, OPERATIONS_PER_PROCESS, str(audit_log), seed) for seed in range(PROCESSES)
    ]
    pool = SPAWN.Pool(PROCESSES)
    try:
        return pool.starmap_async(hammer, arguments).get(timeout=240)
    finally:
        pool.close()  # workers exit normally, giving back the shared leases they keep
        pool.join()


def writes_per_generation(audit_log: Path) -> list[int]:
    """From the audit log, how many writes landed between consecutive removes."""
    generations = [0]
    for line in read_lines(audit_log):
        if line == "R":
            generations.append(0)
        else:
            generations[-1] += 1
    return generations


def written_nonces(audit_log: Path) -> set[str]:
    return {line[2:] for line in read_lines(audit_log) if line.startswith("W ")}


@pytest.fixture(params=["local", "s3", "gcs"])
def shared_target(request: pytest.FixtureRequest, tmp_path: Path, settings: Settings) -> tuple[str, Settings]:
    """A target path on one storage kind, and settings that reach that storage."""
    if request.param == "local":
        return str(tmp_path / "cache" / "hammered.pkl"), settings
    storage_settings: Settings = request.getfixturevalue(f"{request.param}_settings")
    root: str = request.getfixturevalue(f"{request.param}_root")
    merged = dataclasses.replace(
        storage_settings, redis_url=settings.redis_url, key_prefix=settings.key_prefix
    )
    return f"{root}/cache/hammered.pkl", merged


def test_locked_target_is_never_torn_or_written_twice(
    shared_target: tuple[str, Settings], tmp_path: Path, redis_client: redis.Redis, key_prefix: str
) -> None:
    path, settings = shared_target
    audit_log = tmp_path / "audit.log"
    reports = run_hammer(path, settings, locked=True, audit_log=audit_log)

    errors = [error for report in reports for error in report.errors]
    torn = sum(report.torn_loads for report in reports)
    whole = sum(report.whole_loads for report in reports)
    generations = writes_per_generation(audit_log)
    loaded = {nonce for report in reports for nonce in report.loaded_nonces}
    print(
        f"{path}: {sum(r.operations for r in reports)} operations, {whole} whole loads, {torn} torn, "
        f"{sum(generations)} writes in {len(generations)} generations, {len(errors)} errors"
    )
    assert errors == []
    assert torn == 0
    assert whole > 0
    assert max(generations) <= 1, f"a generation was written more than once: {generations}"
    assert loaded <= written_nonces(audit_log), "a load returned an object nobody wrote"
    assert keys_without_ttl(redis_client, key_prefix) == []
    lock_keys = [key for key in redis_client.keys(f"{key_prefix}*") if b":fence" not in key]
    assert lock_keys == [], "every lock was released (only fencing counters outlive their locks)"


def test_the_harness_detects_double_writes_without_the_lock(tmp_path: Path, settings: Settings) -> None:
    audit_log = tmp_path / "audit.log"
    run_hammer(str(tmp_path / "cache" / "unlocked.pkl"), settings, locked=False, audit_log=audit_log)
    generations = writes_per_generation(audit_log)
    assert max(generations) > 1, f"without the lock some generation should be written twice: {generations}"
