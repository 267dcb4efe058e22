"""Faults injected into real deployments while several OS processes write and read the same targets:
nothing torn, no write lost, nothing written twice.

- A forced Sentinel failover with replication stalled: the new master has never heard of the locks
  granted since the stall, so a holder of one of them is stale; it must end with ``LockLost`` or
  leave the other writer's object in the file, never return as if it had written.
- A Redis Cluster shard failover (``CLUSTER FAILOVER`` on a replica) and a slot migration, during a
  pipeline that several applications (``gokart.build`` in OS processes) build on one local cache.
- A master killed (a standalone server restarted, a Sentinel master killed) under
  ``on_redis_error = wait``: the pipeline completes.

Each scenario prints one line of counts (``helpers.chaos.Tally``). The definitions are in
``helpers.chaos``; ``test_the_tally_counts_the_writes_a_writer_without_the_lock_loses`` shows
that the counts do see damage. Each scenario takes about 20 to 40 s on two cores.
"""

from __future__ import annotations

import collections
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from helpers.applications import TESTS_DIRECTORY, Applications
from helpers.chaos import (
    RETURNED,
    Dump,
    Tally,
    WorkerReport,
    contend,
    final_nonce,
    hold_a_dump,
    tally,
)
from helpers.chaos_pipeline import TASK_FAMILIES, every_task
from helpers.clusters import started_cluster
from helpers.lock_processes import SPAWN
from helpers.waiting import eventually
from locked_targets.locks import lock_key_for
from locked_targets.settings import Settings
from locked_targets.testing import ProcessGroup, ProcessSpec, RedisServer, SentinelDeployment, read_lines

# Generous: every wait for a process or a server is bounded by it.
BOUND_SECONDS = 90.0
SCENARIO_TIMEOUT_SECONDS = 240
WRITERS = 4
TARGETS = 10
HELD = TARGETS // 2  # the target whose lock the stale holder holds across the failover
APPLICATIONS = 3
TASK_SECONDS = "1.5"
MOVE_SECONDS = 1.0  # how long a slot stays half-moved


def assert_nothing_torn_lost_or_doubled(counts: Tally, scenario: str) -> None:
    print(counts.line(scenario))
    assert counts.faults > 0
    assert (counts.torn_reads, counts.lost_writes, counts.double_writes) == (0, 0, 0)


@pytest.fixture
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    """A deployment of this test's own: a failover changes its master, a stall its replica."""
    with SentinelDeployment(str(tmp_path_factory.mktemp("sentinels"))) as started:
        yield started


def waiting_settings(redis_url: str, key_prefix: str) -> Settings:
    """Short leases, and ``on_redis_error = wait``: a fault costs a wait, not a failure."""
    return Settings(
        redis_url=redis_url,
        key_prefix=key_prefix,
        lease_seconds=6,
        renewal_interval_seconds=1,
        on_redis_error="wait",
        redis_retry_deadline_seconds=60,
    )


def target_paths(tmp_path: Path) -> list[str]:
    return [str(tmp_path / "cache" / f"target-{index}.pkl") for index in range(TARGETS)]


@pytest.mark.timeout(SCENARIO_TIMEOUT_SECONDS)
def test_a_stale_holder_after_a_sentinel_failover_with_replication_stalled_never_returns_as_the_writer(
    sentinels: SentinelDeployment, tmp_path: Path, key_prefix: str
) -> None:
    settings = waiting_settings(sentinels.url, key_prefix)
    paths, audit_log = target_paths(tmp_path), str(tmp_path / "audit.log")
    sentinels.stall_replication()  # no lock granted from now on reaches the replica
    with SPAWN.Manager() as manager:
        holding, go_on = manager.Event(), manager.Event()
        pool = SPAWN.Pool(WRITERS + 1)
        try:
            stale_holder = pool.apply_async(hold_a_dump, (paths, HELD, settings, audit_log, holding, go_on))
            assert holding.wait(BOUND_SECONDS), "the stale holder never held its lock"
            writers = pool.starmap_async(
                contend, [(paths, settings, audit_log, writer) for writer in range(WRITERS)]
            )
            eventually(
                lambda: os.path.exists(paths[HELD - 1]), "the writers to reach the held target", BOUND_SECONDS
            )
            sentinels.fail_over()
            eventually(
                lambda: os.path.exists(paths[HELD]),
                "a writer to take the held target's lock again",
                BOUND_SECONDS,
            )
            go_on.set()
            stale: Dump = stale_holder.get(BOUND_SECONDS)
            reports: list[WorkerReport] = writers.get(BOUND_SECONDS)
        finally:
            pool.close()
            pool.join()

    assert_nothing_torn_lost_or_doubled(
        tally(paths, reports, [stale], audit_log, faults=1), "Sentinel failover, replication stalled"
    )
    assert stale.outcome.startswith("LockLost") or (
        stale.outcome == RETURNED and final_nonce(paths[HELD]) != stale.nonce
    ), stale.outcome
    assert [error for report in reports for error in report.errors if "LockLost" not in error] == []


def test_the_tally_counts_the_writes_a_writer_without_the_lock_loses(
    tmp_path: Path, settings: Settings
) -> None:
    paths, audit_log = target_paths(tmp_path), str(tmp_path / "audit.log")

    locked = contend(paths, settings, audit_log, writer=0)
    unlocked = contend(paths, settings, audit_log, writer=1, locked=False)  # replaces each file

    counts = tally(paths, [locked, unlocked], [], audit_log, faults=0)
    assert (counts.lost_writes, counts.double_writes) == (TARGETS, TARGETS)


