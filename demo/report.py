"""What the demo prints: per application and per task, from the side log and the applications' results."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from demo.events import WHOLE, Event, EventKind
from demo.launcher import ApplicationResult


@dataclasses.dataclass(frozen=True)
class TaskCounts:
    """What happened to one task's output across all applications."""

    task: str
    computed_by: list[str]
    completed_in: list[str]
    written_by: list[str]
    load_verdicts: list[str]

    @property
    def broken_loads(self) -> int:
        return sum(verdict != WHOLE for verdict in self.load_verdicts)


def count_by_task(tasks: Sequence[str], events: Sequence[Event]) -> list[TaskCounts]:
    def of(kind: EventKind, task: str) -> list[Event]:
        return [event for event in events if event.kind is kind and event.task == task]

    return [
        TaskCounts(
            task=task,
            computed_by=[event.application for event in of(EventKind.RUN, task)],
            completed_in=[event.application for event in of(EventKind.COMPLETE, task)],
            written_by=[event.application for event in of(EventKind.WRITE, task)],
            load_verdicts=[event.detail for event in of(EventKind.LOAD, task)],
        )
        for task in tasks
    ]


def times(count: int) -> str:
    return {0: "never", 1: "once", 2: "twice"}.get(count, f"{count} times")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def applications_report(results: Sequence[ApplicationResult], counts: Sequence[TaskCounts]) -> str:
    """Per application: how its build went, the tasks it computed, and those it skipped.

    A task is skipped in an application when luigi counted it done there but its
    ``run()`` body did not execute there: another application computed it.
    """
    blocks = ["What each application computed, and what it skipped because another application computed it:"]
    for result in results:
        name = result.application
        computed = [count.task for count in counts if name in count.computed_by]
        skipped = [count for count in counts if name in count.completed_in and name not in count.computed_by]
        not_done = [count.task for count in counts if name not in count.completed_in]
        outcome = "succeeded" if result.succeeded else "FAILED"
        lines = [
            f"{name}  {outcome} in {result.seconds:.1f} s",
            f"  computed  {', '.join(computed) or 'nothing'}",
            f"  skipped   {skipped_by_whom(skipped, name) or 'nothing'}",
        ]
        if not_done:
            lines.append(f"  not done  {', '.join(not_done)}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def skipped_by_whom(skipped: Sequence[TaskCounts], application: str) -> str:
    """``A (by app-2), B (by app-3)``: each skipped task with the application that computed it."""
    named = []
    for count in skipped:
        others = [other for other in count.computed_by if other != application]
        who = f"by {', '.join(others)}" if others else "found in the cache"
        named.append(f"{count.task} ({who})")
    return ", ".join(named)


def tasks_table(counts: Sequence[TaskCounts]) -> str:
    rows = [
        [
            count.task,
            times(len(count.computed_by)),
            times(len(count.written_by))
            + (f" (by {', '.join(count.written_by)})" if count.written_by else ""),
            f"{len(count.load_verdicts) - count.broken_loads} of {len(count.load_verdicts)} whole",
        ]
        for count in counts
    ]
    return table(["task", "run() executed", "output written", "loads"], rows)


def failures(results: Sequence[ApplicationResult], counts: Sequence[TaskCounts]) -> list[str]:
    """One line per thing that went wrong, for the reader to follow up."""
    lines = [
        f"{result.application}: {shortened(result.error)} (its log has the details)"
        for result in results
        if result.error
    ]
    for count in counts:
        lines += [f"{count.task}: {verdict}" for verdict in count.load_verdicts if verdict != WHOLE]
    return lines


def shortened(text: str, limit: int = 160) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def summary(
    results: Sequence[ApplicationResult], counts: Sequence[TaskCounts], *, locked: bool, run_lock: bool
) -> str:
    succeeded = sum(result.succeeded for result in results)
    loads = sum(len(count.load_verdicts) for count in counts)
    broken = sum(count.broken_loads for count in counts)
    runs = sum(len(count.computed_by) for count in counts)
    written_once = sum(len(count.written_by) == 1 for count in counts)
    writes = sum(len(count.written_by) for count in counts)
    parts = [
        f"{succeeded} of {len(results)} applications succeeded",
        f"{written_once} of {len(counts)} outputs written exactly once ({writes} writes in all)",
        f"{loads - broken} of {loads} loads whole",
        f"run() executed {runs} times for {len(counts)} tasks",
    ]
    text = "Summary: " + "; ".join(parts) + "."
    if not locked:
        return f"{text} {unlocked_outcome(results, counts)}"
    if succeeded < len(results) or broken or written_once < len(counts):
        return text  # the problems above say what went wrong
    if run_lock and runs == len(counts):
        return text + (
            " The run lock let one application compute each task; the others waited for it (or came "
            "later), found the task complete and skipped it."
        )
    if not run_lock and runs > len(counts):
        return text + (
            " With --no-run-lock the tasks take no run lock, so applications that start a task "
            "together all compute it; the target lock lets only the first dump through and skips the others."
        )
    return text


def unlocked_outcome(results: Sequence[ApplicationResult], counts: Sequence[TaskCounts]) -> str:
    """What a run on gokart's own targets did, in words that agree with the counts."""
    loads = sum(len(count.load_verdicts) for count in counts)
    damage = [
        f"{number} of {total} {what}"
        for number, total, what in [
            (
                sum(len(count.written_by) > 1 for count in counts),
                len(counts),
                "outputs written more than once",
            ),
            (sum(not count.written_by for count in counts), len(counts), "outputs never written"),
            (sum(count.broken_loads for count in counts), loads, "loads not whole"),
            (sum(not result.succeeded for result in results), len(results), "applications failed"),
        ]
        if number
    ]
    if not damage:
        return (
            "Without locked_targets nothing keeps the applications apart, though in this run each output "
            "happened to be written once and every load was whole: run it again."
        )
    return (
        f"Without locked_targets (gokart's own targets, no lock): {', '.join(damage)}. Nothing keeps "
        "applications that start a task together from writing its output at the same time."
    )
