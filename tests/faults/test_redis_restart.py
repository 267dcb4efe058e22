"""Redis restarts in the middle of a pipeline run by several applications (separate OS processes)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.applications import Applications
from helpers.run_lock_pipeline import TASK_FAMILIES, pipeline_tasks
from locked_targets.settings import Settings
from locked_targets.testing import RedisServer

# How long each task of the pipeline takes.
TASK_SECONDS = 1.0


@pytest.fixture
def restartable_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def restart_mid_task(server: RedisServer, side_log: Path) -> None:
    """Kill and restart the server (forgetting every lock) half a task into the first task
    that runs, in the background: a restart at a fixed time could come before the
    applications (a couple of seconds of imports) first touch Redis, and go unseen."""

    def restart_once_a_task_runs() -> None:
        deadline = time.monotonic() + 60
        while not (side_log.exists() and side_log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(TASK_SECONDS / 2)
        server.restart()

    threading.Thread(target=restart_once_a_task_runs, daemon=True).start()


def expected_outputs() -> dict[str, object]:
    values = list(range(100_000))
    left, right = sum(values), max(values)
    return {
        "Source": values,
        "Left": left,
        "Right": right,
        "Join": {"left": left, "right": right},
        "Report": f"left={left} right={right}",
    }


def check_outputs(workspace: str) -> tuple[int, int, int]:
    """(outputs whole, torn or wrong, missing) of the pipeline's five tasks in ``workspace``."""
    tasks = pipeline_tasks(workspace)
    whole = torn = missing = 0
    for family, expected in expected_outputs().items():
        target = tasks[family].make_target()
        if not target.exists():
            missing += 1
        elif target.load() == expected:
            whole += 1
        else:
            torn += 1
    return whole, torn, missing


def test_with_on_redis_error_wait_the_pipeline_rides_out_a_restart(
    tmp_path: Path, restartable_redis: RedisServer
) -> None:
    settings = Settings(redis_url=restartable_redis.url, key_prefix="restart-wait:")
    applications = Applications(
        tmp_path, settings, on_redis_error="wait", redis_retry_deadline_seconds="60", lease_seconds="3"
    )
    applications.run(
        str(tmp_path / "cache"),
        ["pipeline"] * 4,
        task_seconds=TASK_SECONDS,
        meanwhile=lambda: restart_mid_task(restartable_redis, applications.side_log),
    )
    runs = applications.runs_per_task()
    whole, torn, missing = check_outputs(str(tmp_path / "cache"))
    print(
        f"Redis restarted mid-pipeline (wait): {sum(runs.values())} runs, 1 fault injected, "
        f"{whole} outputs whole, {torn} torn reads, {missing} lost dumps"
    )
    assert set(runs) == set(TASK_FAMILIES)
    assert (whole, torn, missing) == (5, 0, 0)


def test_with_on_redis_error_fail_a_restart_stops_applications_cleanly(
    tmp_path: Path, restartable_redis: RedisServer
) -> None:
    settings = Settings(redis_url=restartable_redis.url, key_prefix="restart-fail:")
    applications = Applications(tmp_path, settings, lease_seconds="3")
    applications.run(
        str(tmp_path / "cache"),
        ["pipeline"] * 4,
        task_seconds=TASK_SECONDS,
        expect_success=False,
        meanwhile=lambda: restart_mid_task(restartable_redis, applications.side_log),
    )
    failures = sum("BackendUnavailable" in output or "LockLost" in output for output in applications.outputs)
    whole, torn, missing = check_outputs(str(tmp_path / "cache"))
    print(
        f"Redis restarted mid-pipeline (fail): 4 applications, 1 fault injected, {failures} saw the outage, "
        f"{whole} outputs whole, {torn} torn reads, {missing} not produced"
    )
    assert failures > 0
    assert torn == 0
