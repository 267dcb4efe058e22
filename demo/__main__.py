"""``python -m demo``: several applications build one gokart pipeline at the same moment on one shared cache.

Starts a private redis-server, writes the luigi configuration into a fresh directory
under ``demo-output/``, starts the applications (``demo.app``) as separate processes,
releases them together, and prints per application the tasks it computed and those it
skipped because another application computed them, then per task how many times it was
computed, how many times its output was written, and whether every load was whole. By
default the tasks take the run lock as well as the target lock; with ``--unlocked`` they
use gokart's own targets, without Redis and without locked_targets. The redis-server and
any application still running are stopped on the way out, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from types import FrameType

from demo.events import read_events
from demo.launcher import PROJECT_DIRECTORY, READY, ApplicationResult, result_of, start_applications
from demo.pipeline import FINAL_TASK, tasks_needed_for
from demo.report import TaskCounts, applications_report, count_by_task, failures, summary, tasks_table
from locked_targets.testing import ProcessFailed, RedisServer

# Imports of gokart, luigi and pandas take a few seconds on a cold machine.
READY_WITHIN_SECONDS = 60.0
BUILD_WITHIN_SECONDS = 60.0


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="Several gokart applications build one pipeline at the same moment on one shared cache.",
    )
    parser.add_argument("--applications", type=int, default=4, help="how many applications (default 4)")
    locking = parser.add_mutually_exclusive_group()
    locking.add_argument(
        "--no-run-lock",
        dest="run_lock",
        action="store_false",
        help="lock the targets only, not the runs ([TaskOnKart] should_lock_run = false): "
        "applications that start a task together all compute it, and one output is written",
    )
    locking.add_argument(
        "--unlocked",
        action="store_true",
        help="run the same pipeline on gokart's own targets (gokart.TaskOnKart, no Redis, no "
        "locked_targets), to see what the locks prevent",
    )
    arguments = parser.parse_args(argv)
    arguments.run_lock = arguments.run_lock and not arguments.unlocked
    return arguments


def fresh_directory() -> str:
    directory = os.path.join(
        PROJECT_DIRECTORY, "demo-output", f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    )
    os.makedirs(directory)
    return directory


def write_luigi_config(directory: str, redis_url: str | None, *, run_lock: bool) -> str:
    """The applications' luigi configuration; ``[locked_targets]`` only with a Redis to lock in."""
    lines = [
        "[TaskOnKart]",
        f"workspace_directory = {os.path.join(directory, 'cache')}",
        f"local_temporary_directory = {os.path.join(directory, 'tmp')}",
        f"should_lock_run = {str(run_lock).lower()}",
    ]
    if redis_url is not None:
        # A locking bug then fails an application with LockTimeout instead of hanging the demo.
        lines += ["", "[locked_targets]", f"redis_url = {redis_url}"]
        lines += ["wait_timeout_seconds = 30", "run_wait_timeout_seconds = 30"]
    path = os.path.join(directory, "luigi.cfg")
    with open(path, "w", encoding="utf-8") as config:
        config.write("\n".join(lines) + "\n")
    return path


def run_applications(
    count: int, directory: str, luigi_config: str, cleanup: contextlib.ExitStack, *, locked: bool
) -> list[ApplicationResult]:
    """Start ``count`` applications, release them together once all are ready, collect their results."""
    applications = cleanup.enter_context(
        start_applications(
            count,
            luigi_config=luigi_config,
            events_log=os.path.join(directory, "events.log"),
            directory=directory,
            locked_targets=locked,
        )
    )
    applications.wait_for_line(READY, time.monotonic() + READY_WITHIN_SECONDS)
    applications.release()
    build_deadline = time.monotonic() + BUILD_WITHIN_SECONDS
    return [result_of(application, build_deadline) for application in applications.processes]


def pipeline_shape() -> str:
    """Each task with the tasks it needs, as in ``CleanEvents(GenerateEvents)``."""
    return ", ".join(
        f"{task_class.__name__}({', '.join(needed.__name__ for needed in task_class.inputs.values())})"
        for task_class in tasks_needed_for(FINAL_TASK)
    )


def locks_in_use(*, locked: bool, run_lock: bool) -> str:
    if not locked:
        return "none: gokart's own targets, no locked_targets (--unlocked)"
    if run_lock:
        return "run lock (should_lock_run) and target lock"
    return "target lock only (--no-run-lock)"


def shown(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def run_demo(arguments: argparse.Namespace) -> int:
    directory = fresh_directory()
    locked = not arguments.unlocked
    with contextlib.ExitStack() as cleanup:
        redis_url = None
        if locked:
            server = RedisServer().start()
            cleanup.callback(server.stop)
            redis_url = server.url
        luigi_config = write_luigi_config(directory, redis_url, run_lock=arguments.run_lock)
        print(
            f"locked_targets demo: {arguments.applications} applications build one gokart pipeline "
            "at the same moment on one shared cache"
        )
        print(f"  pipeline   {pipeline_shape()}")
        print(f"  Redis      {redis_url or 'none: nothing is locked (--unlocked)'}")
        print(f"  locks      {locks_in_use(locked=locked, run_lock=arguments.run_lock)}")
        print(f"  directory  {shown(directory)} (luigi.cfg, cache/, events.log, one log per application)")
        started = time.monotonic()
        results = run_applications(arguments.applications, directory, luigi_config, cleanup, locked=locked)
        elapsed = time.monotonic() - started
    tasks = [task_class.__name__ for task_class in tasks_needed_for(FINAL_TASK)]
    counts = count_by_task(tasks, read_events(os.path.join(directory, "events.log")))
    print(f"\nAll applications finished in {elapsed:.1f} s (start-up included).\n")
    print(applications_report(results, counts) + "\n")
    print(tasks_table(counts) + "\n")
    for line in failures(results, counts):
        print(f"  problem: {line}")
    print(summary(results, counts, locked=locked, run_lock=arguments.run_lock))
    return 0 if kept_its_promises(results, counts, locked=locked, run_lock=arguments.run_lock) else 1


def kept_its_promises(
    results: list[ApplicationResult], counts: list[TaskCounts], *, locked: bool, run_lock: bool
) -> bool:
    """Every application succeeded and every load was whole; with the locks, each output was
    written once, and with the run lock each task was computed once."""
    if not all(result.succeeded for result in results) or any(count.broken_loads for count in counts):
        return False
    if locked and any(len(count.written_by) != 1 for count in counts):
        return False
    return not run_lock or all(len(count.computed_by) == 1 for count in counts)


def _exit_on_sigterm(signal_number: int, _frame: FrameType | None) -> None:
    # SystemExit unwinds through the ExitStack, which stops the applications and the server.
    sys.exit(128 + signal_number)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.applications < 1:
        sys.exit("--applications must be 1 or more")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return run_demo(arguments)
    except KeyboardInterrupt:
        print("\ninterrupted: the applications and the redis-server have been stopped", file=sys.stderr)
        return 130
    except ProcessFailed as failure:
        print(f"\ndemo failed: {failure}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
