"""Every public error pickles whole, is caught by the handlers it promises, and lives in errors.py.

All but ``RunCollision``, which lives in run_lock.py because it is also gokart's
``TaskLockException`` and errors.py may not import gokart (errors.py's docstring says why).
"""

from __future__ import annotations

import importlib
import inspect
import multiprocessing
import pickle
import pkgutil
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from types import ModuleType
from typing import Any

import pytest
from gokart.conflict_prevention_lock.task_lock import TaskLockException

import locked_targets
from locked_targets import RunCollision, errors
from locked_targets.errors import (
    BackendUnavailable,
    CommitRefused,
    ConfigurationError,
    KeepsArguments,
    LockError,
    LockLost,
    LockTimeout,
)

# Each public error with a distinct value for every constructor argument, so a swapped or
# dropped argument shows.
ERRORS: dict[type[Exception], dict[str, Any]] = {
    ConfigurationError: {"setting": "lease_seconds", "value": -2.5, "expectation": "must be positive"},
    LockTimeout: {
        "path": "/cache/timeout.pkl",
        "lock_key": "locks:{timeout}",
        "lock": "write lock",
        "holder": "task Producer_1 on host-a (pid 11)",
        "waited_seconds": 12.5,
    },
    LockLost: {
        "lock_key": "locks:{lost}",
        "path": "/cache/lost.pkl",
        "reason": "its lease ended before it could be renewed",
        "lost_at": "2024-05-06T07:08:09Z",
    },
    BackendUnavailable: {"address": "redis.internal:6380/3", "reason": "Connection refused"},
    RunCollision: {
        "task": "Train_abc123",
        "lock_key": "run:{Train_abc123}",
        "holder": "task Train_abc123 on host-b (pid 22)",
    },
    CommitRefused: {"path": "s3://bucket/cache/model.pkl"},
}
LOCK_ERRORS = [LockTimeout, LockLost, BackendUnavailable, RunCollision]
# Bases raised by nobody, taking no arguments of their own.
BASES = {KeepsArguments, LockError}
# The one public error defined outside errors.py, where errors.py's docstring says and why.
DEFINED_OUTSIDE_ERRORS = {("locked_targets.run_lock", "RunCollision")}


def _build(error_class: type[Exception]) -> Exception:
    construct: Callable[..., Exception] = error_class
    return construct(**ERRORS[error_class])


def _constructor_arguments(error_class: type[Exception]) -> list[str]:
    parameters = inspect.signature(error_class.__init__).parameters.values()
    return [parameter.name for parameter in parameters if parameter.name != "self"]


def _assert_arrived_whole(arrived: BaseException, error_class: type[Exception]) -> None:
    """``arrived`` is the same error as one built here: type, message and every constructor argument."""
    original = _build(error_class)
    assert type(arrived) is error_class
    assert str(arrived) == str(original)
    for name in _constructor_arguments(error_class):
        assert getattr(arrived, name) == ERRORS[error_class][name], name


def _raise_built(error_class: type[Exception]) -> None:
    """Run in a pool worker: raise the error built there."""
    raise _build(error_class)


every_error = pytest.mark.parametrize("error_class", list(ERRORS), ids=lambda cls: cls.__name__)


def test_the_table_covers_every_public_error() -> None:
    public = {
        cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type)
        and issubclass(cls, BaseException)
        and cls.__module__ == errors.__name__
        and not name.startswith("_")
        and cls not in BASES
    }
    assert public | {RunCollision} == set(ERRORS)


@every_error
def test_the_table_gives_every_constructor_argument(error_class: type[Exception]) -> None:
    assert sorted(ERRORS[error_class]) == sorted(_constructor_arguments(error_class))


@every_error
def test_an_error_keeps_every_constructor_argument_as_an_attribute(error_class: type[Exception]) -> None:
    _assert_arrived_whole(_build(error_class), error_class)


@every_error
def test_an_error_survives_pickling_whole(error_class: type[Exception]) -> None:
    _assert_arrived_whole(pickle.loads(pickle.dumps(_build(error_class))), error_class)


@pytest.fixture(scope="module")
def process_pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@every_error
def test_an_error_raised_in_a_process_pool_arrives_whole(
    process_pool: ProcessPoolExecutor, error_class: type[Exception]
) -> None:
    future = process_pool.submit(_raise_built, error_class)
    with pytest.raises(error_class) as raised:
        future.result(timeout=120)
    _assert_arrived_whole(raised.value, error_class)


# Each error and a generic handler that must catch it, as ``except <handler>`` would.
CAUGHT_BY: list[tuple[type[Exception], type[Exception]]] = [
    (LockTimeout, TimeoutError),
    (BackendUnavailable, ConnectionError),
    (ConfigurationError, ValueError),
    (RunCollision, TaskLockException),  # so that gokart.build retries a collision
    *((error_class, LockError) for error_class in LOCK_ERRORS),
]


@pytest.mark.parametrize(("error_class", "handler"), CAUGHT_BY, ids=lambda cls: cls.__name__)
def test_an_error_is_caught_by_the_generic_handlers_it_promises(
    error_class: type[Exception], handler: type[Exception]
) -> None:
    error = _build(error_class)
    with pytest.raises(handler) as caught:  # what `except handler` catches
        raise error
    assert caught.value is error


# Test support (``RedisServer``, ``ProcessGroup``...), not part of the library: the library never
# imports it, and its ``ProcessFailed`` is raised only to the tests, the demo and the benchmarks.
TEST_SUPPORT = "locked_targets.testing"


def _every_module_of_the_library() -> list[ModuleType]:
    def fail(name: str) -> None:
        raise ImportError(f"could not import {name} while walking locked_targets")

    modules: list[ModuleType] = [locked_targets]
    for found in pkgutil.walk_packages(locked_targets.__path__, prefix="locked_targets.", onerror=fail):
        if found.name != TEST_SUPPORT and not found.name.startswith(TEST_SUPPORT + "."):
            modules.append(importlib.import_module(found.name))
    return modules


def test_every_exception_class_of_the_library_is_defined_in_errors_but_the_documented_one() -> None:
    modules = _every_module_of_the_library()
    assert {"locked_targets.errors", "locked_targets.rwlock.lease"} <= {module.__name__ for module in modules}
    defined = {
        (module.__name__, cls.__qualname__)
        for module in modules
        for cls in vars(module).values()
        if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__module__ == module.__name__
    }
    in_errors = {(errors.__name__, cls.__name__) for cls in ERRORS if cls is not RunCollision}
    assert in_errors | DEFINED_OUTSIDE_ERRORS <= defined
    outside = {(module, name) for module, name in defined if module != errors.__name__}
    assert outside == DEFINED_OUTSIDE_ERRORS
    assert "RunCollision" in (errors.__doc__ or ""), "errors.py must say where RunCollision lives and why"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes came with Python 3.11")
@pytest.mark.parametrize("error_class", list(ERRORS), ids=lambda cls: cls.__name__)
def test_a_note_added_to_an_error_survives_pickling(error_class: type[Exception]) -> None:
    error = _build(error_class)
    error.add_note("while dumping s3://bucket/cache/x.pkl")  # type: ignore[attr-defined,unused-ignore]
    assert pickle.loads(pickle.dumps(error)).__notes__ == ["while dumping s3://bucket/cache/x.pkl"]
