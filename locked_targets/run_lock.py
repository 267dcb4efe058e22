"""``RunWithLock``: one application computes a task; the others wait, then find it complete and skip.

A task's run lock is the set of its outputs' lock keys in the ``run`` namespace (so the
per-storage prefixes apply), each on the lock service of its output's storage kind, so a
task whose outputs span two services holds a run lock on each. They are taken all or none,
one after another in sorted key order (see ``_run_lock_of``), so two tasks whose outputs
overlap cannot deadlock. Once held, a task that another application completed meanwhile is
skipped (single flight). The locks are renewed for as long as ``run()`` runs; a dump checks
them before it writes, so a run that has lost its lock by then writes nothing and fails
with ``LockLost``; a loss during the write itself is caught by the commit's guard, and a
stale commit is refused by the storage.

``RunCollision``, raised instead of waiting under ``fail_on_collision``, is defined here
rather than in ``errors``: it is also gokart's ``TaskLockException``, which ``errors``
cannot import (see there).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import luigi
import luigi.task
from gokart.conflict_prevention_lock.task_lock import TaskLockException
from gokart.target import TargetOnKart

from locked_targets.errors import KeepsArguments, LockError, LockTimeout
from locked_targets.locks import LockNamespace, lock_for, lock_service_for
from locked_targets.process_state import after_fork
from locked_targets.rwlock import HeldLock, LockMode, ReadWriteLock, telemetry
from locked_targets.settings import Settings

logger = logging.getLogger(__name__)

_Result = TypeVar("_Result")
_Decorated = TypeVar("_Decorated", bound=Callable[..., Any])
# Marks a run method that takes the run lock.
_MARK = "__locked_targets_run_lock__"
_held_run_locks: ContextVar[tuple[HeldLock, ...]] = ContextVar("locked_targets_run_locks", default=())
_tasks_under_run_lock: ContextVar[frozenset[str]] = ContextVar(
    "locked_targets_locked_tasks", default=frozenset()
)


class RunCollision(KeepsArguments, LockError, TaskLockException):
    """Another application holds this task's run lock, and ``fail_on_collision`` says not to wait.

    luigi marks the task failed, runs other independent tasks, and retries it later
    (``[scheduler] retry_count``/``retry_delay``); by then the other application has
    usually produced the output, and the retry finds the task complete. As a gokart
    ``TaskLockException`` it also makes ``gokart.build`` build again (with backoff, up to
    its ``task_lock_exception_max_tries``), as a collision of gokart's own lock does.
    """

    task: str
    lock_key: str
    holder: str

    def __init__(self, *, task: str, lock_key: str, holder: str) -> None:
        self._keep(task=task, lock_key=lock_key, holder=holder)
        super().__init__(
            f"task {task} is already being computed by {holder} (run lock {lock_key}); "
            "fail_on_collision is set, so this application does not wait: luigi retries the task later "
            "(gokart.build builds again)"
        )


def RunWithLock(task_class_or_run: _Decorated) -> _Decorated:  # noqa: N802 -- gokart documents this name
    """Decorate a task class, or its ``run`` method, so that only one application runs it at once."""
    if isinstance(task_class_or_run, type):
        task_class_or_run.run = _locked_run_method(task_class_or_run.run)  # type: ignore[attr-defined]
        return task_class_or_run
    return _locked_run_method(task_class_or_run)


run_with_lock = RunWithLock


def run_under_lock(task: luigi.Task, run: Callable[[], _Result]) -> _Result | None:
    """Call ``run`` holding ``task``'s run lock, unless the task turns out to be complete already."""
    locked_tasks = _tasks_under_run_lock.get()
    if task.task_id in locked_tasks:  # locked twice (decorator and should_lock_run): already held
        return run()
    with _run_lock_of(task) as already_complete:
        if already_complete:
            logger.info("%s: skipped, another application computed it while this one waited", task.task_id)
            return None
        outer = _tasks_under_run_lock.set(locked_tasks | {task.task_id})
        try:
            result = run()
        finally:
            _tasks_under_run_lock.reset(outer)
        if inspect.isgenerator(result):
            # The body has not run yet: refusing now leaves nothing half done.
            result.close()
            raise TypeError(
                f"cannot hold the run lock of {task.task_id} across a run() that yields dynamic "
                "dependencies: luigi resumes such a run later, outside the lock. Move the dynamic "
                "dependencies into requires(), or do not lock this task's run."
            )
        return result


