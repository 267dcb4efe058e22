"""Copies of the test pipeline's application, run as separate OS processes on one cache.

Their luigi configuration has the README's retry recipe for ``fail_on_collision`` (with a
shorter ``retry_delay``): ``[scheduler]`` retries, and ``keep_alive`` in ``[worker]``, which
``luigi.build`` reads, and in ``[gokart_worker]``, which ``gokart.build`` reads.
"""

from __future__ import annotations

import collections
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from helpers.run_lock_app import COMPLETE, RETURNED
from locked_targets.settings import Settings
from locked_targets.testing import ProcessGroup, ProcessSpec, read_lines

# ``python -m helpers.run_lock_app`` finds the helpers package on this directory.
TESTS_DIRECTORY = str(Path(__file__).resolve().parent.parent)
APPLICATION_TIMEOUT_SECONDS = 240.0


class Applications:
    """Runs copies of the test application against one luigi configuration and one side log."""

    def __init__(self, tmp_path: Path, settings: Settings, *, retrying: bool = True, **options: str) -> None:
        """``options`` go to ``[locked_targets]``; ``retrying=False`` leaves luigi's retry settings out."""
        self.side_log = tmp_path / "side.log"
        self.config = tmp_path / "luigi.cfg"
        lines = [
            "[locked_targets]",
            f"redis_url = {settings.redis_url}",
            f"key_prefix = {settings.key_prefix}",
        ]
        lines += [f"{name} = {value}" for name, value in options.items()]
        if retrying:
            lines += ["[scheduler]", "retry_delay = 1", "retry_count = 100"]
            lines += ["[worker]", "keep_alive = true", "[gokart_worker]", "keep_alive = true"]
        lines += ["[core]", "autoload_range = false"]
        for name in ("s3_endpoint_url",):
            if getattr(settings, name):
                lines.insert(1, f"{name} = {getattr(settings, name)}")
        self.config.write_text("\n".join(lines) + "\n")

    def run(
        self,
        workspace: str,
        whats: list[str],
        scheduler: str = "local",
        task_seconds: float = 1.0,
        *,
        builder: str = "luigi",
        expect_success: bool = True,
        meanwhile: Callable[[], None] | None = None,
    ) -> float:
        """Start one application per entry of ``whats`` together; return the wall time until the last ends.

        ``builder``: the build call each makes, ``luigi`` (``luigi.build``) or ``gokart`` (``gokart.build``).
        """
        started = time.monotonic()
        python_path = os.pathsep.join(filter(None, [TESTS_DIRECTORY, os.environ.get("PYTHONPATH")]))
        specs = [
            ProcessSpec(
                name=f"app-{number}",
                arguments=[workspace, scheduler, what, builder],
                environment={
                    "PYTHONPATH": python_path,
                    "LUIGI_CONFIG_PATH": str(self.config),
                    "PIPELINE_SIDE_LOG": str(self.side_log),
                    "PIPELINE_APPLICATION": f"app-{number}",
                    "PIPELINE_TASK_SECONDS": str(task_seconds),
                },
            )
            for number, what in enumerate(whats)
        ]
        with ProcessGroup([sys.executable, "-m", "helpers.run_lock_app"], specs) as applications:
            if meanwhile is not None:
                meanwhile()
            self.return_codes = applications.wait(started + APPLICATION_TIMEOUT_SECONDS)
            wall = time.monotonic() - started
            self.outputs = applications.outputs
        if expect_success:
            for return_code, output in zip(self.return_codes, self.outputs, strict=True):
                assert return_code == 0, output
        return wall

    def returned(self) -> list[str]:
        """Per application, what its build call returned, as ``repr`` shows it."""
        return [self._reported(output, RETURNED) for output in self.outputs]

    def complete(self) -> list[bool]:
        """Per application, whether every task it built was complete once its build returned."""
        return [self._reported(output, COMPLETE) == "True" for output in self.outputs]

    @staticmethod
    def _reported(output: str, marker: str) -> str:
        lines = [line for line in output.splitlines() if line.startswith(marker + " ")]
        assert len(lines) == 1, f"expected one {marker} line in:\n{output}"
        return lines[0][len(marker) + 1 :]

    def runs_per_task(self) -> dict[str, int]:
        counts = collections.Counter(line.split()[0] for line in read_lines(self.side_log))
        return dict(counts)
