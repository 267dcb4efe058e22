"""RunWithLock: luigi applications in separate OS processes share a cache and compute each task once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import luigi
import pytest
import redis

import locked_targets
from helpers.applications import Applications
from helpers.run_lock_pipeline import TASK_FAMILIES, Source
from locked_targets import LockLost, RunWithLock
from locked_targets.locks import LockNamespace, lock_key_for
from locked_targets.settings import Settings
from locked_targets.testing import free_port


def test_four_applications_compute_each_task_once_on_a_local_cache(
    tmp_path: Path, settings: Settings
) -> None:
    (tmp_path / "alone").mkdir()
    alone = Applications(tmp_path / "alone", settings)
    alone_wall = alone.run(str(tmp_path / "alone" / "cache"), ["pipeline"])
    together = Applications(tmp_path, settings)
    together_wall = together.run(str(tmp_path / "cache"), ["pipeline"] * 4)
    print(f"one application alone: {alone_wall:.1f} s; four together: {together_wall:.1f} s")
    assert together.runs_per_task() == dict.fromkeys(TASK_FAMILIES, 1)
    assert together_wall < 2 * alone_wall, (
        "the applications should wait for each other's outputs, not recompute"
    )


def test_four_applications_compute_each_task_once_on_s3(
    tmp_path: Path, settings: Settings, s3_settings: Settings, s3_root: str
) -> None:
    merged = Settings(
        redis_url=settings.redis_url,
        key_prefix=settings.key_prefix,
        s3_endpoint_url=s3_settings.s3_endpoint_url,
    )
    applications = Applications(tmp_path, merged)
    applications.run(f"{s3_root}/cache", ["pipeline"] * 4)
    assert applications.runs_per_task() == dict.fromkeys(TASK_FAMILIES, 1)


REPORT = repr(f"left={sum(range(100_000))} right={100_000 - 1}")


def collided(output: str) -> bool:
    return "RunCollision" in output


def run_colliding_applications(
    tmp_path: Path, settings: Settings, builder: str, *, retrying: bool = True
) -> Applications:
    """Four applications with ``fail_on_collision``, after checking that they collided and still
    computed each task once, and that each ended with every output complete."""
    applications = Applications(tmp_path, settings, retrying=retrying, fail_on_collision="true")
    applications.run(str(tmp_path / "cache"), ["pipeline"] * 4, builder=builder)
    assert any(map(collided, applications.outputs)), "no application collided"
    assert applications.runs_per_task() == dict.fromkeys(TASK_FAMILIES, 1)
    assert applications.complete() == [True] * 4
    return applications


def test_fail_on_collision_under_luigi_build_retries_but_returns_false_where_a_task_collided(
    tmp_path: Path, settings: Settings
) -> None:
    applications = run_colliding_applications(tmp_path, settings, "luigi")
    # luigi.build returns False once a task has failed, even if its retry succeeded.
    assert applications.returned() == [repr(not collided(output)) for output in applications.outputs]


def test_fail_on_collision_under_gokart_build_retries_and_returns_the_value(
    tmp_path: Path, settings: Settings
) -> None:
    applications = run_colliding_applications(tmp_path, settings, "gokart")
    assert applications.returned() == [REPORT] * 4


def test_gokart_build_retries_a_run_collision_without_any_retry_settings(
    tmp_path: Path, settings: Settings
) -> None:
    """A RunCollision is a gokart TaskLockException: gokart.build builds again, as for its own lock."""
    applications = run_colliding_applications(tmp_path, settings, "gokart", retrying=False)
    assert applications.returned() == [REPORT] * 4


@pytest.fixture
def luigid(tmp_path: Path) -> Iterator[str]:
    """A real luigi central scheduler on a free port."""
    port = free_port()
    luigid_script = os.path.join(os.path.dirname(sys.executable), "luigid")
    process = subprocess.Popen(
        [luigid_script, "--port", str(port), "--state-path", str(tmp_path / "state.pickle")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "luigid did not start"
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def test_workers_of_one_central_scheduler_compute_each_task_once(
    tmp_path: Path, settings: Settings, luigid: str
) -> None:
    applications = Applications(tmp_path, settings)
    applications.run(str(tmp_path / "cache"), ["pipeline"] * 4, scheduler=luigid)
    assert applications.runs_per_task() == dict.fromkeys(TASK_FAMILIES, 1)


def test_tasks_with_overlapping_outputs_in_opposite_orders_do_not_deadlock(
    tmp_path: Path, settings: Settings
) -> None:
    applications = Applications(tmp_path, settings)
    for round_number in range(3):
        applications.run(
            str(tmp_path / f"cache-{round_number}"),
            ["overlapping", "overlapping-reversed"] * 2,
            task_seconds=0.5,
        )
    runs = applications.runs_per_task()
    assert runs == {"Overlapping": 3}, "one of the twins computes the shared outputs, the other skips"


def test_a_run_longer_than_several_leases_keeps_its_lock(tmp_path: Path, settings: Settings) -> None:
    applications = Applications(tmp_path, settings, lease_seconds="1.5")
    applications.run(str(tmp_path / "cache"), ["source"] * 3, task_seconds=6.0)
    assert applications.runs_per_task() == {"Source": 1}


class ForgottenByRedis(locked_targets.TaskOnKart[str]):
    """A run whose run lock Redis forgets midway (as after a restart), before it dumps."""

    @RunWithLock
    def run(self) -> None:
        settings = Settings.for_task(self)
        assert settings.redis_url is not None
        run_lock = lock_key_for(self.make_target().path(), settings, LockNamespace.RUN)
        redis.Redis.from_url(settings.redis_url).delete(run_lock.writer)
        time.sleep(1.5)  # a renewal (every 2/3 s here) finds the lock gone
        self.dump("written without a run lock")


def test_a_run_that_lost_its_run_lock_publishes_nothing(tmp_path: Path, settings: Settings) -> None:
    assert settings.redis_url is not None
    host, port = settings.redis_url.removeprefix("redis://").split("/")[0].split(":")
    task = ForgottenByRedis(
        workspace_directory=str(tmp_path), redis_host=host, redis_port=int(port), redis_timeout=2
    )
    with pytest.raises(LockLost, match=r":run:.*no longer knew this holder"):
        task.run()
    assert not task.make_target().exists()


class YieldsDynamicDependencies(locked_targets.TaskOnKart[str]):
    @RunWithLock
    def run(self) -> Iterator[luigi.Task]:
        yield Source(workspace_directory=self.workspace_directory)
        self.dump("done")


def test_a_run_with_dynamic_dependencies_is_refused(tmp_path: Path, settings: Settings) -> None:
    assert settings.redis_url is not None
    host, port = settings.redis_url.removeprefix("redis://").split("/")[0].split(":")
    task = YieldsDynamicDependencies(workspace_directory=str(tmp_path), redis_host=host, redis_port=int(port))
    with pytest.raises(TypeError, match="dynamic dependencies"):
        task.run()
    assert not task.make_target().exists()
