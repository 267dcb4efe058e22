"""What the commands show a person: rich tables of locks, holders and the lock service."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from locked_targets.cli.finding import FoundLock
from locked_targets.cli.report import ServiceStatus, lock_problems, utc, who
from locked_targets.rwlock import LeaseTerms
from locked_targets.rwlock.inspection import LockHolder


def holder_line(holder: LockHolder, terms: LeaseTerms) -> str:
    """'write, pid 12 on h (task T), 27.1 s left'; flagged when no longer renewed."""
    lease = (
        f"{holder.lease_left_seconds:.1f} s left"
        if holder.lease_left_seconds > 0
        else f"past its lease by {-holder.lease_left_seconds:.1f} s"
    )
    renewed = "" if holder.is_renewed(terms) else ", not renewed"
    return f"{holder.mode.value}, {who(holder)}, {lease}{renewed}"


def locks_table(locks: Sequence[FoundLock], terms: LeaseTerms) -> Table:
    """One row per lock, as ``ls`` and ``watch`` show them."""
    table = Table(title=counted(len(locks), "lock"), title_justify="left", show_lines=True)
    table.add_column("path", overflow="fold", ratio=2)
    table.add_column("kind")
    table.add_column("holders", overflow="fold", ratio=2)
    table.add_column("waiting writers", overflow="fold", ratio=2)
    table.add_column("fencing token", overflow="fold")
    for lock in locks:
        state = lock.state
        table.add_row(
            state.path,
            f"{lock.storage or '?'} {lock.namespace or '?'}",
            "\n".join(holder_line(holder, terms) for holder in state.holders),
            "\n".join(holder_line(holder, terms) for holder in state.waiting_writers),
            str(state.fencing_token or ""),
        )
    return table


def lock_view(lock: FoundLock, terms: LeaseTerms) -> RenderableType:
    """Everything about one lock, as ``inspect`` shows it."""
    state = lock.state
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    facts.add_row("path", state.path)
    facts.add_row("key", state.keys.base)
    facts.add_row("redis", f"{lock.service.shown_url} (server {state.server})")
    facts.add_row("kind", f"{lock.storage or '?'} {lock.namespace or '?'}")
    facts.add_row("mode", state.mode.value if state.mode else "free")
    facts.add_row("fencing token", str(state.fencing_token or "none remembered"))
    if state.broken is not None:
        broken = state.broken
        facts.add_row(
            "last broken",
            f"{utc(broken.at)} by {broken.user or '?'} (pid {broken.pid} on {broken.host}): {broken.reason}",
        )
    people = Table(show_edge=False)
    for column in ("", "mode", "pid", "host", "task", "lock", "since", "lease left", "renewed"):
        people.add_column(column, overflow="fold")
    for role, holders in (("holder", state.holders), ("waiting", state.waiting_writers)):
        for holder in holders:
            people.add_row(
                role,
                holder.mode.value,
                str(holder.pid),
                holder.host or "?",
                holder.task or "",
                holder.lock or "",
                utc(holder.since) or "?",
                f"{holder.lease_left_seconds:.1f} s",
                "yes" if holder.is_renewed(terms) else "no",
            )
    parts: list[RenderableType] = [facts]
    if state.holders or state.waiting_writers:
        parts.append(people)
    else:
        parts.append(Text("nobody holds or waits for this lock"))
    parts += [Text(f"problem: {problem}", style="red") for problem in lock_problems(lock)]
    return Group(*parts)


def status_table(statuses: Sequence[ServiceStatus], terms: LeaseTerms) -> RenderableType:
    """Each lock service: the health of each of its servers and how busy its locks are."""
    return Group(*(_service_status_table(status, terms) for status in statuses))


def _service_status_table(status: ServiceStatus, terms: LeaseTerms) -> RenderableType:
    summary = status.summary
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("redis", f"{status.service.shown_url} ({', '.join(status.service.settings)})")
    for health in status.health:
        table.add_row("server", f"{health.address}: Redis {health.version}, {health.role}")
        table.add_row("maxmemory-policy", str(health.maxmemory_policy))
        table.add_row("used memory", f"{health.used_memory_bytes} bytes")
        table.add_row("connected clients", str(health.connected_clients))
    table.add_row("held locks", ", ".join(f"{count} {mode}" for mode, count in summary.held_locks.items()))
    table.add_row("holders", ", ".join(f"{count} {mode}" for mode, count in summary.holders.items()))
    table.add_row("waiting writers", str(summary.waiting_writers))
    for label, pair in (("oldest holder", summary.oldest_holder), ("longest wait", summary.longest_wait)):
        if pair is not None:
            lock, holder = pair
            since = f"since {utc(holder.since)}, " if holder.since is not None else ""
            table.add_row(label, f"{lock.state.path}\n{since}{holder_line(holder, terms)}")
    parts: list[RenderableType] = [table]
    parts += [Text(f"problem: {problem}", style="red") for problem in status.problems]
    return Group(*parts)


def counted(number: int, thing: str) -> str:
    """'1 lock', '2 locks': how a person reads a count."""
    return f"{number} {thing}" if number == 1 else f"{number} {thing}s"
