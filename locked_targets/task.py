"""``TaskOnKart``: gokart's task base whose targets are ``LockedTarget``s; adopting is one import."""

from __future__ import annotations

import dataclasses
import functools
import os
import types
from collections.abc import Callable
from typing import Any, TypeVar

import gokart
import luigi
from gokart.file_processor import DataFrameType, FileProcessor
from gokart.target import LargeDataFrameProcessor, TargetOnKart
from gokart.utils import flatten, get_dataframe_type_from_task

from locked_targets import factories
from locked_targets.factories import DEFAULT_MAX_BYTE
from locked_targets.run_lock import run_under_lock, runs_under_lock
from locked_targets.settings import GOKART_SECTION, Settings, check_gokart_parameters
from locked_targets.target import (
    LockedTarget,
    keep_read_leases_ahead,
    release_write_locks_taken_ahead,
    take_write_locks_ahead,
)

T = TypeVar("T")
_RunTargetKey = tuple[str | None, str | None, int]
"""How a run finds a target it built: its relative path, its unique id, its settings' identity."""

# How gokart's task builds the target of each log file it dumps around a run (random seed,
# parameters and module versions at START, processing time and the task log at the end).
_GOKART_LOG_FILE_TARGETS = (
    "_get_random_seeds_target",
    "_get_task_params_target",
    "_get_module_versions_target",
    "_get_processing_time_target",
    "_get_task_log_target",
)


@functools.cache
def _dataframe_type_of(task_class: type[gokart.TaskOnKart[Any]]) -> DataFrameType:
    """The DataFrame library a task class's type parameter names (gokart walks the class's bases)."""
    return get_dataframe_type_from_task(task_class)


# The types of class attributes that a class gives back as themselves, or as a function or method:
# never a parameter (the exact types: most of a task class's attributes are of one of them).
_NEVER_PARAMETERS_ON_A_CLASS = frozenset(
    {
        types.FunctionType,
        types.BuiltinFunctionType,
        types.WrapperDescriptorType,
        types.MethodDescriptorType,
        types.ClassMethodDescriptorType,
        types.GetSetDescriptorType,
        types.MemberDescriptorType,
        classmethod,
        staticmethod,
        property,
        str,
        int,
        bool,
        float,
        type(None),
        tuple,
        list,
        dict,
        set,
        frozenset,
    }
)


_ClassDicts = tuple[tuple[types.MappingProxyType[str, Any], dict[str, Any]], ...]
"""The attributes of some classes: each class's own, live, beside a copy taken at one moment."""


@dataclasses.dataclass(frozen=True)
class _ParametersFound:
    """A task class's parameters, as luigi's ``get_params`` lists them, and the attributes of the
    classes they were read from, as they were then."""

    parameters: tuple[tuple[str, luigi.Parameter[Any]], ...]
    read_from: _ClassDicts
    through_descriptors: bool
    """Whether a descriptor answered for an attribute: its ``__get__`` may answer differently next time."""

    @classmethod
    def read(cls, task_class: type[luigi.Task]) -> _ParametersFound:
        """Each name is taken from the first base that has it, as ``dir()`` and ``getattr`` do, and
        read with ``getattr`` as luigi reads it (so a descriptor, or a property of the metaclass
        such as luigi's ``task_family``, answers for it) unless it is a function, a method or a
        plain value (``_NEVER_PARAMETERS_ON_A_CLASS``), which a class gives back as it is."""
        # Copies, taken at once: another thread may add to a class meanwhile (luigi does). The
        # metaclass's count too: its data descriptors answer before the class's own attributes.
        metaclass: type = type(task_class)
        read_from = tuple(
            (vars(klass), vars(klass).copy()) for klass in (*task_class.__mro__, *metaclass.__mro__)
        )
        seen: set[str] = set()
        parameters: list[tuple[str, luigi.Parameter[Any]]] = []
        through_descriptors = False
        for _, attributes in read_from[: len(task_class.__mro__)]:
            for name, value in attributes.items():
                if name in seen:
                    continue
                seen.add(name)
                kind = type(value)
                if kind not in _NEVER_PARAMETERS_ON_A_CLASS and (
                    isinstance(value, luigi.Parameter) or hasattr(kind, "__get__")
                ):
                    found = getattr(task_class, name)
                    through_descriptors |= found is not value
                    if isinstance(found, luigi.Parameter):
                        parameters.append((name, found))
        parameters.sort(key=lambda named: (named[1]._counter, named[0]))  # luigi's: by counter, then name
        return cls(tuple(parameters), read_from, through_descriptors)

    def still_valid(self) -> bool:
        """Whether every class's attributes are those read (compared with ``==``: a parameter of
        luigi's equals only itself)."""
        if self.through_descriptors:
            return False
        try:
            return all(live == copy for live, copy in self.read_from)
        except Exception:  # an attribute replaced by one whose ``==`` fails (an array): changed
            return False


