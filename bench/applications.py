"""What an application of the benchmark (a separate OS process) left behind when it failed."""

from __future__ import annotations

from locked_targets.testing import ProcessFailed

_LOG_TAIL_CHARACTERS = 3000


def failure_with_log(failure: ProcessFailed) -> str:
    """What went wrong in the application, with the end of its log: its own traceback is there."""
    assert failure.process.log_path is not None
    with open(failure.process.log_path) as file:
        output = file.read()
    return f"{failure}:\n{output[-_LOG_TAIL_CHARACTERS:]}"
