"""Factories that mirror gokart's ``make_target`` family and return ``LockedTarget``s."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from gokart.file_processor import DataFrameType, FileProcessor, make_file_processor
from gokart.target import LargeDataFrameProcessor

from locked_targets.settings import Settings
from locked_targets.storage import storage_kind_for
from locked_targets.storage.model_target import ModelTarget
from locked_targets.target import LockedTarget

DEFAULT_MAX_BYTE = 2**26  # gokart's split size for large DataFrames


def make_target(
    file_path: str,
    unique_id: str | None = None,
    processor: FileProcessor | None = None,
    store_index_in_feather: bool = True,
    *,
    settings: Settings | None = None,
    task: str | None = None,
) -> LockedTarget:
    """A locked single-file cache target, as ``gokart.target.make_target`` makes unlocked.

    ``settings`` default to luigi's configuration; ``task`` is the task id that lock
    holders' descriptions name.
    """
    path = file_path_with_unique_id(file_path, unique_id)
    processor = processor or file_processor_for(path, store_index_in_feather)
    settings = settings if settings is not None else Settings.from_luigi_config()
    target = storage_kind_for(path).single_file_target(path, processor, settings)
    return LockedTarget(target, settings=settings, task=task)


def make_model_target(
    file_path: str,
    temporary_directory: str,
    save_function: Callable[[Any, str], None],
    load_function: Callable[[str], Any] | None,
    unique_id: str | None = None,
    *,
    settings: Settings | None = None,
    task: str | None = None,
) -> LockedTarget:
    """A locked model target, as ``gokart.target.make_model_target`` makes unlocked.

    ``settings`` and ``task`` as for ``make_target``.
    """
    path = file_path_with_unique_id(file_path, unique_id)
    settings = settings if settings is not None else Settings.from_luigi_config()
    target = ModelTarget(
        file_path=path,
        storage=storage_kind_for(path),
        settings=settings,
        temporary_directory=temporary_directory,
        save_function=save_function,
        load_function=load_function,
    )
    return LockedTarget(target, settings=settings, task=task)


def make_large_data_frame_target(
    file_path: str,
    temporary_directory: str,
    unique_id: str | None = None,
    max_byte: int = DEFAULT_MAX_BYTE,
) -> LockedTarget:
    """A locked target for a DataFrame too large for one pickle: split into parts, zipped."""
    processor = LargeDataFrameProcessor(max_byte=max_byte)
    return make_model_target(file_path, temporary_directory, processor.save, processor.load, unique_id)


def file_processor_for(
    file_path: str, store_index_in_feather: bool = True, dataframe_type: DataFrameType = "pandas"
) -> FileProcessor:
    """gokart's processor for ``file_path``'s extension, as ``make_file_processor`` picks it.

    gokart builds all fourteen of its processors to pick one, on every target. They keep only
    what they were built with, so targets share one per extension and configuration.
    """
    return _file_processor(os.path.splitext(file_path)[1], store_index_in_feather, dataframe_type)


@functools.cache
def _file_processor(
    extension: str, store_index_in_feather: bool, dataframe_type: DataFrameType
) -> FileProcessor:
    return make_file_processor(
        f"file{extension}", store_index_in_feather=store_index_in_feather, dataframe_type=dataframe_type
    )


def file_path_with_unique_id(file_path: str, unique_id: str | None) -> str:
    """gokart's naming: ``dir/name_<unique_id>.ext``."""
    if unique_id is None:
        return file_path
    base, extension = os.path.splitext(file_path)
    return f"{base}_{unique_id}{extension}"
