"""The ``locked-targets`` commands: status, ls, inspect, watch, break and doctor.

Each reads the library's own configuration (luigi's, ``[locked_targets]``), prints a table
or, with ``--json``, one JSON document (``report``), and exits 0 when all is well, 1 when it
found a problem (or could not reach Redis), 2 for bad usage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
import luigi.configuration
import redis
from rich.console import Console, Group, RenderableType
from rich.live import Live

from locked_targets.cli.doctor import (
    doctor_checks,
    doctor_document,
    doctor_table,
    problems_of,
    workspace_directory,
)
from locked_targets.cli.finding import NAMESPACES, STORAGE_EXAMPLE_PATHS, FoundLock, LockFinder
from locked_targets.cli.report import (
    LockSummary,
    lock_problems,
    locks_document,
    server_problems,
    status_document,
    who,
)
from locked_targets.cli.tables import counted, lock_view, locks_table, status_table
from locked_targets.errors import ConfigurationError, LockError
from locked_targets.locks import LockNamespace, connection_for, lease_terms
from locked_targets.rwlock import LeaseTerms, LockKeys, RedisConnection
from locked_targets.rwlock.connection import await_subscription
from locked_targets.rwlock.inspection import break_lock, glob_escaped, server_health
from locked_targets.rwlock.keys import REVOKE_CHANNEL_SUFFIX
from locked_targets.settings import Settings

_Command = TypeVar("_Command", bound=Callable[..., Any])

DEFAULT_REASON = "no reason given"
WATCH_INTERVAL_SECONDS = 2.0
"""How often ``watch`` refreshes when no channel wakes it: acquisitions publish nothing."""


class _Session:
    """The global options, and what they give: settings, the Redis connection, how to print."""

    def __init__(self, config: str | None, redis_url: str | None, as_json: bool) -> None:
        self._config = config
        self._redis_url = redis_url
        self.as_json = as_json

    @functools.cached_property
    def settings(self) -> Settings:
        if self._config is not None:
            luigi.configuration.add_config_path(self._config)  # type: ignore[no-untyped-call]
        try:
            settings = Settings.from_luigi_config()
            if self._redis_url is not None:
                settings = dataclasses.replace(settings, redis_url=self._redis_url)
        except ConfigurationError as error:
            raise click.UsageError(str(error)) from None
        if settings.redis_url is None:
            raise click.UsageError(
                "no Redis to look at: set redis_url in the [locked_targets] section of the luigi "
                "configuration (--config, or LUIGI_CONFIG_PATH), or pass --redis-url"
            )
        return settings

    @property
    def redis_url(self) -> str:
        """The configured URL as it may be shown: without its password."""
        return connection_for(self._url).shown_url

    @property
    def _url(self) -> str:
        url = self.settings.redis_url
        assert url is not None  # settings refuses to be built without one
        return url

    @property
    def connection(self) -> RedisConnection:
        return connection_for(self._url)

    @property
    def terms(self) -> LeaseTerms:
        return lease_terms(self.settings)

    @functools.cached_property
    def finder(self) -> LockFinder:
        return LockFinder(self.connection, self.settings)

    def show(self, document: dict[str, Any], view: Callable[[], RenderableType]) -> None:
        """Print ``document`` as JSON, or ``view()`` as a table."""
        if self.as_json:
            click.echo(json.dumps(document, indent=2))
        else:
            Console().print(view())


class _ReportsLockErrors(click.Group):
    """Turns an unreachable Redis (or any lock error) into a message and exit status 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LockError as error:
            raise click.ClickException(str(error)) from None


def _json_option(command: _Command) -> _Command:
    """Every command also takes ``--json`` after its name."""

    def json_asked(ctx: click.Context, _parameter: click.Parameter, asked: bool) -> None:
        if asked:
            ctx.find_object(_Session).as_json = True  # type: ignore[union-attr]

    return click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=json_asked,
        help="Print one JSON document (see docs/cli.md) instead of tables.",
    )(command)


def _namespace_option(help_text: str) -> Callable[[_Command], _Command]:
    """``--namespace`` of a command about one path's lock: its target lock unless told otherwise."""
    return click.option(
        "--namespace",
        type=click.Choice(NAMESPACES),
        default=LockNamespace.TARGET.value,
        show_default=True,
        help=help_text,
    )


