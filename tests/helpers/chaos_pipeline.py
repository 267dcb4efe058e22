"""A pipeline whose every computation and every publish leaves a line in a side log, and one application
building it: ``python -m helpers.chaos_pipeline WORKSPACE``, 0 once ``gokart.build`` has built it.

``Seed`` feeds three ``Branch``es, which ``Merge`` joins; every run takes the run lock. Each
``run()`` appends ``C <family> <application>``, checks that what it loads is whole (``T`` and
a failure if not, also for a load that fails to unpickle), takes ``PIPELINE_TASK_SECONDS`` and
dumps a megabyte object of its own (``helpers.hammer.make_object``, its nonce
``<family>/<application>``). Its output is a
``LockedTarget`` over an audited storage target: a publish appends ``W <nonce>``, a dump that
skipped or whose commit was refused appends nothing. The luigi configuration comes from
``LUIGI_CONFIG_PATH`` (``helpers.applications.Applications`` writes one, with luigi's retries).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import gokart
import luigi
from gokart.file_processor import make_file_processor
from gokart.utils import FlattenableItems

import locked_targets
from helpers.hammer import AuditedTarget, is_whole, make_object
from locked_targets.errors import LockError
from locked_targets.storage import storage_kind_for
from locked_targets.target import LockedTarget
from locked_targets.testing import append_line

BRANCHES = 3
TASK_FAMILIES = ("Seed", *(f"Branch{index}" for index in range(BRANCHES)), "Merge")


def side_log() -> str:
    return os.environ["PIPELINE_SIDE_LOG"]


def application() -> str:
    return os.environ["PIPELINE_APPLICATION"]


class AuditedTask(locked_targets.TaskOnKart[dict[str, Any]]):
    """A task whose output's publishes are audited, and whose run is noted, checks its inputs and dumps."""

    def family(self) -> str:
        return type(self).__name__

    def output_path(self) -> str:
        return os.path.join(self.workspace_directory, f"{self.family()}_{self.make_unique_id()}.pkl")

    def output(self) -> FlattenableItems[Any]:
        path, settings = self.output_path(), self.lock_settings()
        storage = storage_kind_for(path).single_file_target(path, make_file_processor(path), settings)
        return LockedTarget(AuditedTarget(storage, side_log()), settings=settings, task=self.task_id)

    @locked_targets.RunWithLock
    def run(self) -> None:
        append_line(side_log(), f"C {self.family()} {application()}")
        if self.requires():
            self.check_inputs()
        time.sleep(float(os.environ["PIPELINE_TASK_SECONDS"]))
        self.dump(make_object(f"{self.family()}/{application()}"))

    def check_inputs(self) -> None:
        """Load every input: one that fails to unpickle, or is not whole, is noted as torn; the run fails."""
        try:
            inputs: list[Any] = self.load()  # every task requires a list
            if not all(is_whole(loaded) for loaded in inputs):
                raise ValueError(f"{self.family()} loaded an input that is not whole")
        except LockError:
            raise  # a lock lost, or Redis unavailable: the run is retried, nothing was read
        except Exception:
            append_line(side_log(), f"T {self.family()} {application()}")
            raise


class Seed(AuditedTask):
    pass


class Branch(AuditedTask):
    index: int = luigi.IntParameter()
    seed: AuditedTask = gokart.TaskInstanceParameter()

    def family(self) -> str:
        return f"Branch{self.index}"

    def requires(self) -> FlattenableItems[gokart.TaskOnKart[Any]]:
        return [self.seed]  # a list, so that load() returns a list here too


class Merge(AuditedTask):
    def requires(self) -> FlattenableItems[gokart.TaskOnKart[Any]]:
        seed = Seed(workspace_directory=self.workspace_directory)
        return [
            Branch(index=index, seed=seed, workspace_directory=self.workspace_directory)
            for index in range(BRANCHES)
        ]


def every_task(workspace: str) -> list[AuditedTask]:
    """Every task of the pipeline on ``workspace``: ``Merge`` and what it requires."""
    merge = Merge(workspace_directory=workspace)
    branches: list[Branch] = luigi.task.flatten(merge.requires())  # type: ignore[no-untyped-call]
    return [branches[0].seed, *branches, merge]


def main(workspace: str) -> int:
    gokart.build(Merge(workspace_directory=workspace), return_value=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
