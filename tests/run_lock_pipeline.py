"""A small DAG (a diamond plus a chain) whose every run() leaves a line in an append-only side log."""

from __future__ import annotations

import os
import time
from typing import Any

import luigi

import locked_targets
from locked_targets import RunWithLock


def record_run(task: luigi.Task) -> None:
    """Append 'TaskFamily application' to the side log, one write per line, and take some time."""
    line = f"{task.get_task_family()} {os.environ['PIPELINE_APPLICATION']}\n"
    descriptor = os.open(os.environ["PIPELINE_SIDE_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)
    time.sleep(float(os.environ.get("PIPELINE_TASK_SECONDS", "1.0")))


@RunWithLock
class Source(locked_targets.TaskOnKart[list[int]]):
    """The root of the diamond; the class form of the decorator."""

    def run(self) -> None:
        record_run(self)
        self.dump(list(range(100_000)))


class Left(locked_targets.TaskOnKart[int]):
    source = luigi.TaskParameter()

    def requires(self) -> luigi.Task:
        return self.source

    @RunWithLock
    def run(self) -> None:
        record_run(self)
        self.dump(sum(self.load()))


class Right(locked_targets.TaskOnKart[int]):
    source = luigi.TaskParameter()

    def requires(self) -> luigi.Task:
        return self.source

    @RunWithLock
    def run(self) -> None:
        record_run(self)
        self.dump(max(self.load()))


class Join(locked_targets.TaskOnKart[dict[str, int]]):
    """Joins the diamond; locked by gokart's parameter instead of the decorator."""

    left = luigi.TaskParameter()
    right = luigi.TaskParameter()

    def requires(self) -> dict[str, luigi.Task]:
        return {"left": self.left, "right": self.right}

    def run(self) -> None:
        record_run(self)
        self.dump({"left": self.load("left"), "right": self.load("right")})


class Report(locked_targets.TaskOnKart[str]):
    join = luigi.TaskParameter()

    def requires(self) -> luigi.Task:
        return self.join

    @RunWithLock
    def run(self) -> None:
        record_run(self)
        joined: dict[str, Any] = self.load()
        self.dump(f"left={joined['left']} right={joined['right']}")


def pipeline(workspace: str) -> Report:
    source = Source(workspace_directory=workspace)
    left = Left(source=source, workspace_directory=workspace)
    right = Right(source=source, workspace_directory=workspace)
    join = Join(left=left, right=right, workspace_directory=workspace, should_lock_run=True)
    return Report(join=join, workspace_directory=workspace)


TASK_FAMILIES = ("Source", "Left", "Right", "Join", "Report")


class Overlapping(locked_targets.TaskOnKart[None]):
    """Two outputs shared with a twin task that lists them in the opposite order."""

    reverse = luigi.BoolParameter()

    def output(self) -> list[locked_targets.LockedTarget]:
        targets = [
            self.make_target("overlap/x.pkl", use_unique_id=False),
            self.make_target("overlap/y.pkl", use_unique_id=False),
        ]
        return targets[::-1] if self.reverse else targets

    @RunWithLock
    def run(self) -> None:
        record_run(self)
        for target in self.output():
            target.dump("shared")
