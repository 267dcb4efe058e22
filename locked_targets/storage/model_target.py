"""Multi-file cache objects (models, large DataFrames), zipped into one file, loaded concurrently.

gokart's ``ModelTarget`` unpacks into a temporary directory derived from the path,
shared by every process on a host that loads the same target, and deletes it after
loading; two concurrent loads then corrupt each other (truncated pickles, "Directory
not empty"). Here every load and dump works in a private directory of its own, so
many readers can hold the shared lock at once. A locked dump's directory is in the target's
own staging area, which the next locked dump clears if a writer died there (see ``staging``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import gokart.target
from gokart.conflict_prevention_lock.task_lock import TaskLockParams
from gokart.required_task_output import RequiredTaskOutput
from gokart.utils import FlattenableItems
from gokart.zip_client import ZipClient

from locked_targets.settings import Settings
from locked_targets.storage.base import UNLOCKED_PARAMS, StorageKind
from locked_targets.storage.staging import STAGING_PREFIX, staging_area

_MODEL_FILE = "model.pkl"
_LOAD_FUNCTION_FILE = "load_function.pkl"


@dataclasses.dataclass(eq=False, kw_only=True)
class ModelTarget(gokart.target.TargetOnKart):
    """A model saved by ``save_function`` as files in a directory, stored as one zip archive."""

    file_path: str
    storage: StorageKind
    settings: Settings
    temporary_directory: str
    """Where loads and dumps make their private working directories."""
    save_function: Callable[[Any, str], None]
    load_function: Callable[[str], Any] | None
    """None: the load function saved beside the model is used."""

    def _zip_client(self, working_directory: str) -> ZipClient:
        return self.storage.zip_client(self.file_path, working_directory, self.settings)

    def _private_directory(self) -> tempfile.TemporaryDirectory[str]:
        os.makedirs(self.temporary_directory, exist_ok=True)
        return tempfile.TemporaryDirectory(dir=self.temporary_directory, prefix="locked_targets-")

    @contextlib.contextmanager
    def _dump_directory(self) -> Iterator[str]:
        os.makedirs(self.temporary_directory, exist_ok=True)
        with (
            staging_area(self.temporary_directory, self.file_path, self.storage, "model") as staging,
            tempfile.TemporaryDirectory(dir=staging.directory, prefix=STAGING_PREFIX) as working_directory,
        ):
            yield working_directory

    def _exists(self) -> bool:
        return self._zip_client(self.temporary_directory).exists()

    def _get_task_lock_params(self) -> TaskLockParams:
        return UNLOCKED_PARAMS

    def _load(self) -> Any:
        with self._private_directory() as working_directory:
            model_directory = os.path.join(working_directory, "archive")
            self._zip_client(model_directory).unpack_archive()
            load_function = (
                self.load_function
                or gokart.target.make_target(os.path.join(model_directory, _LOAD_FUNCTION_FILE)).load()
            )
            return load_function(os.path.join(model_directory, _MODEL_FILE))

    def _dump(
        self,
        obj: Any,
        task_params: dict[str, str] | None = None,
        custom_labels: dict[str, str] | None = None,
        required_task_outputs: FlattenableItems[RequiredTaskOutput] | None = None,
    ) -> None:
        with self._dump_directory() as working_directory:
            model_directory = os.path.join(working_directory, "archive")
            os.makedirs(model_directory)
            self.save_function(obj, os.path.join(model_directory, _MODEL_FILE))
            gokart.target.make_target(os.path.join(model_directory, _LOAD_FUNCTION_FILE)).dump(
                self.load_function,
                task_params=task_params,
                custom_labels=custom_labels,
                required_task_outputs=required_task_outputs,
            )
            self._zip_client(model_directory).make_archive()

    def _remove(self) -> None:
        self._zip_client(self.temporary_directory).remove()

    def _last_modification_time(self) -> datetime:
        return self.storage.last_modification_time(self.file_path, self.settings)

    def _path(self) -> str:
        return self.file_path
