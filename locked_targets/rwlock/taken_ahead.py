"""Exclusive locks a thread took ahead of the writes it is about to make, all in one round trip.

A task writes several files (its outputs, and gokart's log files) one after the other;
taking their locks one by one costs a round trip each. ``ReadWriteLock.take_ahead``
takes them together, only if it gets all of them at once, and leaves them here, in the
taking thread's name: that thread's next ``exclusive()`` of one of them uses it instead
of acquiring, and its reads of one it holds read under it. A lock that several of the files
share (gokart's log files of a task) serves as many writes, and the last of them ends it.
The thread gives back what it did not use when its task ends (``release_mine``), and the
process at exit.

Taking all or none keeps this free of deadlock: a thread that holds locks taken ahead
waits only for locks it did not take ahead (its inputs), and one that could not take
them all holds none of them while it acquires them one at a time, as without this.
"""

from __future__ import annotations

import dataclasses
import multiprocessing.util
import threading

from locked_targets.process_state import ProcessLocal
from locked_targets.rwlock.lease import HeldLock
from locked_targets.rwlock.releases import wait_until_sent

# Given back at exit before the queued releases are waited for (see ``releases``).
_EXIT_PRIORITY = 10


@dataclasses.dataclass(frozen=True)
class TakenLock:
    """An exclusive lock taken ahead, and whether it replaced a shared lease the process kept."""

    held: HeldLock
    upgraded: bool
    writes: int = 1
    """How many more of the thread's writes it serves."""


class TakenAhead:
    """Exclusive locks taken ahead, by the thread that took them and the lock's base."""

    def __init__(self) -> None:
        self._by_thread: dict[int, dict[str, TakenLock]] = {}
        self._mutex = threading.Lock()
        multiprocessing.util.Finalize(None, self.release_all, exitpriority=_EXIT_PRIORITY)

    def keep(self, taken: list[TakenLock]) -> None:
        """Keep ``taken`` for the calling thread's later calls."""
        with self._mutex:
            mine = self._by_thread.setdefault(threading.get_ident(), {})
            mine.update((lock.held.keys.base, lock) for lock in taken)

    def claim(self, base: str) -> TakenLock | None:
        """The calling thread's lock of ``base`` taken ahead, for one write; None if none. Its
        ``writes`` are those it serves after this one: none, and it is now the caller's to end."""
        with self._mutex:
            mine = self._by_thread.get(threading.get_ident(), {})
            taken = mine.pop(base, None)
            if taken is None:
                return None
            taken = dataclasses.replace(taken, writes=taken.writes - 1)
            if taken.writes:
                mine[base] = taken
            return taken

    def forget(self, base: str) -> None:
        """Keep the calling thread's lock of ``base`` no longer (it was lost)."""
        with self._mutex:
            self._by_thread.get(threading.get_ident(), {}).pop(base, None)

    def peek(self, base: str) -> HeldLock | None:
        """The calling thread's lock of ``base`` taken ahead, still kept here; None if none."""
        with self._mutex:
            taken = self._by_thread.get(threading.get_ident(), {}).get(base)
        return taken.held if taken is not None else None

    def release_mine(self) -> None:
        """Give back every lock the calling thread took ahead and did not use."""
        with self._mutex:
            mine = self._by_thread.pop(threading.get_ident(), {})
        for taken in mine.values():
            taken.held.release_quietly()

    def release_all(self) -> None:
        with self._mutex:
            every = [taken for mine in self._by_thread.values() for taken in mine.values()]
            self._by_thread.clear()
        for taken in every:
            taken.held.release_quietly()
        wait_until_sent()  # at exit, nothing else would wait for them


_taken_ahead: ProcessLocal[TakenAhead] = ProcessLocal(TakenAhead)


def taken_ahead() -> TakenAhead:
    """This process's locks taken ahead (a forked child has its own, empty)."""
    return _taken_ahead.get()
