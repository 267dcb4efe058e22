"""The support shared by tests, demo and benchmarks: the side log and the process launcher."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from locked_targets.testing import ProcessFailed, ProcessGroup, ProcessSpec, append_line, read_lines

# Reads its release, then appends LINES lines of its own name to the side log given as argument.
APPENDER = """
import os, sys
from locked_targets.testing import append_line
print("ready", flush=True)
sys.stdin.readline()
for number in range(int(os.environ["LINES"])):
    append_line(sys.argv[1], f"{os.environ['NAME']} {number} " + "x" * 2000)
"""


def test_lines_appended_by_processes_released_together_stay_whole(tmp_path: Path) -> None:
    log = tmp_path / "side.log"
    specs = [
        ProcessSpec(
            name=f"writer-{number}", arguments=[str(log)], environment={"NAME": f"w{number}", "LINES": "200"}
        )
        for number in range(4)
    ]
    with ProcessGroup([sys.executable, "-c", APPENDER], specs, held_for_release=True) as writers:
        writers.wait_for_line("ready", time.monotonic() + 60)
        writers.release()
        assert writers.wait(time.monotonic() + 60, expect_success=True) == [0, 0, 0, 0]
    lines = read_lines(log)
    assert len(lines) == 800
    assert all(line.endswith(" " + "x" * 2000) for line in lines)
    for number in range(4):
        assert [line.split()[1] for line in lines if line.startswith(f"w{number} ")] == [
            str(step) for step in range(200)
        ]


def test_a_side_log_line_holds_no_newline(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no newline"):
        append_line(tmp_path / "side.log", "two\nlines")
    assert read_lines(tmp_path / "side.log") == []


def test_a_silent_process_fails_its_deadline_and_is_stopped_on_the_way_out() -> None:
    spec = ProcessSpec(name="sleeper")
    with ProcessGroup([sys.executable, "-c", "import time; time.sleep(60)"], [spec]) as group:
        with pytest.raises(ProcessFailed, match="sleeper did not report in time"):
            group.wait_for_line("ready", time.monotonic() + 0.5)
        with pytest.raises(ProcessFailed, match="sleeper did not exit in time"):
            group.wait(time.monotonic() + 0.5)
    assert not group.processes[0].running


def test_an_exit_before_the_marker_or_with_a_failure_is_reported(tmp_path: Path) -> None:
    log = tmp_path / "failing.log"
    script = "import sys; print('no marker'); print('oops', file=sys.stderr); sys.exit(3)"
    with ProcessGroup(
        [sys.executable, "-c", script], [ProcessSpec(name="failing", log_path=str(log))]
    ) as group:
        with pytest.raises(ProcessFailed, match=r"failing exited with status 3 \(log: .*failing\.log\)"):
            group.wait_for_line("ready", time.monotonic() + 60)
        with pytest.raises(ProcessFailed, match="failing exited with status 3"):
            group.wait(time.monotonic() + 60, expect_success=True)
        assert group.outputs == ["no marker\n"]
    assert log.read_text() == "oops\n"