def runs_under_lock(task: luigi.Task) -> bool:
    """Whether ``task``'s run takes its run lock (``RunWithLock``, or ``should_lock_run``)."""
    return bool(getattr(task, "should_lock_run", False) or getattr(task.run, _MARK, False))


def ensure_run_locks_held() -> None:
    """Raise ``LockLost`` if a run lock held by the current run has slipped away."""
    for held in _held_run_locks.get():
        held.ensure_held()


def _locked_run_method(run: _Decorated) -> _Decorated:
    if getattr(run, _MARK, False):
        return run

    @functools.wraps(run)
    def locked_run(task: luigi.Task, *args: Any, **kwargs: Any) -> Any:
        return run_under_lock(task, lambda: run(task, *args, **kwargs))

    setattr(locked_run, _MARK, True)
    return locked_run  # type: ignore[return-value]


@contextmanager
def _run_lock_of(task: luigi.Task) -> Iterator[bool]:
    """Hold every run lock of ``task``; yield whether the task is already complete.

    The locks are taken in the order of their keys, whichever lock service each lives on.
    Every application that shares a lock computes the same key for it (the prefixes and the
    digest of the storage kind and file), and outputs that share a key (gokart's log files
    of one task, as outputs) share one run lock, taken once; the digest names the storage
    kind, which names the service, so this one order is the same
    for every lock of every service in every application: a task waits only for a lock
    later in it than all it holds, and two tasks can never each hold what the other waits
    for. An order by service would not do: applications may name one service differently
    (a host name or its address, another user), and so put its locks before or after
    another service's in different orders. Outputs whose storage kind has no lock service
    are not run-locked, as their targets are not locked.
    """
    settings = Settings.for_task(task)
    paths = [path for path in _output_paths(task) if lock_service_for(path, settings) is not None]
    if not paths:
        yield False
        return
    wait_timeout = 0.0 if settings.fail_on_collision else settings.run_wait_timeout_seconds
    by_key = {
        lock.keys.base: lock
        for lock in (
            lock_for(
                path,
                settings,
                namespace=LockNamespace.RUN,
                task=task.task_id,
                wait_timeout_seconds=wait_timeout,
            )
            for path in paths
        )
    }
    locks = [by_key[key] for key in sorted(by_key)]
    with ExitStack() as releases:
        held: list[HeldLock] = []
        for lock in locks:
            held.append(_acquire_run_lock(lock, task, settings))
            releases.callback(held[-1].release)
        outer = _held_run_locks.set(_held_run_locks.get() + tuple(held))
        try:
            already_complete: bool = task.complete()  # type: ignore[no-untyped-call]
            if already_complete:
                telemetry.record_run_skipped(locks[0].telemetry_labels)
            yield already_complete
        finally:
            _held_run_locks.reset(outer)
        for each in held:
            each.ensure_held()


def _acquire_run_lock(lock: ReadWriteLock, task: luigi.Task, settings: Settings) -> HeldLock:
    try:
        return lock.acquire(LockMode.EXCLUSIVE)
    except LockTimeout as timeout:
        if settings.fail_on_collision:
            raise RunCollision(task=task.task_id, lock_key=lock.keys.base, holder=timeout.holder) from None
        raise


def _output_paths(task: luigi.Task) -> list[str]:
    paths = []
    for target in luigi.task.flatten(task.output()):  # type: ignore[no-untyped-call]
        if isinstance(target, TargetOnKart):
            paths.append(target.path())
        elif isinstance(getattr(target, "path", None), str):
            paths.append(target.path)
        else:
            raise TypeError(f"cannot take the run lock of {task.task_id}: its output {target!r} has no path")
    return sorted(set(paths))


def _forget_parent_run_locks() -> None:
    # A child forked inside run() cannot renew its parent's run locks: it must not trust them.
    _held_run_locks.set(())
    _tasks_under_run_lock.set(frozenset())


after_fork(_forget_parent_run_locks)
