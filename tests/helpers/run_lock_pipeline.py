"""A small DAG (a diamond plus a chain) whose every run() leaves a line in an append-only side log."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import gokart
import luigi
from gokart.target import TargetOnKart
from gokart.utils import FlattenableItems

import locked_targets
from locked_targets import RunWithLock
from locked_targets.testing import append_line


def record_run(task: luigi.Task) -> None:
    """Append 'TaskFamily application' to the side log, and take some time."""
    append_line(
        os.environ["PIPELINE_SIDE_LOG"], f"{type(task).__name__} {os.environ['PIPELINE_APPLICATION']}"
    )
    time.sleep(float(os.environ.get("PIPELINE_TASK_SECONDS", "1.0")))


@RunWithLock
class Source(locked_targets.TaskOnKart[list[int]]):
    """The root of the diamond; the class form of the decorator."""

    def run(self) -> None:
        record_run(self)
        self.dump(list(range(100_000)))


class SideOfTheDiamond(locked_targets.TaskOnKart[int]):
    """Left and Right: each sums the source up its own way, under the method form of the decorator."""

    source: gokart.TaskOnKart[list[int]] = gokart.TaskInstanceParameter()

    def summarize(self, summary: Callable[[list[int]], int]) -> None:
        record_run(self)
        values: list[int] = self.load(self.source)
        self.dump(summary(values))


class Left(SideOfTheDiamond):
    @RunWithLock
    def run(self) -> None:
        self.summarize(sum)


class Right(SideOfTheDiamond):
    @RunWithLock
    def run(self) -> None:
        self.summarize(max)


class Join(locked_targets.TaskOnKart[dict[str, int]]):
    """Joins the diamond; locked by gokart's parameter instead of the decorator."""

    left: gokart.TaskOnKart[int] = gokart.TaskInstanceParameter()
    right: gokart.TaskOnKart[int] = gokart.TaskInstanceParameter()

    def run(self) -> None:
        record_run(self)
        self.dump({"left": self.load(self.left), "right": self.load(self.right)})


class Report(locked_targets.TaskOnKart[str]):
    join: gokart.TaskOnKart[dict[str, int]] = gokart.TaskInstanceParameter()

    @RunWithLock
    def run(self) -> None:
        record_run(self)
        joined = self.load(self.join)
        self.dump(f"left={joined['left']} right={joined['right']}")


def pipeline_tasks(workspace: str) -> dict[str, locked_targets.TaskOnKart[Any]]:
    """Every task of the pipeline on ``workspace``, by family; ``Report`` is the last."""
    source = Source(workspace_directory=workspace)
    left = Left(source=source, workspace_directory=workspace)
    right = Right(source=source, workspace_directory=workspace)
    join = Join(left=left, right=right, workspace_directory=workspace, should_lock_run=True)
    report = Report(join=join, workspace_directory=workspace)
    return {"Source": source, "Left": left, "Right": right, "Join": join, "Report": report}


def pipeline(workspace: str) -> locked_targets.TaskOnKart[Any]:
    return pipeline_tasks(workspace)["Report"]


TASK_FAMILIES = ("Source", "Left", "Right", "Join", "Report")


class Overlapping(locked_targets.TaskOnKart[None]):
    """Two outputs shared with a twin task that lists them in the opposite order."""

    reverse: bool = luigi.BoolParameter()

    def shared_targets(self) -> list[TargetOnKart]:
        targets: list[TargetOnKart] = [
            self.make_target("overlap/x.pkl", use_unique_id=False),
            self.make_target("overlap/y.pkl", use_unique_id=False),
        ]
        return targets[::-1] if self.reverse else targets

    def output(self) -> FlattenableItems[TargetOnKart]:
        return list[FlattenableItems[TargetOnKart]](self.shared_targets())

    @RunWithLock
    def run(self) -> None:
        record_run(self)
        for target in self.shared_targets():
            target.dump("shared")


class FreeLeaf(locked_targets.TaskOnKart[int]):
    """A task without a run lock: its write locks are taken together as its run starts."""

    index: int = luigi.IntParameter()

    def run(self) -> None:
        record_run(self)
        self.dump(self.index)


class FreeSum(locked_targets.TaskOnKart[int]):
    """Sums four ``FreeLeaf``s, without a run lock either."""

    def requires(self) -> FlattenableItems[gokart.TaskOnKart[int]]:
        return [FreeLeaf(workspace_directory=self.workspace_directory, index=index) for index in range(4)]

    def run(self) -> None:
        record_run(self)
        leaves: list[int] = self.load()
        self.dump(sum(leaves))
