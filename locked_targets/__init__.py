"""locked_targets: Redis read/write locks around gokart cache targets shared by several applications."""

from locked_targets.errors import (
    BackendUnavailable,
    ConfigurationError,
    LockError,
    LockLost,
    LockTimeout,
)
from locked_targets.factories import make_large_data_frame_target, make_model_target, make_target
from locked_targets.locks import lock_key_for
from locked_targets.run_lock import RunCollision, RunWithLock, run_with_lock
from locked_targets.settings import Settings
from locked_targets.storage.commit import current_fencing_token
from locked_targets.target import LockedTarget
from locked_targets.task import TaskOnKart

__all__ = [
    "BackendUnavailable",
    "ConfigurationError",
    "LockError",
    "LockLost",
    "LockTimeout",
    "LockedTarget",
    "RunCollision",
    "RunWithLock",
    "Settings",
    "TaskOnKart",
    "current_fencing_token",
    "lock_key_for",
    "make_large_data_frame_target",
    "make_model_target",
    "make_target",
    "run_with_lock",
]