class PipelineRun:
    """Several applications building ``helpers.chaos_pipeline`` on one local cache, with one side log."""

    def __init__(self, tmp_path: Path, settings: Settings) -> None:
        self.workspace = str(tmp_path / "cache")
        self.settings = settings
        self.tasks = {task.family(): task for task in every_task(self.workspace)}
        self.applications = Applications(
            tmp_path,
            settings,
            lease_seconds=str(settings.lease_seconds),
            on_redis_error=settings.on_redis_error,
            redis_retry_deadline_seconds=str(settings.redis_retry_deadline_seconds),
        )

    def lock_key(self, family: str) -> str:
        """A key of the locks (run and target: one slot) of ``family``'s output."""
        return lock_key_for(self.tasks[family].output_path(), self.settings).writer

    def computing(self, family: str) -> bool:
        return any(line.startswith(f"C {family} ") for line in self.lines())

    def lines(self) -> list[str]:
        return read_lines(self.applications.side_log)

    def run(self, inject_faults: Callable[[], int]) -> tuple[Tally, dict[str, int]]:
        """Build the pipeline in each application while ``inject_faults`` runs; the counts, and the
        computations per task."""
        shared = {
            "PYTHONPATH": os.pathsep.join(filter(None, [TESTS_DIRECTORY, os.environ.get("PYTHONPATH")])),
            "LUIGI_CONFIG_PATH": str(self.applications.config),
            "PIPELINE_SIDE_LOG": str(self.applications.side_log),
            "PIPELINE_TASK_SECONDS": TASK_SECONDS,
        }
        names = [f"app-{number}" for number in range(APPLICATIONS)]
        specs = [
            ProcessSpec(name, [self.workspace], {**shared, "PIPELINE_APPLICATION": name}) for name in names
        ]
        with ProcessGroup([sys.executable, "-m", "helpers.chaos_pipeline"], specs) as applications:
            faults = inject_faults()
            statuses = applications.wait(time.monotonic() + BOUND_SECONDS)
            for status, output in zip(statuses, applications.outputs, strict=True):
                assert status == 0, output
        return self._tally(faults), self._counted("C")

    def _counted(self, kind: str) -> dict[str, int]:
        """Per task family, the side log's lines of ``kind`` (C: computations, T: torn loads)."""
        counted = collections.Counter(line.split()[1] for line in self.lines() if line.startswith(kind + " "))
        return dict(counted)

    def _tally(self, faults: int) -> Tally:
        published: dict[str, list[str]] = collections.defaultdict(list)
        for line in self.lines():
            if line.startswith("W "):
                nonce = line.removeprefix("W ")
                published[nonce.partition("/")[0]].append(nonce)
        lost = double = 0
        for family in TASK_FAMILIES:
            final = final_nonce(self.tasks[family].output_path())
            lost += sum(1 for nonce in published[family] if nonce != final)
            lost += final is None or final not in published[family]
            double += max(0, len(published[family]) - 1)
        torn = sum(self._counted("T").values())
        return Tally(sum(self._counted("C").values()), faults, torn, lost, double)


@pytest.mark.timeout(SCENARIO_TIMEOUT_SECONDS)
def test_a_pipeline_survives_a_cluster_shard_failover_and_a_slot_migration(
    tmp_path: Path, key_prefix: str
) -> None:
    directory = tmp_path / "cluster"
    directory.mkdir()
    with started_cluster(str(directory), "6.2") as cluster:
        pipeline = PipelineRun(tmp_path, waiting_settings(cluster.url, key_prefix))

        def fail_over_then_move_a_slot() -> int:
            eventually(
                lambda: pipeline.computing("Branch0"), "the first branch to be computed", BOUND_SECONDS
            )
            cluster.fail_over(cluster.master_of(pipeline.lock_key("Branch0")))
            eventually(
                lambda: pipeline.computing("Branch1"), "the second branch to be computed", BOUND_SECONDS
            )
            moved = pipeline.lock_key("Branch1")
            to = next(port for port in cluster.masters() if port != cluster.master_of(moved))
            cluster.start_moving_slot(moved, to)
            time.sleep(MOVE_SECONDS)
            cluster.finish_moving_slot(moved, to)
            return 2

        counts, computations = pipeline.run(fail_over_then_move_a_slot)

    assert_nothing_torn_lost_or_doubled(counts, "Cluster shard failover and slot migration")
    assert computations == dict.fromkeys(TASK_FAMILIES, 1)


@contextmanager
def restarted_standalone(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    server = RedisServer().start()
    try:
        yield server.url, server.restart
    finally:
        server.stop()


@contextmanager
def sentinel_master_killed(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    with SentinelDeployment(str(tmp_path)) as deployment:

        def kill_the_master() -> None:
            replica = deployment.replica_port()
            deployment.kill_master()
            deployment.await_master(replica)

        yield deployment.url, kill_the_master


@pytest.mark.timeout(SCENARIO_TIMEOUT_SECONDS)
@pytest.mark.parametrize(
    "deployment", [restarted_standalone, sentinel_master_killed], ids=["standalone", "sentinel"]
)
def test_a_pipeline_under_on_redis_error_wait_completes_after_its_master_is_killed(
    deployment: Callable[[Path], Any], tmp_path: Path, key_prefix: str
) -> None:
    with deployment(tmp_path) as (url, kill):
        pipeline = PipelineRun(tmp_path, waiting_settings(url, key_prefix))

        def kill_while_a_branch_is_computed() -> int:
            eventually(
                lambda: pipeline.computing("Branch0"), "the first branch to be computed", BOUND_SECONDS
            )
            kill()
            return 1

        counts, computations = pipeline.run(kill_while_a_branch_is_computed)

    assert_nothing_torn_lost_or_doubled(counts, f"master killed ({url.partition(':')[0]})")
    assert set(computations) == set(TASK_FAMILIES)
