"""Every exception locked_targets raises, in one place.

``LockError`` is the base of everything that concerns a lock; a caller that wants
to fail a task on any locking problem catches that alone. ``ConfigurationError``
is separate: it is raised once, when settings are read, and means a setting is wrong.
"""

from __future__ import annotations


class ConfigurationError(ValueError):
    """A ``[locked_targets]`` setting (or a gokart redis setting) has an invalid value."""

    def __init__(self, setting: str, value: object, expectation: str) -> None:
        self.setting = setting
        self.value = value
        super().__init__(f"invalid setting {setting}={value!r}: {expectation}")


class LockError(Exception):
    """Base class of every locking failure."""


class LockTimeout(LockError):
    """The lock was not acquired within the configured wait timeout."""

    def __init__(self, *, path: str, lock_key: str, lock: str, holder: str, waited_seconds: float) -> None:
        self.path = path
        self.lock_key = lock_key
        self.holder = holder
        self.waited_seconds = waited_seconds
        super().__init__(
            f"gave up waiting for the {lock} of {path} after {waited_seconds:.1f} s "
            f"(lock key {lock_key}); blocked by {holder}"
        )


class LockLost(LockError):
    """A held lock ended before the operation it protects finished: its result is not trusted."""

    def __init__(self, *, lock_key: str, path: str, reason: str, lost_at: str) -> None:
        self.lock_key = lock_key
        self.path = path
        self.reason = reason
        self.lost_at = lost_at
        super().__init__(f"lost the lock of {path} (lock key {lock_key}) at {lost_at}: {reason}")


class BackendUnavailable(LockError):
    """Redis could not be reached or refused us; nothing was read or written unlocked."""

    def __init__(self, *, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"Redis at {address} is unavailable: {reason}")


class RunCollision(LockError):
    """Another application holds this task's run lock, and ``fail_on_collision`` says not to wait.

    luigi marks the task failed, runs other independent tasks, and retries it later
    (``[scheduler] retry_count``/``retry_delay``); by then the other application has
    usually produced the output, and the retry finds the task complete.
    """

    def __init__(self, *, task: str, lock_key: str, holder: str) -> None:
        self.task = task
        self.lock_key = lock_key
        self.holder = holder
        super().__init__(
            f"task {task} is already being computed by {holder} (run lock {lock_key}); "
            "fail_on_collision is set, so this application does not wait: luigi will retry it"
        )