_parameters_of_class: dict[type[luigi.Task], _ParametersFound] = {}
"""Each task class's parameters, as last read. luigi's registry keeps every task class alive too."""


class TaskOnKart(gokart.TaskOnKart[T]):
    """A gokart task whose cache files are locked in Redis while read, written or removed.

    The Redis server comes from ``[locked_targets] redis_url`` or, as in gokart, from the
    ``redis_host``/``redis_port`` parameters; ``redis_timeout`` is the default lease.
    """

    _targets_of_this_run: dict[_RunTargetKey, tuple[Settings, LockedTarget]] | None = None
    """While a run lasts (``START`` to ``SUCCESS`` or ``FAILURE``, or the next ``START``), the
    targets ``make_target`` built, by their relative path, unique id and settings' identity:
    gokart builds each file's target again for its dump, right after the start built it to
    take its write lock ahead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # gokart's own run lock (should_lock_run) insists on redis_host/redis_port and keys
        # by basename: keep it off, and put locked_targets' run lock in its place.
        lock_run = self._should_lock_run(args, kwargs)
        super().__init__(*args, **{**kwargs, "should_lock_run": False})  # type: ignore[no-untyped-call]
        if lock_run:
            self.should_lock_run = True
            self.param_kwargs["should_lock_run"] = True
            run = self.run
            self.run = functools.partial(run_under_lock, self, run)  # type: ignore[method-assign]

    @classmethod
    def get_params(cls) -> list[tuple[str, luigi.Parameter[Any]]]:
        """luigi's parameters of this class, the list luigi's own ``get_params`` makes, remembered
        while the class, its bases and its metaclass stay as they were: luigi asks for them many
        times per task instance (some twenty in a build), and its own walks ``dir()``, which
        merges and sorts every attribute of every base, so each base class added, as this one
        is, makes every task instance cost more. luigi lets a class gain parameters after it is
        defined: any change to those classes' attributes is seen at the next call.
        """
        remembered = _parameters_of_class.get(cls)
        if remembered is None or not remembered.still_valid():
            remembered = _ParametersFound.read(cls)
            _parameters_of_class[cls] = remembered
        return list(remembered.parameters)

    @classmethod
    def _add_configuration(cls, kwargs: dict[str, Any], section: str) -> None:
        # gokart parses [TaskOnKart] with luigi, whose bare ValueError for a bad redis_port names
        # no setting: check the Redis parameters first, for a ConfigurationError that does.
        if section == GOKART_SECTION:
            check_gokart_parameters(passed=kwargs.keys())
        super()._add_configuration(kwargs, section)  # type: ignore[no-untyped-call]

    @classmethod
    def _should_lock_run(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        resolved = dict(kwargs)
        cls._add_configuration(resolved, "TaskOnKart")
        # Resolving every parameter, as luigi does, would cost as much again as building the task.
        if not args:
            if "should_lock_run" in resolved:
                return bool(resolved["should_lock_run"])
            parameter = dict(cls.get_params()).get("should_lock_run")
            family = cls.get_task_family()  # type: ignore[no-untyped-call]
            return bool(
                parameter is not None and parameter.task_value(family, "should_lock_run")  # type: ignore[no-untyped-call]
            )
        values = dict(cls.get_param_values(cls.get_params(), args, resolved))  # type: ignore[no-untyped-call]
        return bool(values.get("should_lock_run", False))

    def trigger_event(self, event: str, *args: Any, **kwargs: Any) -> None:
        """luigi's events, with this task's write locks taken together as its run starts.

        Taken at ``START``, before gokart's own handlers dump the first log files, and given
        back (those unused) when the task has succeeded or failed; a run that ends with new
        dependencies keeps them until the next task of the thread starts. A task under the
        run lock takes none: its dumps wait for the run lock, which another application may
        hold while it waits for these.
        """
        if event == luigi.Event.START:
            release_write_locks_taken_ahead()
            self._targets_of_this_run = {}
            if not runs_under_lock(self):
                take_write_locks_ahead(self._files_a_run_writes())
        try:
            super().trigger_event(event, *args, **kwargs)  # type: ignore[no-untyped-call]
        finally:
            if event in (luigi.Event.SUCCESS, luigi.Event.FAILURE):
                release_write_locks_taken_ahead()
                self._targets_of_this_run = None

    def deps(self) -> list[luigi.Task]:
        """luigi's dependencies. luigi checks each of them next, one by one (when it schedules this
        task, and again before running it): first their outputs' shared leases are kept ahead,
        all in one round trip, so those checks, and this task's loads, ask Redis nothing more."""
        dependencies: list[luigi.Task] = super().deps()  # type: ignore[no-untyped-call]
        keep_read_leases_ahead(
            output
            for dependency in dependencies
            for output in flatten(dependency.output())  # type: ignore[no-untyped-call]
        )
        return dependencies

    def _files_a_run_writes(self) -> list[TargetOnKart]:
        """The outputs, and the log files gokart dumps around a run (when it dumps them)."""
        files: list[TargetOnKart] = list(flatten(self.output()))
        if self.should_dump_supplementary_log_files:
            files += [getattr(self, getter)() for getter in _GOKART_LOG_FILE_TARGETS]
        return files

    def _create_processor_for_dataframe_type(self, file_path: str) -> FileProcessor:
        # As gokart's, but its processors are shared (factories.file_processor_for) and the
        # DataFrame type, read from the class's type parameters, is read once per class.
        return factories.file_processor_for(
            file_path, self.store_index_in_feather, _dataframe_type_of(type(self))
        )

    def lock_settings(self) -> Settings:
        """The settings this task's locks use (luigi configuration plus its redis parameters)."""
        return Settings.for_task(self)

    def make_target(
        self,
        relative_file_path: str | None = None,
        use_unique_id: bool = True,
        processor: FileProcessor | None = None,
    ) -> LockedTarget:
        settings = self.lock_settings()
        # Settings are the same object while the configuration is unchanged (Settings.for_task);
        # the unique id changes only where gokart computes it again each time (cache_unique_id).
        unique_id = self.make_unique_id() if use_unique_id else None
        this_run = self._targets_of_this_run if processor is None else None
        key = (relative_file_path, unique_id, id(settings))
        if this_run is not None and (built := this_run.get(key)) is not None:
            return built[1]
        relative = relative_file_path or os.path.join(
            self.__module__.replace(".", "/"), f"{type(self).__name__}.pkl"
        )
        file_path = os.path.join(self.workspace_directory, relative)
        if processor is None and relative_file_path is not None:
            processor = self._create_processor_for_dataframe_type(file_path)
        target = factories.make_target(
            file_path,
            unique_id=unique_id,
            processor=processor,
            store_index_in_feather=self.store_index_in_feather,
            settings=settings,
            task=self.task_id,
        )
        if this_run is not None:
            this_run[key] = (settings, target)  # holding the settings keeps their identity unique
        return target

    def make_large_data_frame_target(
        self,
        relative_file_path: str | None = None,
        use_unique_id: bool = True,
        max_byte: int = DEFAULT_MAX_BYTE,
    ) -> LockedTarget:
        relative = relative_file_path or os.path.join(
            self.__module__.replace(".", "/"), f"{type(self).__name__}.zip"
        )
        processor = LargeDataFrameProcessor(max_byte=max_byte)
        return self.make_model_target(relative, processor.save, processor.load, use_unique_id)

    def make_model_target(
        self,
        relative_file_path: str,
        save_function: Callable[[Any, str], None],
        load_function: Callable[[str], Any],
        use_unique_id: bool = True,
    ) -> LockedTarget:
        if not relative_file_path.endswith("zip"):
            raise ValueError(f"a model target's path must end in .zip, not {relative_file_path!r}")
        return factories.make_model_target(
            os.path.join(self.workspace_directory, relative_file_path),
            temporary_directory=self.local_temporary_directory,
            save_function=save_function,
            load_function=load_function,
            unique_id=self.make_unique_id() if use_unique_id else None,
            settings=self.lock_settings(),
            task=self.task_id,
        )
