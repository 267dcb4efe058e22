r"""The demo's gokart pipeline: a chain into a diamond, each output a few megabytes carrying its checksum.

    GenerateEvents -> CleanEvents -> ShareOfUser -> JoinShares
                                  \-> ShareOfDay  -/

Every task subclasses ``locked_targets.TaskOnKart``: the one-import change a user makes.
Each ``run()`` notes itself in the side log, checks every input it loads, and dumps a
payload that holds its columns and their SHA-256, so any load can tell a whole output
from a torn or foreign one. The output is the ``LockedTarget`` that ``make_target``
returns, rebuilt around a storage target that notes each write reaching the cache.

``python -m demo --unlocked`` undoes the one-import change in its applications
(``DEMO_TARGETS=gokart`` in their environment): the tasks then subclass gokart's own
``TaskOnKart``, and every output is the target gokart's ``make_target`` builds, wrapped
only to note its writes: neither locked_targets' locks nor its storage.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict, cast

import gokart
import numpy as np
import numpy.typing as npt
from gokart.required_task_output import RequiredTaskOutput
from gokart.target import TargetOnKart
from gokart.utils import FlattenableItems

import locked_targets
from demo.events import WHOLE, EventKind, EventLog
from locked_targets.wrapped_target import WrappedTarget

TARGETS_VARIABLE = "DEMO_TARGETS"
"""``gokart`` in an application's environment: its tasks use gokart's own targets, unlocked."""

# The tasks' base: locked_targets' TaskOnKart, or gokart's own when the applications run
# unlocked. mypy checks the first.
if TYPE_CHECKING or os.environ.get(TARGETS_VARIABLE) != "gokart":
    from locked_targets import TaskOnKart
else:
    from gokart import TaskOnKart

ROWS = 250_000  # three to five float64/int64 columns: 6 to 10 MB per output
USERS = 5_000
DAYS = 365
# Stands for real computation, so that applications overlap as they would in production.
WORK_SECONDS = 0.5

Column = npt.NDArray[Any]
# The tasks a task needs, by the name its run() loads them under.
Inputs = dict[str, type["DemoTask"]]


class Payload(TypedDict):
    """What every task of the demo stores: its name, its columns, and their checksum."""

    task: str
    columns: dict[str, Column]
    checksum: str


def checksum_of(task: str, columns: dict[str, Column]) -> str:
    digest = hashlib.sha256(task.encode())
    for name in sorted(columns):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(columns[name]).tobytes())
    return digest.hexdigest()


def payload_of(task: str, columns: dict[str, Column]) -> Payload:
    return {"task": task, "columns": columns, "checksum": checksum_of(task, columns)}


def verdict_on(loaded: object, task: str) -> str:
    """``WHOLE`` if ``loaded`` is the complete payload of ``task``, else what is wrong with it."""
    if not isinstance(loaded, dict) or set(loaded) != {"task", "columns", "checksum"}:
        return f"broken: not a payload ({type(loaded).__name__})"
    if loaded["task"] != task:
        return f"broken: the payload of {loaded['task']}"
    if checksum_of(task, loaded["columns"]) != loaded["checksum"]:
        return "broken: checksum mismatch"
    return WHOLE


def checked_load(load: Callable[[], object], task: str, events: EventLog) -> Payload | None:
    """Load ``task``'s output with ``load``, note in the side log whether it was whole; None if not."""
    try:
        loaded = load()
    except Exception as error:
        events.record(EventKind.LOAD, task, f"broken: {type(error).__name__}: {error}")
        return None
    verdict = verdict_on(loaded, task)
    events.record(EventKind.LOAD, task, verdict)
    return cast(Payload, loaded) if verdict == WHOLE else None


class WriteRecorder(WrappedTarget):
    """A storage target that notes in the side log every write it performs, then delegates.

    With locked_targets it sits under the lock (``LockedTarget`` wraps it), so it sees only
    the dumps the lock let through: not those skipped because another application wrote
    first. Unlocked, it wraps gokart's own target and sees every dump that reached the file.
    """

    def __init__(self, target: TargetOnKart, task: str) -> None:
        super().__init__(target)
        self._task = task

    def _dump(
        self,
        obj: Any,
        task_params: dict[str, str] | None = None,
        custom_labels: dict[str, str] | None = None,
        required_task_outputs: FlattenableItems[RequiredTaskOutput] | None = None,
    ) -> None:
        super()._dump(obj, task_params, custom_labels, required_task_outputs)
        EventLog.of_this_process().record(EventKind.WRITE, self._task)


