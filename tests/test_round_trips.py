"""Round trips a gokart pipeline's tasks wait for, counted, so a regression fails the tests.

A whole ``gokart.build`` (N leaves and an aggregate, as the benchmark builds it) runs in a
fresh process against a server of this test's own: the process counts the requests its
thread running the tasks sends (each one a round trip it waits for), and the server's
``INFO commandstats``, reset before the build, counts every script it ran, background
releases and renewals included. Timing stays out: the benchmark carries the figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.dag import RequestsPerLeaf, Workspace
from bench.variants import RedisAddress, Variant
from locked_targets.testing import RedisServer

LEAVES = 40


@pytest.fixture
def builds(tmp_path: Path, private_redis: RedisServer) -> Workspace:
    return Workspace(
        directory=str(tmp_path),
        variant=Variant.LOCKED_TARGET,
        leaves=LEAVES,
        redis=RedisAddress(url=private_redis.url, host="127.0.0.1", port=private_redis.port),
        control_url=private_redis.url,
    )


def test_a_cold_task_waits_for_one_round_trip_and_a_warm_one_for_none(builds: Workspace) -> None:
    both = builds.cold_and_warm()
    cold = RequestsPerLeaf.of(both.cold, LEAVES)
    warm = RequestsPerLeaf.of(both.warm, LEAVES)
    print(f"per leaf: cold {cold}, warm {warm}")
    # Cold: its files' two write locks taken together (the output's, and the one of gokart's
    # five log files). Its completeness check asks nothing: the aggregate's check, finding the
    # aggregate incomplete, kept every leaf's read lease ahead in one round trip. Once per
    # build, at most 10 more: the aggregate's own, the connections' greetings and the start-up
    # check's INFO (rwlock/server_checks.py). On this fresh server each script is loaded in the
    # round trip of the first batch that sends it (rwlock/script_batch.py), costing none more.
    assert cold.main_thread <= 1 + 10 / LEAVES
    # Warm: nothing per leaf; its check and its load read under the lease kept ahead. Once
    # per build, as above.
    assert warm.main_thread <= 10 / LEAVES


def test_a_cold_task_runs_at_most_five_scripts_in_all(builds: Workspace) -> None:
    cold = RequestsPerLeaf.of(builds.build("cold"), LEAVES)
    print(f"per leaf: {cold}")
    # One shared acquisition, two exclusive ones (the output's, and the one lock of gokart's five
    # log files), and two downgrades or releases, which ride along with the next task's
    # acquisitions: the releases moved off the critical path, they did not multiply. Once per
    # build, at most 14 more: the aggregate's own.
    assert cold.scripts <= 5 + 14 / LEAVES


def test_a_cold_tasks_releases_ride_along_instead_of_waking_the_background_thread(builds: Workspace) -> None:
    cold = RequestsPerLeaf.of(builds.build("cold"), LEAVES)
    print(f"per leaf: {cold}")
    # Each task's releases go with the next task's acquisitions (rwlock/releases.py): the
    # background thread sends what the last tasks leave, and the pub/sub listener's subscription,
    # a few requests per build, not one per task as when it sent every task's releases.
    assert cold.background <= 16 / LEAVES
