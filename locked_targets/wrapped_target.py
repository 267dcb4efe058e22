"""``WrappedTarget``: a gokart target that does its storage work through another one.

A base for targets that add behaviour around a storage target (``LockedTarget`` adds
the lock; tests and the demo add auditing) without repeating gokart's interface.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gokart.conflict_prevention_lock.task_lock import TaskLockParams
from gokart.required_task_output import RequiredTaskOutput
from gokart.target import TargetOnKart
from gokart.utils import FlattenableItems

from locked_targets.storage.base import UNLOCKED_PARAMS


class WrappedTarget(TargetOnKart):
    """Delegates gokart's storage methods (``_exists``, ``_load``, ``_dump``, ...) to ``wrapped``."""

    def __init__(self, wrapped: TargetOnKart) -> None:
        self._target = wrapped

    @property
    def wrapped(self) -> TargetOnKart:
        """The gokart target that does the storage work."""
        return self._target

    def _exists(self) -> bool:
        return self._target._exists()

    def _get_task_lock_params(self) -> TaskLockParams:
        # The wrapped target's own gokart lock never runs: its underscore methods are called directly.
        return UNLOCKED_PARAMS

    def _load(self) -> Any:
        return self._target._load()

    def _dump(
        self,
        obj: Any,
        task_params: dict[str, str] | None = None,
        custom_labels: dict[str, str] | None = None,
        required_task_outputs: FlattenableItems[RequiredTaskOutput] | None = None,
    ) -> None:
        self._target._dump(
            obj,
            task_params=task_params,
            custom_labels=custom_labels,
            required_task_outputs=required_task_outputs,
        )

    def _remove(self) -> None:
        self._target._remove()

    def _last_modification_time(self) -> datetime:
        return self._target._last_modification_time()

    def _path(self) -> str:
        return self._target._path()
