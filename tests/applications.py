"""Copies of the test pipeline's luigi application, run as separate OS processes on one cache."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from locked_targets.settings import Settings

APP = str(Path(__file__).with_name("run_lock_app.py"))


class Applications:
    """Runs copies of the test application against one luigi configuration and one side log."""

    def __init__(self, tmp_path: Path, settings: Settings, **options: str) -> None:
        self.side_log = tmp_path / "side.log"
        self.config = tmp_path / "luigi.cfg"
        lines = [
            "[locked_targets]",
            f"redis_url = {settings.redis_url}",
            f"key_prefix = {settings.key_prefix}",
        ]
        lines += [f"{name} = {value}" for name, value in options.items() if not name.startswith("scheduler_")]
        lines += ["[scheduler]", "retry_delay = 1", "retry_count = 100", "[worker]", "keep_alive = true"]
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
        expect_success: bool = True,
        meanwhile: Callable[[], None] | None = None,
    ) -> float:
        """Start one application per entry of ``whats`` together; return the wall time until the last ends."""
        started = time.monotonic()
        processes = [
            subprocess.Popen(
                [sys.executable, APP, workspace, scheduler, what],
                env={
                    **os.environ,
                    "LUIGI_CONFIG_PATH": str(self.config),
                    "PIPELINE_SIDE_LOG": str(self.side_log),
                    "PIPELINE_APPLICATION": f"app-{number}",
                    "PIPELINE_TASK_SECONDS": str(task_seconds),
                },
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for number, what in enumerate(whats)
        ]
        if meanwhile is not None:
            meanwhile()
        outputs = [process.communicate(timeout=240)[0].decode() for process in processes]
        wall = time.monotonic() - started
        self.outputs = outputs
        self.return_codes = [process.returncode for process in processes]
        if expect_success:
            for process, output in zip(processes, outputs, strict=True):
                assert process.returncode == 0, output
        return wall

    def runs_per_task(self) -> dict[str, int]:
        counts = collections.Counter(line.split()[0] for line in self.side_log.read_text().splitlines())
        return dict(counts)
