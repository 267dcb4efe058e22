"""Processes that race to write and read the same write-once targets while the test injects faults, and the
tally of what they saw: torn reads, lost writes, double writes.

Every target is written once (nothing removes it): each worker dumps an object of its own to
each target in turn (megabyte objects, ``helpers.hammer.make_object``), then loads it back.
Every publish appends ``W <nonce>`` to a shared audit log from inside the storage call, so a
dump that skipped (the file was there) or whose commit was refused leaves no line. A nonce
names its target: ``<target index>:<writer>``.

- torn read: a load returned an object that is not whole, or not one dumped to that target;
- lost write: a dump returned normally, yet the target ends without its object while it
  published, or ends with an object nobody published;
- double write: a target published more than once.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from gokart.file_processor import make_file_processor
from gokart.target import TargetOnKart, make_target

from helpers.hammer import AuditedTarget, is_whole, make_object
from locked_targets.errors import LockLost
from locked_targets.settings import Settings
from locked_targets.storage import storage_kind_for
from locked_targets.target import LockedTarget
from locked_targets.testing import read_lines

RETURNED = "returned"
STALE_WRITER = "stale"
# How long the stale holder may wait for the test to let it commit.
HOLD_BOUND_SECONDS = 60.0


@dataclasses.dataclass
class Dump:
    """One dump call: to which target, which object, and how it ended (``RETURNED`` or the error)."""

    index: int
    nonce: str
    outcome: str


@dataclasses.dataclass
class WorkerReport:
    """What one worker did and saw."""

    dumps: list[Dump] = dataclasses.field(default_factory=list)
    # (target index, the nonce loaded; None for a torn load)
    loaded: list[tuple[int, str | None]] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Tally:
    """The counts a chaos scenario prints and asserts on."""

    operations: int
    faults: int
    torn_reads: int
    lost_writes: int
    double_writes: int

    def line(self, scenario: str) -> str:
        return (
            f"{scenario}: {self.operations} operations, {self.faults} faults injected, {self.torn_reads} "
            f"torn reads, {self.lost_writes} lost writes, {self.double_writes} double writes"
        )


def nonce_of(index: int, writer: str) -> str:
    return f"{index}:{writer}"


def index_of(nonce: str) -> int:
    return int(nonce.partition(":")[0])


def audited_target(path: str, settings: Settings, audit_log: str, *, locked: bool = True) -> TargetOnKart:
    """The locked target of ``path``, its publishes audited; unlocked: gokart's own (no lock, a rename)."""
    if not locked:
        return AuditedTarget(make_target(path), audit_log)
    storage = storage_kind_for(path).single_file_target(path, make_file_processor(path), settings)
    return LockedTarget(AuditedTarget(storage, audit_log), settings=settings)


def contend(
    paths: Sequence[str], settings: Settings, audit_log: str, writer: int, locked: bool = True
) -> WorkerReport:
    """Dump an object of this writer's own to each target in turn, then load the target back."""
    report = WorkerReport()
    for index, path in enumerate(paths):
        target = audited_target(path, settings, audit_log, locked=locked)
        nonce = nonce_of(index, str(writer))
        report.dumps.append(Dump(index, nonce, _dump(target, make_object(nonce), report)))
        try:
            loaded = target.load()
        except LockLost as error:
            report.errors.append(f"load: LockLost: {error}")
            continue
        except Exception as error:  # a torn pickle fails to load
            report.loaded.append((index, None))
            report.errors.append(f"load: {type(error).__name__}: {error}")
            continue
        report.loaded.append((index, loaded["nonce"] if is_whole(loaded) else None))
    return report


def _dump(target: TargetOnKart, obj: Any, report: WorkerReport) -> str:
    try:
        target.dump(obj)
    except LockLost as error:
        return f"LockLost: {error}"
    except Exception as error:
        report.errors.append(f"dump: {type(error).__name__}: {error}")
        return f"{type(error).__name__}: {error}"
    return RETURNED


class Signal(Protocol):
    """An event several processes share (a ``multiprocessing.Manager().Event()``)."""

    def set(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class HeldWhilePickled:
    """An object whose pickling, inside its dump's exclusive lock, waits until the test lets it go on.

    It signals ``holding`` once its dump holds the lock, and waits for ``go_on``; it pickles as
    the object ``make_object`` makes, so a reader loads it like any other.
    """

    def __init__(self, nonce: str, holding: Signal, go_on: Signal) -> None:
        self.content = make_object(nonce)
        self.holding = holding
        self.go_on = go_on

    def __reduce__(self) -> tuple[Any, ...]:
        self.holding.set()
        if not self.go_on.wait(HOLD_BOUND_SECONDS):
            raise TimeoutError(f"the test did not let the held dump go on within {HOLD_BOUND_SECONDS:g} s")
        return dict, (self.content,)


def hold_a_dump(
    paths: Sequence[str], index: int, settings: Settings, audit_log: str, holding: Signal, go_on: Signal
) -> Dump:
    """Dump to target ``index`` of ``contend``'s, holding its exclusive lock until ``go_on``; how it ended."""
    nonce = nonce_of(index, STALE_WRITER)
    target = audited_target(paths[index], settings, audit_log)
    return Dump(index, nonce, _dump(target, HeldWhilePickled(nonce, holding, go_on), WorkerReport()))


def final_nonce(path: str) -> str | None:
    """The nonce of the object a local target holds at the end, or None if it holds none (or a torn one)."""
    try:
        with open(path, "rb") as file:
            loaded = pickle.load(file)
    except FileNotFoundError:
        return None
    nonce: str | None = loaded["nonce"] if is_whole(loaded) else None
    return nonce


def tally(
    paths: Sequence[str],
    reports: Sequence[WorkerReport],
    extra_dumps: Sequence[Dump],
    audit_log: str,
    faults: int,
) -> Tally:
    """Count torn reads, lost writes and double writes over every worker's report and the targets' ends."""
    dumps = [*extra_dumps, *(dump for report in reports for dump in report.dumps)]
    published = [line.removeprefix("W ") for line in read_lines(audit_log) if line.startswith("W ")]
    dumped = {dump.nonce for dump in dumps}
    finals = [final_nonce(path) for path in paths]
    torn = sum(
        1
        for report in reports
        for index, nonce in report.loaded
        if nonce is None or nonce not in dumped or index_of(nonce) != index
    )
    lost = sum(1 for dump in dumps if dump.outcome == RETURNED and _lost(dump, finals[dump.index], published))
    publishes = Counter(index_of(nonce) for nonce in published)
    double = sum(count - 1 for count in publishes.values() if count > 1)
    operations = len(dumps) + sum(len(report.loaded) for report in reports)
    return Tally(operations, faults, torn, lost, double)


def _lost(dump: Dump, final: str | None, published: list[str]) -> bool:
    """Whether a dump that returned normally left its target without its object, though it published it,
    or with an object nobody published."""
    if final == dump.nonce:
        return False
    return dump.nonce in published or final is None or final not in published
