"""The pipeline of scenario 4: a chain of steps, each sleeping, then dumping a small object.

The chain exists twice, alike but for the base class: ``LockedStep`` on
``locked_targets.TaskOnKart`` and ``GokartStep`` on ``gokart.TaskOnKart``. Which run lock a
step takes, and where its cache lives, come from the luigi configuration
(``[TaskOnKart] should_lock_run = true``, ``workspace_directory``, and the Redis settings).

Every application appends its events to one side log shared by all of them, with the side
log writer of ``locked_targets.testing`` (one ``O_APPEND`` write a line), so lines of
different processes never interleave:

- ``landed``: right after the step's own dump returned, in the application that computed it;
- ``returned``: when the step's outermost ``run()`` returned, computed or skipped;
- ``failed``: when ``run()`` raised instead (as gokart's run lock does when another application holds it);
- ``done``: when luigi has marked the step done in this application (the last SUCCESS handler);
- ``finished``: when the application's ``luigi.build`` returned (no step).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import gokart
import luigi
from gokart.utils import FlattenableItems

import locked_targets
from locked_targets.testing import append_line

STEPS = 3
SIDE_LOG_VARIABLE = "BENCH_RUN_LOCK_SIDE_LOG"
APPLICATION_VARIABLE = "BENCH_RUN_LOCK_APPLICATION"
STEP_SECONDS_VARIABLE = "BENCH_RUN_LOCK_STEP_SECONDS"


def record(event: str, step: int | None) -> None:
    """Append ``event step application time`` to the side log (``-`` for no step)."""
    line = f"{event} {'-' if step is None else step} {os.environ[APPLICATION_VARIABLE]} {time.time():.6f}"
    append_line(os.environ[SIDE_LOG_VARIABLE], line)


def compute(task: LockedStep | GokartStep) -> None:
    """The step's work: take a while, add to the previous step's value, publish it."""
    time.sleep(float(os.environ[STEP_SECONDS_VARIABLE]))
    previous: int = task.load() if task.step > 1 else 0
    task.dump(previous + task.step)
    record("landed", task.step)


def recorded_run(step: int, run: Callable[[], Any]) -> Callable[[], Any]:
    """``run`` (with whatever run lock the base class put around it) logging how it ended."""

    def run_and_record() -> Any:
        try:
            result = run()
        except BaseException:
            record("failed", step)
            raise
        record("returned", step)
        return result

    return run_and_record


class LockedStep(locked_targets.TaskOnKart[int]):
    """One step of the chain under locked_targets' run lock."""

    step: int = luigi.IntParameter()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run = recorded_run(self.step, self.run)  # type: ignore[method-assign]

    def requires(self) -> FlattenableItems[gokart.TaskOnKart[Any]]:
        return LockedStep(step=self.step - 1) if self.step > 1 else []

    def run(self) -> None:
        compute(self)


class GokartStep(gokart.TaskOnKart[int]):
    """The same step under gokart's own run lock."""

    step: int = luigi.IntParameter()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.run = recorded_run(self.step, self.run)  # type: ignore[method-assign]

    def requires(self) -> FlattenableItems[gokart.TaskOnKart[Any]]:
        return GokartStep(step=self.step - 1) if self.step > 1 else []

    def run(self) -> None:
        compute(self)


# Registered after gokart's own SUCCESS handlers (which dump the task log), so it runs last.
@luigi.Task.event_handler(luigi.Event.SUCCESS)  # type: ignore[no-untyped-call, untyped-decorator]
def _record_done(task: luigi.Task) -> None:
    if isinstance(task, LockedStep | GokartStep):
        record("done", task.step)


# The chain of each run lock the scenario compares, by the name the applications are given.
STEP_CLASSES: dict[str, type[LockedStep] | type[GokartStep]] = {
    "locked_targets": LockedStep,
    "gokart": GokartStep,
}