class DemoTask(TaskOnKart[Payload]):
    """A task of the demo: loads and checks its inputs, computes its columns, dumps them with a checksum."""

    task_namespace = "demo"
    inputs: ClassVar[Inputs] = {}

    @property
    def name(self) -> str:
        return type(self).__name__

    def requires(self) -> FlattenableItems[gokart.TaskOnKart[Any]]:
        return {name: task_class() for name, task_class in self.inputs.items()}

    def output(self) -> TargetOnKart:
        """The task's cache file, noting each write: under the lock when locked_targets builds it."""
        target = self.make_target()
        if isinstance(target, locked_targets.LockedTarget):
            return locked_targets.LockedTarget(
                WriteRecorder(target.wrapped, self.name), settings=self.lock_settings(), task=self.task_id
            )
        return WriteRecorder(target, self.name)

    def run(self) -> None:
        events = EventLog.of_this_process()
        events.record(EventKind.RUN, self.name)
        columns: dict[str, dict[str, Column]] = {}
        for input_name, task_class in self.inputs.items():
            payload = checked_load(functools.partial(self.load, input_name), task_class.__name__, events)
            if payload is None:
                raise RuntimeError(f"{self.name} loaded a broken {task_class.__name__}: see the side log")
            columns[input_name] = payload["columns"]
        time.sleep(WORK_SECONDS)
        self.dump(payload_of(self.name, self.compute(columns)))

    def compute(self, inputs: dict[str, dict[str, Column]]) -> dict[str, Column]:
        """This task's columns, from the columns of its inputs (keyed as in ``inputs``)."""
        raise NotImplementedError


class GenerateEvents(DemoTask):
    """Synthetic purchases: who, on which day, how much (refunds are negative)."""

    def compute(self, inputs: dict[str, dict[str, Column]]) -> dict[str, Column]:
        generator = np.random.default_rng(20240101)
        return {
            "user": generator.integers(0, USERS, ROWS),
            "day": generator.integers(0, DAYS, ROWS),
            "amount": generator.normal(40.0, 25.0, ROWS).round(2),
        }


class CleanEvents(DemoTask):
    """Purchases without refunds, with the amount including tax."""

    inputs: ClassVar[Inputs] = {"events": GenerateEvents}

    def compute(self, inputs: dict[str, dict[str, Column]]) -> dict[str, Column]:
        events = inputs["events"]
        kept = events["amount"] > 0
        cleaned = {name: column[kept] for name, column in events.items()}
        cleaned["amount_with_tax"] = (cleaned["amount"] * 1.1).round(2)
        return cleaned


class ShareOfUser(DemoTask):
    """Each purchase's share of its user's total spending."""

    inputs: ClassVar[Inputs] = {"events": CleanEvents}

    def compute(self, inputs: dict[str, dict[str, Column]]) -> dict[str, Column]:
        events = inputs["events"]
        totals = np.bincount(events["user"], weights=events["amount"], minlength=USERS)
        return {**events, "user_share": events["amount"] / totals[events["user"]]}


class ShareOfDay(DemoTask):
    """Each purchase's share of its day's total takings."""

    inputs: ClassVar[Inputs] = {"events": CleanEvents}

    def compute(self, inputs: dict[str, dict[str, Column]]) -> dict[str, Column]:
        events = inputs["events"]
        totals = np.bincount(events["day"], weights=events["amount"], minlength=DAYS)
        return {**events, "day_share": events["amount"] / totals[events["day"]]}


class JoinShares(DemoTask):
    """Both shares side by side: the bottom of the diamond."""

    inputs: ClassVar[Inputs] = {"by_user": ShareOfUser, "by_day": ShareOfDay}

    def compute(self, inputs: dict[str, dict[str, Column]]) -> dict[str, Column]:
        return {**inputs["by_user"], "day_share": inputs["by_day"]["day_share"]}


FINAL_TASK = JoinShares


def tasks_needed_for(final: type[DemoTask]) -> list[type[DemoTask]]:
    """Every task class ``final`` depends on, and itself, each after the tasks it needs."""
    ordered: list[type[DemoTask]] = []
    for task_class in final.inputs.values():
        ordered += [needed for needed in tasks_needed_for(task_class) if needed not in ordered]
    return [*ordered, final]
