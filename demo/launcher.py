"""The demo's application processes: started apart, released together, each wait bounded by a deadline."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import subprocess
import sys
import threading
import time

from demo.events import APPLICATION_VARIABLE, EVENTS_LOG_VARIABLE

# What an application prints on stdout: READY once imported, then one RESULT line of JSON.
READY = "demo-application-ready"
RESULT = "demo-application-result"

# The directory that holds the demo package, so ``python -m demo.app`` finds it from anywhere.
PROJECT_DIRECTORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STOP_GRACE_SECONDS = 5.0


class ApplicationFailed(Exception):
    """An application exited or fell silent before reporting."""


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


class ApplicationProcess:
    """One ``python -m demo.app`` process and the lines it reports on stdout."""

    def __init__(self, name: str, *, luigi_config: str, events_log: str, log_path: str) -> None:
        self.name = name
        self.log_path = log_path
        environment = {
            **os.environ,
            "LUIGI_CONFIG_PATH": luigi_config,
            EVENTS_LOG_VARIABLE: events_log,
            APPLICATION_VARIABLE: name,
        }
        with open(log_path, "w", encoding="utf-8") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "demo.app"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=environment,
                cwd=PROJECT_DIRECTORY,
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_lines, name=f"{name}-stdout", daemon=True).start()

    def _read_lines(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_until_ready(self, deadline: float) -> None:
        self._wait_for(READY, deadline)

    def start_building(self) -> None:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write("go\n")
            self._process.stdin.close()
        except BrokenPipeError:
            pass  # it has already exited: result() says so

    def result(self, deadline: float) -> ApplicationResult:
        reported = json.loads(self._wait_for(RESULT, deadline))
        self._process.wait(timeout=max(0.1, deadline - time.monotonic()))
        return ApplicationResult(**reported)

    def _wait_for(self, marker: str, deadline: float) -> str:
        """The rest of the first line that starts with ``marker``."""
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ApplicationFailed(
                    f"{self.name} did not report in time (log: {self.log_path})"
                ) from None
            if line is None:
                raise ApplicationFailed(
                    f"{self.name} exited with status {self._process.wait()} (log: {self.log_path})"
                )
            if line.startswith(marker):
                return line[len(marker) :].strip()

    def stop(self) -> None:
        """End the process if it still runs: politely, then by force."""
        if self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=_STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
