"""One application building the test pipeline: ``python -m helpers.run_lock_app``; 0 on success.

Arguments: the workspace, the scheduler (``local`` or ``host:port`` of a luigid), what to
build, and the build call (``luigi``: ``luigi.build``; ``gokart``: ``gokart.build``, local
scheduler only). It prints what the build call returned on a line that starts with
``RETURNED``, and whether every task of the build is complete on one that starts with
``COMPLETE`` (with a central scheduler, tasks that another worker runs may not be yet). It
exits 0 if the build succeeded (luigi: also after retries).
"""

from __future__ import annotations

import sys
from typing import Any

import gokart
import luigi
import luigi.task

from helpers.run_lock_pipeline import FreeSum, Overlapping, Source, pipeline

RETURNED = "run-lock-app-returned"
COMPLETE = "run-lock-app-complete"


def build_with_luigi(task: gokart.TaskOnKart[Any], scheduler: str) -> tuple[object, bool]:
    """(what ``luigi.build`` returns, whether luigi counts the build a success, also after retries)."""
    where: dict[str, Any] = {"local_scheduler": True}
    if scheduler != "local":
        host, port = scheduler.split(":")
        where = {"scheduler_host": host, "scheduler_port": int(port)}
    result = luigi.build([task], detailed_summary=True, log_level="WARNING", **where)  # type: ignore[no-untyped-call]
    print(result.summary_text)
    # Without detailed_summary, luigi.build returns scheduling_succeeded.
    return result.scheduling_succeeded, result.status.name in ("SUCCESS", "SUCCESS_WITH_RETRY")


def build_with_gokart(task: gokart.TaskOnKart[Any], scheduler: str) -> tuple[object, bool]:
    """(what ``gokart.build`` returns, True): it raises when the build fails."""
    if scheduler != "local":
        raise ValueError("gokart.build runs its own local scheduler")
    return gokart.build(task), True


def task_and_its_requirements(task: luigi.Task) -> list[luigi.Task]:
    """``task`` and every task it requires, directly or not."""
    requirements = luigi.task.flatten(task.requires())  # type: ignore[no-untyped-call]
    return [task, *(each for required in requirements for each in task_and_its_requirements(required))]


def main(workspace: str, scheduler: str, what: str, builder: str) -> int:
    tasks: dict[str, gokart.TaskOnKart[Any]] = {
        "pipeline": pipeline(workspace),
        "source": Source(workspace_directory=workspace),
        "overlapping": Overlapping(workspace_directory=workspace),
        "overlapping-reversed": Overlapping(workspace_directory=workspace, reverse=True),
        "free-pipeline": FreeSum(workspace_directory=workspace),
    }
    build = {"luigi": build_with_luigi, "gokart": build_with_gokart}[builder]
    returned, succeeded = build(tasks[what], scheduler)
    built = task_and_its_requirements(tasks[what])
    complete = all(each.complete() for each in built)  # type: ignore[no-untyped-call]
    print(RETURNED, repr(returned))
    print(COMPLETE, complete)
    return 0 if succeeded else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
