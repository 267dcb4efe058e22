"""Writers and readers in their own OS process that stall at a known moment, to be paused or killed there.

Each says on its ``events`` queue when it has reached that moment (``STALLED_BEFORE_COMMIT``,
``STALLED_BEFORE_COMPLETION``, ``STALLED_WHILE_LOADING``), then stalls.
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import pickle
import time
from collections.abc import Callable
from typing import IO, Any, Literal

from gokart.file_processor import FileProcessor, make_file_processor

from helpers.targets import locked_target
from locked_targets.errors import LockLost
from locked_targets.factories import make_model_target, make_target
from locked_targets.settings import Settings
from locked_targets.storage.s3 import s3_client
from locked_targets.target import LockedTarget

PAYLOAD_BYTES = 8 * 1024 * 1024  # pickled, a little more: an S3 multipart upload
STALLED_BEFORE_COMMIT = "written, not yet committed"
STALLED_BEFORE_COMPLETION = "parts uploaded, upload not completed"
STALLED_WHILE_LOADING = "loading"


def payload_of(writer: str) -> dict[str, Any]:
    data = writer.encode() * (PAYLOAD_BYTES // len(writer))
    return {"writer": writer, "data": data, "digest": hashlib.sha256(data).hexdigest()}


def whole_writer(loaded: Any) -> str | None:
    """The writer of a whole payload, or None if ``loaded`` is torn or foreign."""
    if not isinstance(loaded, dict) or not isinstance(loaded.get("data"), bytes):
        return None
    if hashlib.sha256(loaded["data"]).hexdigest() != loaded.get("digest"):
        return None
    writer: str = loaded["writer"]
    return writer


def stall(events: multiprocessing.Queue[str], moment: str, stall_seconds: float) -> None:
    events.put(moment)
    time.sleep(stall_seconds)


class StallingProcessor(FileProcessor):
    """Stalls in a dump once the whole object is written, before the storage commits it; or in a load."""

    def __init__(
        self,
        inner: FileProcessor,
        events: multiprocessing.Queue[str],
        stall_seconds: float,
        stall_in: Literal["dump", "load"] = "dump",
    ) -> None:
        self._inner = inner
        self._events = events
        self._stall_seconds = stall_seconds
        self._stall_in = stall_in

    def format(self) -> Any:
        return self._inner.format()

    def load(self, file: IO[Any]) -> Any:
        if self._stall_in == "load":
            stall(self._events, STALLED_WHILE_LOADING, self._stall_seconds)
        return self._inner.load(file)

    def dump(self, obj: Any, file: IO[Any]) -> None:
        self._inner.dump(obj, file)
        if self._stall_in == "dump":
            stall(self._events, STALLED_BEFORE_COMMIT, self._stall_seconds)


def dump_stalling(
    path: str, settings: Settings, writer: str, events: multiprocessing.Queue[str], stall_seconds: float
) -> None:
    """Dump ``writer``'s payload, stalling before the commit; report how the dump ended."""
    processor = StallingProcessor(make_file_processor(path), events, stall_seconds)
    target = make_target(path, processor=processor, settings=settings)
    try:
        target.dump(payload_of(writer))
    except LockLost as lost:
        events.put(f"LockLost: {lost}")
    else:
        events.put("dumped")


def dump_stalling_before_completion(
    path: str, settings: Settings, writer: str, events: multiprocessing.Queue[str], stall_seconds: float
) -> None:
    """Dump ``writer``'s payload to S3, stalling once every part is uploaded, before the completion."""
    s3 = s3_client(settings).s3.meta.client  # the process's client, which the dump uses
    s3.meta.events.register(
        "before-call.s3.CompleteMultipartUpload",
        lambda **_: stall(events, STALLED_BEFORE_COMPLETION, stall_seconds),
    )
    locked_target(path, settings).dump(payload_of(writer))


def load_stalling(
    path: str, settings: Settings, events: multiprocessing.Queue[str], stall_seconds: float
) -> None:
    """Load the target at ``path``, stalling inside the load (under the shared lock); then say "loaded"."""
    processor = StallingProcessor(make_file_processor(path), events, stall_seconds, stall_in="load")
    make_target(path, processor=processor, settings=settings).load()
    events.put("loaded")


def save_pickle(obj: Any, path: str) -> None:
    with open(path, "wb") as file:
        pickle.dump(obj, file)


def load_pickle(path: str) -> Any:
    with open(path, "rb") as file:
        return pickle.load(file)


def save_stalling(events: multiprocessing.Queue[str], stall_seconds: float, obj: Any, path: str) -> None:
    """A model's save function that saves, then stalls before the model is archived and committed."""
    save_pickle(obj, path)
    stall(events, STALLED_BEFORE_COMMIT, stall_seconds)


def model_target(
    path: str, temporary_directory: str, settings: Settings, save: Callable[[Any, str], None] = save_pickle
) -> LockedTarget:
    """A locked model target at ``path`` that pickles its model through ``temporary_directory``."""
    return make_model_target(
        path,
        temporary_directory=temporary_directory,
        save_function=save,
        load_function=load_pickle,
        settings=settings,
    )


def dump_model_stalling(
    path: str,
    temporary_directory: str,
    settings: Settings,
    writer: str,
    events: multiprocessing.Queue[str],
    stall_seconds: float,
) -> None:
    """Dump ``writer``'s payload as a model, stalling once saved, before it is archived."""
    save = functools.partial(save_stalling, events, stall_seconds)
    model_target(path, temporary_directory, settings, save).dump(payload_of(writer))


def dump_whole(path: str, settings: Settings, writer: str) -> None:
    locked_target(path, settings).dump(payload_of(writer))
