"""Entry points for target users running in separate OS processes (spawned)."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.synchronize
import time
from typing import Any

import pandas as pd
import redis

from helpers.targets import locked_target
from locked_targets.factories import make_model_target
from locked_targets.locks import connection_for, lease_terms, lock_key_for
from locked_targets.rwlock import LockMode, ReadWriteLock
from locked_targets.settings import Settings
from locked_targets.target import LockedTarget


def hold_lock_of(
    path: str, settings: Settings, mode: str, seconds: float, acquired: multiprocessing.synchronize.Event
) -> None:
    """Hold the lock of the target at ``path`` for ``seconds``, as another application would.

    ``acquired`` is set once the lock is held, so the test starts its own call only then.
    """
    assert settings.redis_url is not None
    lock = ReadWriteLock(
        connection_for(settings.redis_url),
        lock_key_for(path, settings),
        lease_terms(settings),
        task="OtherApplication_0",
    )
    held = lock.acquire(LockMode(mode))
    acquired.set()
    time.sleep(seconds)
    held.release()


def save_frame(frame: pd.DataFrame, path: str) -> None:
    frame.to_pickle(path)


def load_frame(path: str) -> Any:
    return pd.read_pickle(path)


def frame_model_target(
    path: str, temporary_directory: str, settings: Settings, unique_id: str | None = None
) -> LockedTarget:
    """A locked model target at ``path`` that pickles a data frame through ``temporary_directory``."""
    return make_model_target(
        path,
        temporary_directory=temporary_directory,
        save_function=save_frame,
        load_function=load_frame,
        unique_id=unique_id,
        settings=settings,
    )


def load_model_repeatedly(
    path: str, temporary_directory: str, settings: Settings, loads: int
) -> tuple[int, list[str]]:
    """Load a model target ``loads`` times; return (whole loads, failures)."""
    target = frame_model_target(path, temporary_directory, settings)
    whole, failures = 0, []
    for _ in range(loads):
        try:
            frame = target.load()
            if len(frame) == 200_000 and int(frame["value"].sum()) == sum(range(200_000)):
                whole += 1
            else:
                failures.append("partial frame")
        except Exception as error:
            failures.append(f"{type(error).__name__}: {error}")
    return whole, failures


def read_repeatedly(
    path: str, settings: Settings, seconds: float, started: multiprocessing.Queue[str]
) -> int:
    """Load the target at ``path`` in a loop for ``seconds``; say when the first load is done."""
    target = locked_target(path, settings)
    deadline = time.monotonic() + seconds
    loads = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            target.load()
        loads += 1
        if loads == 1:
            started.put("reading")
    return loads


def read_and_exit(path: str, settings: Settings, kept: multiprocessing.Queue[int]) -> None:
    """Load twice (the second keeps the shared lease), report how many readers Redis has, exit."""
    target = locked_target(path, settings)
    target.load()
    time.sleep(0.3)  # the revocation listener subscribes
    target.load()
    assert settings.redis_url is not None
    kept.put(redis.Redis.from_url(settings.redis_url).zcard(lock_key_for(path, settings).readers))


def dump_value(path: str, settings: Settings, value: object) -> None:
    """Dump ``value`` at ``path`` through a locked target, as another application's task would."""
    locked_target(path, settings).dump(value)
