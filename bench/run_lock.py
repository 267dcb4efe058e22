"""Scenario 4: K applications start one pipeline together; one computes each step, the others skip it.

Each application is its own OS process with its own luigi local scheduler and worker
(``bench.run_lock_application``), building the chain of ``bench.run_lock_pipeline`` with
the run lock on, on a fresh local cache that all of them share. The applications are
started first and import everything; then one line on their stdin starts all of them
together. One application alone on a fresh cache is run first, for the wall time the K
applications are compared with.

Where the time goes is read from the side log the applications write (see
``run_lock_pipeline``): a follower's lag for a step is the time from the computing
application's dump returning to the follower marking the step done.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import statistics
import sys
import time
from collections.abc import Sequence

from bench.applications import failure_with_log
from bench.run_lock_application import READY
from bench.run_lock_pipeline import (
    APPLICATION_VARIABLE,
    SIDE_LOG_VARIABLE,
    STEP_SECONDS_VARIABLE,
    STEPS,
)
from bench.tables import heading, table
from bench.variants import RedisAddress
from locked_targets.testing import ProcessFailed, ProcessGroup, ProcessSpec, read_lines

APPLICATIONS = 4
# Issue 3's goal: a follower is done within this long after the leader's output landed.
LAG_GOAL_MS = 50.0
RETRY_DELAY_SECONDS = 1
# Poll luigi's scheduler often and without jitter: gokart's best case, since its followers
# only see a finished step when they ask again (luigi's default: every 1 s plus up to 5 s).
WORKER_WAIT_INTERVAL_SECONDS = 0.1
_APPLICATION_TIMEOUT_SECONDS = 120.0
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RunLock(enum.Enum):
    """Whose run lock the applications take: locked_targets' or gokart's own."""

    LOCKED_TARGETS = "locked_targets"
    GOKART = "gokart"

    @property
    def title(self) -> str:
        return {
            RunLock.LOCKED_TARGETS: "locked_targets.TaskOnKart",
            RunLock.GOKART: "gokart.TaskOnKart",
        }[self]

    def luigi_config(self, workspace: str, redis: RedisAddress) -> str:
        """The luigi configuration file of one start of the applications."""
        redis_section = {
            RunLock.LOCKED_TARGETS: ["[locked_targets]", f"redis_url = {redis.url}"],
            RunLock.GOKART: [f"redis_host = {redis.host}", f"redis_port = {redis.port}"],
        }[self]
        lines = [
            "[TaskOnKart]",
            f"workspace_directory = {workspace}",
            f"local_temporary_directory = {os.path.join(workspace, 'tmp')}",
            "should_lock_run = true",
            *redis_section,
            "[scheduler]",
            f"retry_delay = {RETRY_DELAY_SECONDS}",
            "retry_count = 100",
            "[worker]",
            "keep_alive = true",
            f"wait_interval = {WORKER_WAIT_INTERVAL_SECONDS}",
            "wait_jitter = 0",
            "[core]",
            "autoload_range = false",
        ]
        return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class Event:
    """One line of the side log."""

    name: str
    step: int | None
    application: str
    time: float


@dataclasses.dataclass(frozen=True)
class PipelineRun:
    """What one start of some applications recorded."""

    wall_seconds: float
    events: tuple[Event, ...]

    def computed(self, step: int) -> list[Event]:
        return [event for event in self.events if event.name == "landed" and event.step == step]

    def runs_per_step(self) -> list[int]:
        return [len(self.computed(step)) for step in range(1, STEPS + 1)]

    def follower_lags_ms(self, until: str) -> list[float]:
        """Per step, per application that did not compute it: ms from the output landing to ``until``."""
        lags = []
        for step in range(1, STEPS + 1):
            landed = min(self.computed(step), key=lambda event: event.time)
            lags += [
                (event.time - landed.time) * 1000
                for event in self.events
                if event.name == until and event.step == step and event.application != landed.application
            ]
        return lags

    def count(self, name: str) -> int:
        return sum(event.name == name for event in self.events)


@dataclasses.dataclass(frozen=True)
class RunLockResult:
    """One application alone, then K together, under one run lock."""

    alone: PipelineRun
    together: PipelineRun

    @property
    def wall_ratio(self) -> float:
        return self.together.wall_seconds / self.alone.wall_seconds


def measure(directory: str, redis: RedisAddress, step_seconds: float) -> dict[RunLock, RunLockResult]:
    return {
        run_lock: RunLockResult(
            alone=start_together(
                os.path.join(directory, run_lock.value, "alone"), run_lock, 1, redis, step_seconds
            ),
            together=start_together(
                os.path.join(directory, run_lock.value, "together"),
                run_lock,
                APPLICATIONS,
                redis,
                step_seconds,
            ),
        )
        for run_lock in RunLock
    }


def start_together(
    directory: str, run_lock: RunLock, applications: int, redis: RedisAddress, step_seconds: float
) -> PipelineRun:
    """Start ``applications`` applications on a fresh cache in ``directory``, all at once once imported."""
    os.makedirs(directory)
    config = os.path.join(directory, "luigi.cfg")
    with open(config, "w") as file:
        file.write(run_lock.luigi_config(os.path.join(directory, "cache"), redis))
    side_log = os.path.join(directory, "side.log")
    specs = [
        ProcessSpec(
            name=f"app-{number}",
            arguments=[run_lock.value],
            environment={
                "LUIGI_CONFIG_PATH": config,
                SIDE_LOG_VARIABLE: side_log,
                APPLICATION_VARIABLE: f"app-{number}",
                STEP_SECONDS_VARIABLE: str(step_seconds),
            },
            log_path=os.path.join(directory, f"app-{number}.log"),
        )
        for number in range(applications)
    ]
    command = [sys.executable, "-m", "bench.run_lock_application"]
    with ProcessGroup(command, specs, cwd=_REPOSITORY, held_for_release=True) as processes:
        try:
            processes.wait_for_line(READY, time.monotonic() + _APPLICATION_TIMEOUT_SECONDS)
            started = time.time()
            processes.release()
            processes.wait(time.monotonic() + _APPLICATION_TIMEOUT_SECONDS, expect_success=True)
        except ProcessFailed as failure:
            raise RuntimeError(f"run lock scenario in {directory}: {failure_with_log(failure)}") from failure
    events = _read_side_log(side_log)
    finished = max(event.time for event in events if event.name == "finished")
    return PipelineRun(wall_seconds=finished - started, events=events)


def _read_side_log(path: str) -> tuple[Event, ...]:
    fields = [line.split() for line in read_lines(path)]
    return tuple(
        Event(name=name, step=None if step == "-" else int(step), application=application, time=float(at))
        for name, step, application, at in fields
    )


def lag_summary(lags: Sequence[float]) -> str:
    return f"{statistics.median(lags):,.1f} / {max(lags):,.1f}"


def report(results: dict[RunLock, RunLockResult], step_seconds: float) -> str:
    rows = [
        [
            run_lock.title,
            "/".join(map(str, result.together.runs_per_step())),
            str(result.together.count("failed")),
            lag_summary(result.together.follower_lags_ms("returned")),
            lag_summary(result.together.follower_lags_ms("done")),
            f"{result.alone.wall_seconds:.2f}",
            f"{result.together.wall_seconds:.2f}",
            f"{result.wall_ratio:.2f}",
        ]
        for run_lock, result in results.items()
    ]
    return "\n".join(
        [
            heading(f"4. Run lock: {APPLICATIONS} applications start one {STEPS}-step pipeline together"),
            f"Each application is an OS process with its own luigi local scheduler and worker; it builds a "
            f"chain of {STEPS} tasks, each",
            f"sleeping {step_seconds:g} s in run(), loading the previous output and dumping an int, with "
            "should_lock_run = true, on a fresh local cache",
            "shared by all of them. They start together once imported; first one application runs alone "
            "on its own fresh cache.",
            f"luigi: [scheduler] retry_delay = {RETRY_DELAY_SECONDS} s, [worker] keep_alive = true, "
            f"wait_interval = {WORKER_WAIT_INTERVAL_SECONDS} s, wait_jitter = 0",
            "(gokart's best case: its followers fail, and see a finished step only when luigi retries them; "
            "luigi's default poll is 1 s + up to 5 s).",
            "Follower lag: from the computing application's dump returning to each other application's "
            "run() returning (it skipped),",
            "and to luigi marking the step done there (after gokart's SUCCESS handlers, which dump the "
            "task log). Wall: from the common",
            "start to the last luigi.build returning.",
            "",
            table(
                [
                    "base class (run lock)",
                    "runs per step",
                    "failed attempts",
                    "lag to skip ms (median / max)",
                    "lag to done ms (median / max)",
                    "1 alone s",
                    f"{APPLICATIONS} together s",
                    "together / alone",
                ],
                rows,
            ),
        ]
    )
