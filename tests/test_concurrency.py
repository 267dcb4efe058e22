"""Eight OS processes hammer one target on each storage kind, locked through a standalone server, a
Redis Cluster and Sentinel: nothing torn, nothing written twice.

The last test runs the same harness as plain gokart (no lock, no write-once commit) and
shows that it does see damage then, so the assertions above can fail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from helpers.clusters import started_cluster
from helpers.hammer import HammerReport, hammer
from helpers.lock_processes import SPAWN
from helpers.redis_keys import keys_without_ttl
from locked_targets.settings import Settings
from locked_targets.testing import ClusterDeployment, SentinelDeployment, read_lines

PROCESSES = 8
OPERATIONS_PER_PROCESS = 40
# Fewer through a Cluster or Sentinel, whose variants run once per storage kind: about 5 s a run.
DEPLOYMENT_OPERATIONS_PER_PROCESS = 20


def run_hammer(
    path: str, settings: Settings, locked: bool, audit_log: Path, operations: int = OPERATIONS_PER_PROCESS
) -> list[HammerReport]:
    arguments = [(path, settings, locked, operations, str(audit_log), seed) for seed in range(PROCESSES)]
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


def hammer_and_check(
    path: str,
    settings: Settings,
    audit_log: Path,
    servers: list[redis.Redis],
    key_prefix: str,
    operations: int = OPERATIONS_PER_PROCESS,
) -> None:
    """Hammer ``path`` under the lock: nothing torn nor written twice, every lock released on ``servers``."""
    reports = run_hammer(path, settings, locked=True, audit_log=audit_log, operations=operations)

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
    for server in servers:
        assert keys_without_ttl(server, key_prefix) == []
        lock_keys = [key for key in server.keys(f"{key_prefix}*") if b":fence" not in key]
        assert lock_keys == [], "every lock was released (only fencing counters outlive their locks)"


def test_locked_target_is_never_torn_or_written_twice(
    shared_target: tuple[str, Settings], tmp_path: Path, redis_client: redis.Redis, key_prefix: str
) -> None:
    path, settings = shared_target
    hammer_and_check(path, settings, tmp_path / "audit.log", [redis_client], key_prefix)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    with started_cluster(str(tmp_path_factory.mktemp("cluster")), "6.2") as started:
        yield started


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    with SentinelDeployment(str(tmp_path_factory.mktemp("sentinels"))) as started:
        yield started


@pytest.fixture(params=["cluster", "sentinel"])
def deployment(request: pytest.FixtureRequest) -> tuple[str, list[redis.Redis]]:
    """The URL of a deployment of several servers (6.2), and clients of the masters that hold its locks."""
    if request.param == "cluster":
        cluster: ClusterDeployment = request.getfixturevalue("cluster")
        return cluster.url, [cluster.client(port) for port in cluster.masters()]
    sentinels: SentinelDeployment = request.getfixturevalue("sentinels")
    return sentinels.url, [sentinels.client(sentinels.master_port())]


def test_locked_target_through_a_cluster_or_sentinel_is_never_torn_or_written_twice(
    deployment: tuple[str, list[redis.Redis]],
    shared_target: tuple[str, Settings],
    tmp_path: Path,
    key_prefix: str,
) -> None:
    url, masters = deployment
    path, settings = shared_target
    hammer_and_check(
        path,
        dataclasses.replace(settings, redis_url=url),
        tmp_path / "audit.log",
        masters,
        key_prefix,
        operations=DEPLOYMENT_OPERATIONS_PER_PROCESS,
    )


def test_the_harness_detects_double_writes_without_the_lock(tmp_path: Path, settings: Settings) -> None:
    audit_log = tmp_path / "audit.log"
    run_hammer(str(tmp_path / "cache" / "unlocked.pkl"), settings, locked=False, audit_log=audit_log)
    generations = writes_per_generation(audit_log)
    assert max(generations) > 1, f"without the lock some generation should be written twice: {generations}"
