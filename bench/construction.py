"""Scenario 5: what building a target costs, by ``make_target(path)`` and through a task's ``output()``.

gokart and luigi build targets all the time: every ``complete()``, ``input()`` and
``self.load()`` calls ``output()`` again, and that makes a new target. So a target that is
slow to build slows every step of a pipeline, lock or no lock. Nothing is loaded or
dumped here. Batches of the variants alternate, so drift in the machine's load
touches all of them alike.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
from collections.abc import Callable

from bench.dag_pipeline import GokartLeaf, LockedLeaf
from bench.tables import heading, table, verdict
from bench.timing import call_seconds
from bench.variants import RedisAddress, Variant, make_target

# Issue 9's goal: building a LockedTarget takes at most this many times as long as gokart's.
CONSTRUCTION_GOAL = 2.0
MAKE_TARGET = "make_target(path)"
OUTPUT = "task.output()"
BUILDERS = (MAKE_TARGET, OUTPUT)
CONSTRUCTION_VARIANTS = (Variant.UNLOCKED, Variant.GOKART_LOCK, Variant.LOCKED_TARGET)
_WARM_UP_CALLS = 100


@dataclasses.dataclass(frozen=True)
class ConstructionResult:
    """Median microseconds per construction, by builder and variant."""

    microseconds: dict[tuple[str, Variant], float]
    batches: int
    per_batch: int

    def ratio(self, builder: str, variant: Variant) -> float:
        """``variant``'s time per construction over unlocked gokart's."""
        return self.microseconds[builder, variant] / self.microseconds[builder, Variant.UNLOCKED]

    def goal_met(self, builder: str) -> bool:
        return self.ratio(builder, Variant.LOCKED_TARGET) <= CONSTRUCTION_GOAL


def _builders(directory: str, redis: RedisAddress) -> dict[tuple[str, Variant], Callable[[], object]]:
    path = os.path.join(directory, "constructed.pkl")
    tasks = {
        Variant.UNLOCKED: GokartLeaf(index=0),
        Variant.GOKART_LOCK: GokartLeaf(index=0, redis_host=redis.host, redis_port=redis.port),
        Variant.LOCKED_TARGET: LockedLeaf(index=0),
    }
    builders: dict[tuple[str, Variant], Callable[[], object]] = {}
    for variant in CONSTRUCTION_VARIANTS:
        builders[MAKE_TARGET, variant] = functools.partial(make_target, variant, path, redis)
        builders[OUTPUT, variant] = tasks[variant].output
    return builders


def _repeated(call: Callable[[], object], times: int) -> Callable[[], None]:
    def repeat() -> None:
        for _ in range(times):
            call()

    return repeat


def measure(directory: str, redis: RedisAddress, batches: int, per_batch: int) -> ConstructionResult:
    builders = _builders(directory, redis)
    for call in builders.values():
        _repeated(call, _WARM_UP_CALLS)()  # unique ids, settings and imports done before the clock
    samples: dict[tuple[str, Variant], list[float]] = {key: [] for key in builders}
    for _ in range(batches):
        for key, call in builders.items():
            samples[key].append(call_seconds(_repeated(call, per_batch)) / per_batch)
    return ConstructionResult(
        microseconds={key: statistics.median(values) * 1e6 for key, values in samples.items()},
        batches=batches,
        per_batch=per_batch,
    )


def report(result: ConstructionResult) -> str:
    rows = [
        [
            builder,
            *(f"{result.microseconds[builder, variant]:,.1f}" for variant in CONSTRUCTION_VARIANTS),
            *(f"{result.ratio(builder, variant):.2f}x" for variant in CONSTRUCTION_VARIANTS[1:]),
            f"<= {CONSTRUCTION_GOAL:g}x",
            verdict(result.goal_met(builder)),
        ]
        for builder in BUILDERS
    ]
    return "\n".join(
        [
            heading("5. Building a target (construction alone: nothing loaded or dumped)"),
            f"median over {result.batches} batches of {result.per_batch:,} constructions each, the variants' "
            "batches interleaved.",
            f"  {MAKE_TARGET}: as in scenario 2, (a) gokart.target.make_target, (b) the same with gokart's "
            "task_lock_params, (c) locked_targets.make_target;",
            f"  {OUTPUT}: the default output() of a task of scenario 6's DAG on (a) gokart.TaskOnKart, "
            "(b) the same with redis_host/redis_port,",
            "  (c) locked_targets.TaskOnKart (one task instance, as luigi's instance cache hands out).",
            "",
            table(
                [
                    "built by",
                    *(f"{variant.letter} us" for variant in CONSTRUCTION_VARIANTS),
                    "(b) / (a)",
                    "(c) / (a)",
                    "goal (c) / (a)",
                    "met",
                ],
                rows,
            ),
        ]
    )
