"""Copies of an application as separate OS processes: started apart, released together, each wait bounded.

The tests, the demo and the benchmarks run several applications on one shared cache, each
in its own process. A process held for release reads one line on its stdin before it
starts its work, so that all of them can first import what they need, say so with a
marker line, and then start at the same moment and really contend. Every wait has a
deadline, so a hung application fails its caller instead of hanging it; on the way out,
whatever still runs is stopped politely, then by force. ``ProcessFailed`` is defined here,
not in ``locked_targets.errors``: only the tests, the demo and the benchmarks see it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType

# What a process held for release reads on its stdin when released (then its stdin ends).
RELEASE_LINE = "go\n"
_STOP_GRACE_SECONDS = 5.0
# Even past its deadline, a process that has just reported gets this long to exit.
_LAST_LOOK_SECONDS = 0.1


class ProcessFailed(Exception):
    """A process exited, failed or outlived its deadline before it did what it was awaited for."""

    def __init__(self, process: LaunchedProcess, what: str) -> None:
        log = f" (log: {process.log_path})" if process.log_path else ""
        super().__init__(f"{process.name} {what}{log}")
        self.process = process


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """One process of a group: its name, its own arguments and environment, where its stderr goes."""

    name: str
    arguments: Sequence[str] = ()  # after the group's command
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)  # over os.environ
    log_path: str | None = None  # the file its stderr goes to; None: into its output, with stdout


class LaunchedProcess:
    """One OS process; a thread reads its output as it comes, so the process never blocks on a full pipe."""

    def __init__(
        self, command: Sequence[str], spec: ProcessSpec, *, cwd: str | None, held_for_release: bool
    ) -> None:
        self.name = spec.name
        self.log_path = spec.log_path
        self._output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()  # None: the output has ended
        with contextlib.ExitStack() as files:
            stderr = (
                files.enter_context(open(spec.log_path, "w", encoding="utf-8"))
                if spec.log_path
                else subprocess.STDOUT
            )
            self._process = subprocess.Popen(
                [*command, *spec.arguments],
                stdin=subprocess.PIPE if held_for_release else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                encoding="utf-8",
                errors="replace",
                env={**os.environ, **spec.environment},
                cwd=cwd,
            )
        self._reader = threading.Thread(target=self._read_output, name=f"{self.name}-output", daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        assert self._process.stdout is not None
        with self._process.stdout as output:
            for line in output:
                self._output.append(line)
                self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    @property
    def output(self) -> str:
        """What the process has printed so far (with its stderr, unless that goes to a log file)."""
        return "".join(self._output)

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def wait_for_line(self, marker: str, deadline: float) -> str:
        """The rest of the next line that starts with ``marker``; lines before it are passed over."""
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ProcessFailed(self, "did not report in time") from None
            if line is None:
                self._lines.put(None)  # a later wait sees the end too
                raise ProcessFailed(self, f"exited with status {self._process.wait()}")
            if line.startswith(marker):
                return line[len(marker) :].strip()

    def release(self) -> None:
        """Let a process held for release start its work."""
        if self._process.stdin is None:
            raise RuntimeError(f"{self.name} was not held for release")
        try:
            self._process.stdin.write(RELEASE_LINE)
            self._process.stdin.close()
        except BrokenPipeError:
            pass  # it has already exited: the next wait says so

    def wait(self, deadline: float) -> int:
        """The exit status, once the process has ended and its output has been read to the end."""
        try:
            status = self._process.wait(timeout=max(_LAST_LOOK_SECONDS, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise ProcessFailed(self, "did not exit in time") from None
        self._reader.join(timeout=max(_LAST_LOOK_SECONDS, deadline - time.monotonic()))
        return status

    def terminate(self) -> None:
        """Ask the process to end (SIGTERM), if it still runs."""
        if self.running:
            self._process.terminate()

    def kill_unless_ended_by(self, deadline: float) -> None:
        """Kill the process if it still runs at ``deadline``."""
        try:
            self._process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class ProcessGroup:
    """One process of ``command`` per ``ProcessSpec``, all started at once; leaving ``with`` stops them."""

    def __init__(
        self,
        command: Sequence[str],
        specs: Sequence[ProcessSpec],
        *,
        cwd: str | None = None,
        held_for_release: bool = False,
    ) -> None:
        self.processes: list[LaunchedProcess] = []
        try:
            for spec in specs:
                self.processes.append(
                    LaunchedProcess(command, spec, cwd=cwd, held_for_release=held_for_release)
                )
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for_line(self, marker: str, deadline: float) -> list[str]:
        """Per process, the rest of its next line that starts with ``marker`` (as it reports ready)."""
        return [process.wait_for_line(marker, deadline) for process in self.processes]

    def release(self) -> None:
        """Let every process start its work, as near the same moment as can be."""
        for process in self.processes:
            process.release()

    def wait(self, deadline: float, *, expect_success: bool = False) -> list[int]:
        """Every process's exit status; with ``expect_success``, ``ProcessFailed`` for the first not 0."""
        statuses = [process.wait(deadline) for process in self.processes]
        for process, status in zip(self.processes, statuses, strict=True):
            if expect_success and status != 0:
                raise ProcessFailed(process, f"exited with status {status}")
        return statuses

    @property
    def outputs(self) -> list[str]:
        return [process.output for process in self.processes]

    def stop(self) -> None:
        """End the processes still running: all asked at once, then killed if they outlast a grace period."""
        running = [process for process in self.processes if process.running]
        for process in running:
            process.terminate()
        grace_deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for process in running:
            process.kill_unless_ended_by(grace_deadline)
