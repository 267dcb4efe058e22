"""The demo's side log: what every application did, appended to one shared file.

Each line is ``<kind> <task> <application> [<detail>]``, appended by the side log writer
of ``locked_targets.testing`` (one ``O_APPEND`` write a line), so lines of concurrent
applications never interleave. The parent process counts these lines; nothing in the
pipeline reads them.
"""

from __future__ import annotations

import dataclasses
import enum
import os

from locked_targets.testing import append_line, read_lines

EVENTS_LOG_VARIABLE = "DEMO_EVENTS_LOG"
APPLICATION_VARIABLE = "DEMO_APPLICATION"


class EventKind(enum.Enum):
    """What happened to a task's output in one application."""

    RUN = "run"  # the task's run() body executed: it computed its output
    COMPLETE = "complete"  # luigi counted the task done in this application (computed here or not)
    WRITE = "write"  # the output reached the cache (with locked_targets: a dump the lock let through)
    LOAD = "load"  # the output was loaded; the detail says whether it was whole


WHOLE = "whole"


@dataclasses.dataclass(frozen=True)
class Event:
    """One line of the side log."""

    kind: EventKind
    task: str
    application: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class EventLog:
    """The side log as one application writes to it."""

    path: str
    application: str

    @classmethod
    def of_this_process(cls) -> EventLog:
        """The log and application name the demo's parent gave this process in its environment."""
        return cls(path=os.environ[EVENTS_LOG_VARIABLE], application=os.environ[APPLICATION_VARIABLE])

    def record(self, kind: EventKind, task: str, detail: str = "") -> None:
        words = [kind.value, task, self.application]
        if detail:
            words.append(" ".join(detail.split()))  # one line, whatever the detail holds
        append_line(self.path, " ".join(words))


def read_events(path: str) -> list[Event]:
    """Every event recorded so far, in the order the lines were appended."""
    events = []
    for line in read_lines(path):
        kind, task, application, *detail = line.split(" ", 3)
        events.append(Event(EventKind(kind), task, application, detail[0] if detail else ""))
    return events
