"""Every exception locked_targets raises, in one place, but ``RunCollision`` (see the end).

``LockError`` is the base of everything that concerns a lock; a caller that wants
to fail a task on any locking problem catches that alone. ``LockTimeout`` is also a
``TimeoutError`` and ``BackendUnavailable`` a ``ConnectionError``, so generic handlers
of those catch them too. ``ConfigurationError`` is separate: it is raised when settings
are read, and means a setting is wrong. ``CommitRefused`` is the storage's signal to the
target that publication was refused; ``LockedTarget`` turns it into an outcome.

Every error keeps each constructor argument as an attribute and survives pickling
(so it crosses a process pool whole), through ``KeepsArguments``.

``RunCollision`` lives in ``locked_targets.run_lock`` (imported as
``locked_targets.RunCollision``), built on ``KeepsArguments`` and ``LockError`` from here.
It must also be gokart's ``TaskLockException``, so that ``gokart.build`` retries a
collision as it retries a collision of gokart's own lock; and this module cannot import
gokart, since the lock core imports it and must not depend on gokart, even indirectly.
"""

from __future__ import annotations

from typing import Any


def _rebuild(error_class: type[BaseException], arguments: dict[str, Any]) -> BaseException:
    return error_class(**arguments)


class KeepsArguments(Exception):
    """Pickles by its constructor arguments: Python's default pickles only the message.

    The base of every error here, and of ``run_lock.RunCollision``.
    """

    _arguments: dict[str, Any]

    def _keep(self, **arguments: Any) -> None:
        """Keep each constructor argument as an attribute, and for pickling."""
        self._arguments = arguments
        self.__dict__.update(arguments)

    def __reduce__(self) -> tuple[Any, ...]:
        # The state restores what was added after construction too (``add_note``'s __notes__).
        return (_rebuild, (type(self), self._arguments), self.__dict__)


class ConfigurationError(KeepsArguments, ValueError):
    """A ``[locked_targets]`` setting (or a gokart redis setting) has an invalid value."""

    setting: str
    value: object
    expectation: str

    def __init__(self, setting: str, value: object, expectation: str) -> None:
        self._keep(setting=setting, value=value, expectation=expectation)
        super().__init__(f"invalid setting {setting}={value!r}: {expectation}")


class LockError(Exception):
    """Base class of every locking failure."""


class LockTimeout(KeepsArguments, LockError, TimeoutError):
    """The lock was not acquired within the configured wait timeout."""

    path: str
    lock_key: str
    lock: str
    holder: str
    waited_seconds: float

    def __init__(self, *, path: str, lock_key: str, lock: str, holder: str, waited_seconds: float) -> None:
        self._keep(path=path, lock_key=lock_key, lock=lock, holder=holder, waited_seconds=waited_seconds)
        super().__init__(
            f"gave up waiting for the {lock} of {path} after {waited_seconds:.1f} s "
            f"(lock key {lock_key}); blocked by {holder}"
        )


class LockLost(KeepsArguments, LockError):
    """A held lock ended before the operation it protects finished: its result is not trusted."""

    lock_key: str
    path: str
    reason: str
    lost_at: str

    def __init__(self, *, lock_key: str, path: str, reason: str, lost_at: str) -> None:
        self._keep(lock_key=lock_key, path=path, reason=reason, lost_at=lost_at)
        super().__init__(f"lost the lock of {path} (lock key {lock_key}) at {lost_at}: {reason}")


class BackendUnavailable(KeepsArguments, LockError, ConnectionError):
    """Redis could not be reached or refused us; nothing was read or written unlocked."""

    address: str
    reason: str

    def __init__(self, *, address: str, reason: str) -> None:
        self._keep(address=address, reason=reason)
        super().__init__(f"Redis at {address} is unavailable: {reason}")


class CommitRefused(KeepsArguments):
    """The storage refused to publish: an object of that name appeared since the dump began."""

    path: str

    def __init__(self, path: str) -> None:
        self._keep(path=path)
        super().__init__(f"{path} already exists: the storage refused to replace it")
