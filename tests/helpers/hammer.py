"""A worker that hammers one cache target with random exists/load/dump/remove, auditing what it sees.

Every real write and remove appends one line to a shared, append-only audit log from
inside the storage call (so, with the lock on, in lock order). Every load checks the
object's digest. The test then reads the log and the workers' reports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import time
from typing import Any

from gokart.file_processor import make_file_processor
from gokart.target import TargetOnKart, make_target

from locked_targets.settings import Settings
from locked_targets.storage import storage_kind_for
from locked_targets.target import LockedTarget
from locked_targets.testing import append_line
from locked_targets.wrapped_target import WrappedTarget

OBJECT_BYTES = 2 * 1024 * 1024


@dataclasses.dataclass
class HammerReport:
    """What one worker saw."""

    operations: int = 0
    whole_loads: int = 0
    absent_loads: int = 0
    torn_loads: int = 0
    loaded_nonces: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)


def make_object(nonce: str) -> dict[str, Any]:
    payload = random.Random(nonce).randbytes(OBJECT_BYTES)
    return {"nonce": nonce, "payload": payload, "digest": hashlib.sha256(payload).hexdigest()}


def is_whole(loaded: Any) -> bool:
    return (
        isinstance(loaded, dict)
        and isinstance(loaded.get("payload"), bytes)
        and len(loaded["payload"]) == OBJECT_BYTES
        and hashlib.sha256(loaded["payload"]).hexdigest() == loaded.get("digest")
    )


class AuditedTarget(WrappedTarget):
    """Delegates to a storage target and logs every completed write and remove."""

    def __init__(self, target: TargetOnKart, audit_log: str) -> None:
        super().__init__(target)
        self._audit_log = audit_log

    def _dump(
        self, obj: Any, task_params: Any = None, custom_labels: Any = None, required_task_outputs: Any = None
    ) -> None:
        super()._dump(obj)
        append_line(self._audit_log, f"W {obj['nonce']}")

    def _remove(self) -> None:
        super()._remove()
        append_line(self._audit_log, "R")


def hammer(
    path: str, settings: Settings, locked: bool, operations: int, audit_log: str, seed: int
) -> HammerReport:
    """Run ``operations`` random operations on ``path``; with ``locked`` False, as plain gokart."""
    if locked:
        storage = storage_kind_for(path).single_file_target(path, make_file_processor(path), settings)
        target: TargetOnKart = LockedTarget(AuditedTarget(storage, audit_log), settings=settings)
    else:  # plain gokart: no lock, and no write-once commit behind it either
        target = AuditedTarget(make_target(path), audit_log)
    rng = random.Random(seed)
    report = HammerReport()
    for number in range(operations):
        operation = rng.choices(["exists", "load", "dump", "remove"], weights=[3, 4, 2, 1])[0]
        try:
            _one_operation(target, operation, locked, f"{seed}-{number}", report)
        except Exception as error:
            report.errors.append(f"{operation}: {type(error).__name__}: {error}")
        report.operations += 1
        time.sleep(rng.random() * 0.01)
    return report


def _one_operation(
    target: TargetOnKart, operation: str, locked: bool, nonce: str, report: HammerReport
) -> None:
    if operation == "exists":
        target.exists()
    elif operation == "load":
        _load(target, report)
    elif operation == "dump":
        if locked or not target.exists():
            target.dump(make_object(nonce))
    elif locked or target.exists():
        target.remove()


def _load(target: TargetOnKart, report: HammerReport) -> None:
    try:
        loaded = target.load()
    except Exception as error:
        if _is_absent(error):
            report.absent_loads += 1
        else:
            report.torn_loads += 1
            report.errors.append(f"load: {type(error).__name__}: {error}")
        return
    if is_whole(loaded):
        report.whole_loads += 1
        report.loaded_nonces.append(loaded["nonce"])
    else:
        report.torn_loads += 1


def _is_absent(error: Exception) -> bool:
    """luigi's local and S3 targets and gcsfs each say 'not found' their own way."""
    return (
        isinstance(error, FileNotFoundError)
        or "NotFound" in type(error).__name__
        or "NoSuchKey" in str(error)
    )
