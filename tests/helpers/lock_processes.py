"""Entry points for lock holders and waiters running in separate OS processes (spawned)."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import time

import pytest

from locked_targets.locks import connection_for
from locked_targets.rwlock import LeaseTerms, LockKeys, LockMode, ReadWriteLock
from locked_targets.rwlock.releases import wait_until_sent

SPAWN = multiprocessing.get_context("spawn")


def make_lock(
    redis_url: str, base: str, lease_seconds: float = 30, wait_timeout_seconds: float | None = None
) -> ReadWriteLock:
    return ReadWriteLock(
        connection_for(redis_url),
        LockKeys(path=f"/cache/{base}", base=base),
        LeaseTerms(lease_seconds=lease_seconds, renewal_interval_seconds=lease_seconds / 3),
        wait_timeout_seconds=wait_timeout_seconds,
        task="TestTask_0123",
    )


def hold(
    redis_url: str,
    base: str,
    mode: str,
    events: multiprocessing.Queue[tuple[str, str, float]],
    release: multiprocessing.Queue[str],
    name: str,
    lease_seconds: float = 30,
) -> None:
    """Acquire in ``mode``, report when, hold until told to release, report when."""
    lock = make_lock(redis_url, base, lease_seconds)
    held = lock.acquire(LockMode(mode))
    events.put((name, "acquired", time.monotonic()))
    release.get(timeout=60)
    released_at = time.monotonic()
    held.release()
    events.put((name, "released", released_at))


def die_with_release_unsent(redis_url: str, base: str, lease_seconds: float) -> None:
    """Hold ``base`` exclusively, hand its release to the background, and be killed before it is sent."""
    lock = make_lock(redis_url, base, lease_seconds)
    lock.acquire(LockMode.SHARED).release()  # the sending thread is up and idle
    wait_until_sent()
    held = lock.acquire(LockMode.EXCLUSIVE)
    # The sending thread gets no turn before the kill: this thread keeps the interpreter.
    sys.setswitchinterval(60)
    held.release()
    os.kill(os.getpid(), signal.SIGKILL)


class Holders:
    """Processes that hold one lock, and the timeline of what they did."""

    def __init__(self, redis_url: str, base: str) -> None:
        self.redis_url = redis_url
        self.base = base
        self.events: multiprocessing.Queue[tuple[str, str, float]] = SPAWN.Queue()
        self.release_events: dict[str, multiprocessing.Queue[str]] = {}
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self._own_events: dict[str, multiprocessing.Queue[tuple[str, str, float]]] = {}

    def start(self, name: str, mode: str, lease_seconds: float = 30) -> None:
        self._start(name, mode, lease_seconds, self.events)

    def start_to_be_killed(self, name: str, mode: str, lease_seconds: float = 30) -> None:
        """Start a holder that will be killed: it reports on a queue of its own, since a process
        killed just after a put can leave its queue's lock taken, and silence every other writer."""
        self._start(name, mode, lease_seconds, SPAWN.Queue())

    def expect_of_killed(self, name: str, what: str, timeout: float = 20) -> float:
        return self._expect_on(self._own_events[name], name, what, timeout)

    def _start(
        self,
        name: str,
        mode: str,
        lease_seconds: float,
        events: multiprocessing.Queue[tuple[str, str, float]],
    ) -> None:
        release: multiprocessing.Queue[str] = SPAWN.Queue()
        self.release_events[name] = release
        self._own_events[name] = events
        process = SPAWN.Process(
            target=hold, args=(self.redis_url, self.base, mode, events, release, name, lease_seconds)
        )
        process.start()
        self.processes.append(process)

    def expect(self, name: str, what: str, timeout: float = 20) -> float:
        return self._expect_on(self.events, name, what, timeout)

    @staticmethod
    def _expect_on(
        events: multiprocessing.Queue[tuple[str, str, float]], name: str, what: str, timeout: float
    ) -> float:
        got = events.get(timeout=timeout)
        assert got[:2] == (name, what), f"expected {name} {what}, got {got}"
        return got[2]

    def nothing_happens(self, seconds: float) -> None:
        with pytest.raises(queue.Empty):
            self.events.get(timeout=seconds)

    def release(self, name: str) -> None:
        self.release_events[name].put("release")

    def stop(self) -> None:
        for name, process in zip(self.release_events, self.processes, strict=True):
            if process.is_alive():
                self.release(name)
        for process in self.processes:
            process.join(timeout=20)
            if process.is_alive():
                process.kill()
