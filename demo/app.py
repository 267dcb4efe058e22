"""One application of the demo: builds the pipeline on the shared cache, then loads and checks every output.

``python -m demo`` runs several of these as separate processes. Each reads the luigi
configuration from ``LUIGI_CONFIG_PATH``, and from the environment its name and side log
(``demo.events``) and whose targets its tasks use (``demo.pipeline``). It prints ``READY``
once its imports are done, waits for a line on stdin so that all applications start
together, runs ``gokart.build`` with its own local scheduler, and prints one ``RESULT``
line of JSON. It notes in the side log each task
luigi counts as done here, so that the demo can tell the tasks this application computed
from those it skipped because another application computed them.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import gokart
import luigi
from gokart.build import GokartBuildError

from demo.events import EventKind, EventLog
from demo.launcher import READY, RESULT
from demo.pipeline import FINAL_TASK, DemoTask, checked_load, tasks_needed_for


def note_completions(events: EventLog) -> None:
    """Note each task luigi counts as done in this application, whether or not its body ran here.

    luigi reports SUCCESS when ``run()`` returned (also when the run lock found the task
    complete and skipped its body) and DEPENDENCY_PRESENT when the output was already
    there as it scheduled the task.
    """

    def completed(task: DemoTask) -> None:
        events.record(EventKind.COMPLETE, task.name)

    for event in (luigi.Event.SUCCESS, luigi.Event.DEPENDENCY_PRESENT):
        DemoTask.event_handler(event)(completed)  # type: ignore[no-untyped-call]


def build_and_check(events: EventLog) -> list[str]:
    """Build the pipeline, then load every task's output; the names of those not whole."""
    # Warnings too, so that the application's log says why a task failed to schedule or run.
    gokart.build(FINAL_TASK(), return_value=False, log_level=logging.WARNING)
    return [
        task_class.__name__
        for task_class in tasks_needed_for(FINAL_TASK)
        if checked_load(task_class().output().load, task_class.__name__, events) is None
    ]


def cause_of(failure: Exception) -> str:
    """What went wrong: for a failed build, the first exception a task raised, not luigi's summary."""
    if isinstance(failure, GokartBuildError):
        for exceptions in failure.raised_exceptions.values():
            if exceptions:
                failure = exceptions[0]
                break
    return f"{type(failure).__name__}: {failure}"


def main() -> int:
    events = EventLog.of_this_process()
    note_completions(events)
    print(READY, flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    error = None
    try:
        broken = build_and_check(events)
    except Exception as failure:
        broken, error = [], cause_of(failure)
    result = {
        "application": events.application,
        "seconds": round(time.monotonic() - started, 2),
        "broken_outputs": broken,
        "error": error,
    }
    print(RESULT, json.dumps(result), flush=True)
    return 0 if error is None and not broken else 1


if __name__ == "__main__":
    sys.exit(main())
