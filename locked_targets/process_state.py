"""Process-wide state, in one place: every singleton of locked_targets lives here or registers here.

A process holds Redis connections, one lease-renewal thread, kept shared leases and S3
clients. None of them survives ``fork()``: the child has the parent's sockets but not its
threads, and a mutex another thread held at the fork stays held for ever. So each piece
of process-wide state is a ``ProcessLocal`` (or registers a reset with ``after_fork``),
and the single after-fork hook below gives the child fresh, empty ones.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

_Value = TypeVar("_Value")
_Key = TypeVar("_Key", bound=Hashable)

_resets: list[Callable[[], None]] = []


def after_fork(reset: Callable[[], None]) -> None:
    """Run ``reset`` in every child forked from now on, before the child runs anything else."""
    _resets.append(reset)


class ProcessLocal(Generic[_Value]):
    """One value per process, built on first use; a forked child builds its own."""

    def __init__(self, build: Callable[[], _Value]) -> None:
        self._build = build
        self._value: _Value | None = None
        self._mutex = threading.Lock()
        after_fork(self._forget)

    def get(self) -> _Value:
        value = self._value  # once built, read without the mutex: reads of it are on hot paths
        if value is None:
            with self._mutex:
                if self._value is None:
                    self._value = self._build()
                value = self._value
        return value

    def _forget(self) -> None:
        self._value = None
        self._mutex = threading.Lock()


class ProcessLocalMap(Generic[_Key, _Value]):
    """Values of this process keyed by what they serve (a Redis URL, an endpoint); empty after a fork."""

    def __init__(self) -> None:
        self._values: dict[_Key, _Value] = {}
        self._mutex = threading.Lock()
        after_fork(self._forget)

    def get(self, key: _Key, build: Callable[[], _Value]) -> _Value:
        """The value for ``key``, built by ``build()`` the first time this process asks."""
        value = self._values.get(key)  # once built, read without the mutex, as ProcessLocal
        if value is None:
            with self._mutex:
                value = self._values.get(key)
                if value is None:
                    value = self._values[key] = build()
        return value

    def values(self) -> list[_Value]:
        with self._mutex:
            return list(self._values.values())

    def _forget(self) -> None:
        self._values = {}
        self._mutex = threading.Lock()


class Once:
    """Remembers which one-time events (a warning about a path or a device) this process has had.

    Unlike the rest, the memory is inherited by forked children: luigi forks a worker per
    task, and a warning the parent gave need not be repeated by each of them.
    """

    def __init__(self) -> None:
        self._seen: set[Hashable] = set()
        self._mutex = threading.Lock()
        after_fork(self._new_mutex)

    def first_time(self, event: Hashable) -> bool:
        """True the first time ``event`` is seen in this process (or its parent), False after."""
        with self._mutex:
            if event in self._seen:
                return False
            self._seen.add(event)
            return True

    def _new_mutex(self) -> None:
        self._mutex = threading.Lock()


def _reset_after_fork() -> None:
    for reset in _resets:
        reset()


os.register_at_fork(after_in_child=_reset_after_fork)
