"""The DAG of scenarios 5 to 8: N small leaves and one aggregate that requires and loads them all.

``GokartLeaf`` and ``GokartAggregate`` are on ``gokart.TaskOnKart``: unlocked, or under
gokart's own lock when the luigi configuration sets ``[TaskOnKart] redis_host`` and
``redis_port``. ``LockedLeaf`` and ``LockedAggregate`` are the very same tasks with
``locked_targets.TaskOnKart`` first among their bases, as a user adopts it: its targets
are locked, the work is the same. Where the cache lives and which Redis is used come from
the luigi configuration of each run.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gokart
import luigi
from gokart.utils import FlattenableItems

import locked_targets

Leaf = dict[str, Any]


def leaf_value(index: int) -> Leaf:
    """What a leaf dumps: a small object, so the time is the pipeline's, not the pickling's."""
    return {"leaf": index, "values": list(range(10))}


class GokartLeaf(gokart.TaskOnKart[Leaf]):
    """One leaf on gokart's own base class."""

    index: int = luigi.IntParameter()

    def run(self) -> None:
        self.dump(leaf_value(self.index))


class GokartAggregate(gokart.TaskOnKart[int]):
    """Requires every leaf and loads them all, to sum their indexes."""

    leaves: int = luigi.IntParameter()
    leaf_class: ClassVar[type[GokartLeaf]] = GokartLeaf

    def requires(self) -> FlattenableItems[gokart.TaskOnKart[Any]]:
        return [self.leaf_class(index=index) for index in range(self.leaves)]

    def run(self) -> None:
        leaves: list[Leaf] = self.load()
        self.dump(sum(leaf["leaf"] for leaf in leaves))


class LockedLeaf(locked_targets.TaskOnKart[Leaf], GokartLeaf):
    """The same leaf, its targets locked by locked_targets."""


class LockedAggregate(locked_targets.TaskOnKart[int], GokartAggregate):
    """The same aggregate, requiring ``LockedLeaf``s, its targets locked by locked_targets."""

    leaf_class = LockedLeaf


# The aggregate of each base class, by the name the applications are given.
AGGREGATES: dict[str, type[GokartAggregate]] = {
    "gokart": GokartAggregate,
    "locked_targets": LockedAggregate,
}