@click.group(cls=_ReportsLockErrors)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    help="A luigi configuration file, read after luigi's own (LUIGI_CONFIG_PATH, luigi.cfg).",
)
@click.option("--redis-url", help="The Redis to look at, instead of the configured redis_url.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@click.version_option(package_name="locked_targets")
@click.pass_context
def main(ctx: click.Context, config: str | None, redis_url: str | None, as_json: bool) -> None:
    """See and manage the locks of locked_targets: who holds which lock, since when, who waits."""
    ctx.obj = _Session(config, redis_url, as_json)


_pass_session = click.make_pass_decorator(_Session)


def _exit_for(problems: list[str]) -> None:
    if problems:
        click.get_current_context().exit(1)


@main.command()
@_json_option
@_pass_session
def status(session: _Session) -> None:
    """The lock service's health and how busy it is: held locks, waiting writers, the oldest of each."""
    health = server_health(session.connection)
    locks = session.finder.every_lock()
    summary = LockSummary.of(locks)
    problems = server_problems(health) + [problem for lock in locks for problem in lock_problems(lock)]
    session.show(
        status_document(
            redis=session.redis_url,
            address=session.connection.address,
            health=health,
            summary=summary,
            problems=problems,
            terms=session.terms,
        ),
        lambda: status_table(session.redis_url, health, summary, problems, session.terms),
    )
    _exit_for(problems)


@main.command(name="ls")
@click.option("--storage", type=click.Choice(list(STORAGE_EXAMPLE_PATHS)), help="Only locks of this storage.")
@click.option("--namespace", type=click.Choice(NAMESPACES), help="Only target locks, or only run locks.")
@click.option("--held", is_flag=True, help="Only locks someone holds.")
@click.option("--waiting", is_flag=True, help="Only locks a writer waits for.")
@_json_option
@_pass_session
def list_locks(
    session: _Session, storage: str | None, namespace: str | None, held: bool, waiting: bool
) -> None:
    """The locks that have holders or waiters now, one row each."""
    locks = [
        lock
        for lock in session.finder.every_lock(storage=storage, namespace=namespace)
        if (lock.state.holders or not held) and (lock.state.waiting_writers or not waiting)
    ]
    _show_locks(session, locks, lambda: locks_table(locks, session.terms))


def _show_locks(session: _Session, locks: list[FoundLock], view: Callable[[], RenderableType]) -> None:
    session.show(locks_document(session.redis_url, locks, session.terms), view)
    _exit_for([problem for lock in locks for problem in lock_problems(lock)])


@main.command()
@click.argument("path_or_task_id")
@_namespace_option("The lock of the path's file (target), or of the task run that writes it (run).")
@_json_option
@_pass_session
def inspect(session: _Session, path_or_task_id: str, namespace: str) -> None:
    """Everything about one lock: that of a cache path, or the run locks of a task id."""
    locks = _locks_named(session, path_or_task_id, namespace)
    _show_locks(session, locks, lambda: Group(*(lock_view(lock, session.terms) for lock in locks)))


def _locks_named(session: _Session, path_or_task_id: str, namespace: str) -> list[FoundLock]:
    """The path's lock if anyone is in it (or it was broken); else the run locks of that task id, if any."""
    of_path = _lock_of(session, path_or_task_id, namespace)
    if of_path.occupied or of_path.state.broken is not None:
        return [of_path]
    return session.finder.run_locks_of_task(path_or_task_id) or [of_path]


def _lock_of(session: _Session, path: str, namespace: str) -> FoundLock:
    try:
        return session.finder.lock_of(path, namespace)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="PATH") from None


