"""The demo's application processes (``python -m demo.app``): how they are started and what they report.

They run under ``locked_targets.testing.ProcessGroup``: started apart, released together,
each wait bounded by a deadline, stopped politely then by force on the way out.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from demo.events import APPLICATION_VARIABLE, EVENTS_LOG_VARIABLE
from demo.pipeline import TARGETS_VARIABLE
from locked_targets.testing import LaunchedProcess, ProcessGroup, ProcessSpec

# What an application prints on stdout: READY once imported, then one RESULT line of JSON.
READY = "demo-application-ready"
RESULT = "demo-application-result"

# The directory that holds the demo package, so ``python -m demo.app`` finds it from anywhere.
PROJECT_DIRECTORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class ApplicationResult:
    """What one application reported after its build."""

    application: str
    seconds: float
    broken_outputs: list[str]
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.error is None and not self.broken_outputs


def start_applications(
    count: int, *, luigi_config: str, events_log: str, directory: str, locked_targets: bool
) -> ProcessGroup:
    """``app-1`` to ``app-<count>``, held until released, each with its stderr in ``directory/<name>.log``.

    Without ``locked_targets`` their tasks use gokart's own targets (``demo.pipeline``).
    """
    names = [f"app-{number}" for number in range(1, count + 1)]
    specs = [
        ProcessSpec(
            name=name,
            environment={
                "LUIGI_CONFIG_PATH": luigi_config,
                EVENTS_LOG_VARIABLE: events_log,
                APPLICATION_VARIABLE: name,
                TARGETS_VARIABLE: "locked_targets" if locked_targets else "gokart",
            },
            log_path=os.path.join(directory, f"{name}.log"),
        )
        for name in names
    ]
    return ProcessGroup(
        [sys.executable, "-m", "demo.app"], specs, cwd=PROJECT_DIRECTORY, held_for_release=True
    )


def result_of(application: LaunchedProcess, deadline: float) -> ApplicationResult:
    """What ``application`` reported once its build was done; it has exited by then."""
    reported = json.loads(application.wait_for_line(RESULT, deadline))
    application.wait(deadline)
    return ApplicationResult(**reported)
