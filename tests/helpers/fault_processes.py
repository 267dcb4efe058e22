"""Writers that run in their own OS process and can be paused or killed in the middle of a dump."""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from typing import IO, Any

from gokart.file_processor import FileProcessor, make_file_processor

from helpers.targets import locked_target
from locked_targets.errors import LockLost
from locked_targets.factories import make_target
from locked_targets.settings import Settings

PAYLOAD_BYTES = 8 * 1024 * 1024


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


class StallingProcessor(FileProcessor):
    """Writes the whole object, then says so and stalls before the storage commits it."""

    def __init__(
        self, inner: FileProcessor, events: multiprocessing.Queue[str], stall_seconds: float
    ) -> None:
        self._inner = inner
        self._events = events
        self._stall_seconds = stall_seconds

    def format(self) -> Any:
        return self._inner.format()

    def load(self, file: IO[Any]) -> Any:
        return self._inner.load(file)

    def dump(self, obj: Any, file: IO[Any]) -> None:
        self._inner.dump(obj, file)
        self._events.put("written, not yet committed")
        time.sleep(self._stall_seconds)


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


def dump_whole(path: str, settings: Settings, writer: str) -> None:
    locked_target(path, settings).dump(payload_of(writer))