@main.command()
@click.argument("path", required=False)
@_namespace_option("With PATH: its target lock, or its run lock.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=WATCH_INTERVAL_SECONDS,
    show_default=True,
    help="Seconds between refreshes when no lock publishes (acquisitions do not).",
)
@_json_option
@_pass_session
def watch(session: _Session, path: str | None, namespace: str, interval: float) -> None:
    """A live view of every lock, or of PATH's, refreshed whenever a lock is released; Ctrl-C ends it.

    With --json, one document per refresh, one per line.
    """

    def current() -> list[FoundLock]:
        return [_lock_of(session, path, namespace)] if path else session.finder.every_lock()

    def view(locks: list[FoundLock]) -> RenderableType:
        return lock_view(locks[0], session.terms) if path else locks_table(locks, session.terms)

    pubsub = session.connection.client.pubsub()  # type: ignore[no-untyped-call]
    try:
        with session.connection.errors_translated(), contextlib.ExitStack() as views:
            _subscribe(pubsub, session, current()[0].state.keys if path else None)
            if session.as_json:

                def refresh(locks: list[FoundLock]) -> None:
                    click.echo(json.dumps(locks_document(session.redis_url, locks, session.terms)))

            else:
                live = views.enter_context(Live(auto_refresh=False))

                def refresh(locks: list[FoundLock]) -> None:
                    live.update(view(locks), refresh=True)

            while True:
                refresh(current())
                _wait_for_change(pubsub, interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: not an error
    finally:
        pubsub.close()


def _subscribe(pubsub: redis.client.PubSub, session: _Session, keys: LockKeys | None) -> None:
    """Listen to one lock's channels, or to every lock's of the key prefix; return once Redis confirms."""
    if keys is not None:
        channels = keys.channels
        pubsub.subscribe(*channels)
    else:
        prefix = glob_escaped(session.settings.key_prefix) + "*}"
        channels = (prefix + LockKeys.released_channel.suffix, prefix + REVOKE_CHANNEL_SUFFIX)
        pubsub.psubscribe(*channels)
    for _ in channels:
        await_subscription(pubsub)


def _wait_for_change(pubsub: redis.client.PubSub, interval: float) -> None:
    """Sleep until a lock publishes or ``interval`` passes; a burst of messages makes one refresh."""
    if pubsub.get_message(timeout=interval) is not None:
        while pubsub.get_message(timeout=0) is not None:
            pass


@main.command(name="break")
@click.argument("path")
@_namespace_option("The path's target lock, or its run lock.")
@click.option("--yes", is_flag=True, help="Break it even though a holder's lease is still being renewed.")
@click.option("--reason", default=DEFAULT_REASON, help="Why, as the lock's record of the break will say.")
@_json_option
@_pass_session
def break_(session: _Session, path: str, namespace: str, yes: bool, reason: str) -> None:
    """Remove the holders and waiting writers of PATH's lock, advance its fencing token, wake its waiters.

    Refused (exit 1) without --yes while a holder's lease is still being renewed: one that has
    more left than lease_seconds less 1.5 renewal intervals (the configured ones), which a
    holder whose process stopped falls below half an interval after its missed renewal.
    """
    lock = _lock_of(session, path, namespace)
    state = lock.state
    renewed = [holder for holder in state.holders if holder.is_renewed(session.terms)]
    refused = bool(renewed) and not yes
    document: dict[str, Any] = {
        "redis": session.redis_url,
        "path": state.path,
        "key": state.keys.base,
        "broken": False,
        "renewed_holders": [who(holder) for holder in renewed],
        "holders_removed": 0,
        "waiting_writers_removed": 0,
        "fencing_token": state.fencing_token,
        "reason": reason,
    }
    if not lock.occupied:
        message = f"nobody holds or waits for the lock of {state.path}: nothing to break"
    elif refused:
        message = (
            f"refused: the lease of {', '.join(document['renewed_holders'])} on {state.path} is still being "
            "renewed, so its process looks alive; pass --yes to break the lock anyway"
        )
    else:
        broken = break_lock(
            session.connection,
            state.keys,
            reason=reason,
            tokens=[holder.token for holder in (*state.holders, *state.waiting_writers)],
            fencing_memory_seconds=session.settings.fencing_memory_seconds,
        )
        document.update(
            broken=True,
            holders_removed=broken.holders_removed,
            waiting_writers_removed=broken.waiting_writers_removed,
            fencing_token=broken.fencing_token,
        )
        message = (
            f"broke the lock of {state.path}: removed {counted(broken.holders_removed, 'holder')} and "
            f"{counted(broken.waiting_writers_removed, 'waiting writer')}; "
            f"fencing token now {broken.fencing_token}"
        )
    document["message"] = message
    if session.as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(message, err=refused)
    _exit_for([message] if refused else [])


@main.command()
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@_json_option
@_pass_session
def doctor(session: _Session, paths: tuple[str, ...]) -> None:
    """Check that the lock service and the cache's storage are fit for locking, each with its fix.

    The storage checks cover the workspace directory ([TaskOnKart] workspace_directory) and
    each PATH, with scratch files only. Exit 1 if a check found a problem; warnings alone exit 0.
    """
    checks = doctor_checks(
        session.connection, session.redis_url, session.settings, [workspace_directory(), *paths]
    )
    session.show(doctor_document(session.redis_url, checks), lambda: doctor_table(checks))
    _exit_for(problems_of(checks))
