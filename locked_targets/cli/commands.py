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
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click
import luigi.configuration
from rich.console import Console, Group, RenderableType
from rich.live import Live

from locked_targets.cli.doctor import (
    doctor_checks,
    doctor_document,
    doctor_table,
    problems_of,
    workspace_directory,
)
from locked_targets.cli.finding import (
    NAMESPACES,
    STORAGE_EXAMPLE_PATHS,
    FoundLock,
    LockFinder,
    Service,
    lock_services,
)
from locked_targets.cli.report import (
    LockSummary,
    ServiceStatus,
    lock_problems,
    locks_document,
    server_problems,
    service_document,
    status_document,
    who,
)
from locked_targets.cli.tables import counted, lock_view, locks_table, status_table
from locked_targets.errors import ConfigurationError, LockError
from locked_targets.locks import LockNamespace, lease_terms
from locked_targets.rwlock import LeaseTerms, LockKeys
from locked_targets.rwlock.inspection import break_lock, glob_escaped, server_health
from locked_targets.rwlock.keys import REVOKE_CHANNEL_SUFFIX
from locked_targets.rwlock.subscription import Subscription, subscription_to
from locked_targets.settings import LOCK_SERVICE_SETTINGS, Settings

_Command = TypeVar("_Command", bound=Callable[..., Any])

DEFAULT_REASON = "no reason given"
WATCH_INTERVAL_SECONDS = 2.0
"""How often ``watch`` refreshes when no channel wakes it: acquisitions publish nothing."""
_WATCH_POLL_SECONDS = 0.05
"""How often ``watch`` looks at its subscriptions (one per lock service, or more) while it waits."""


class _Session:
    """The global options, and what they give: settings, the lock services, how to print."""

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
            if self._redis_url is not None:  # the one Redis to look at, for every storage kind
                settings = dataclasses.replace(
                    settings,
                    redis_url=self._redis_url,
                    local_redis_url=None,
                    s3_redis_url=None,
                    gcs_redis_url=None,
                )
        except ConfigurationError as error:
            raise click.UsageError(str(error)) from None
        if not settings.locking_enabled:
            raise click.UsageError(
                f"no Redis to look at: set redis_url (or one of {', '.join(LOCK_SERVICE_SETTINGS[1:])}) in "
                "the [locked_targets] section of the luigi configuration (--config, or LUIGI_CONFIG_PATH), "
                "or pass --redis-url"
            )
        return settings

    @functools.cached_property
    def services(self) -> list[Service]:
        """Every distinct lock service the settings name (only ``--redis-url``'s when given)."""
        return lock_services(self.settings)

    @property
    def terms(self) -> LeaseTerms:
        return lease_terms(self.settings)

    @functools.cached_property
    def finder(self) -> LockFinder:
        return LockFinder(self.services, self.settings)

    def service_of(self, path: str) -> Service:
        """The lock service of ``path``'s storage kind."""
        try:
            return self.finder.service_of(path)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="PATH") from None

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
@click.option(
    "--redis-url",
    help="The Redis to look at, instead of every configured lock service (redis_url, per-storage URLs).",
)
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
    """Each lock service's health (each master's, on a cluster) and how busy it is: held locks, waiting
    writers, the oldest of each."""
    locks = session.finder.every_lock()
    statuses = []
    for service in session.services:
        health = server_health(service.connection)
        own = [lock for lock in locks if lock.service is service]
        statuses.append(
            ServiceStatus(
                service=service,
                health=health,
                summary=LockSummary.of(own),
                problems=[problem for server in health for problem in server_problems(server)]
                + [problem for lock in own for problem in lock_problems(lock)],
            )
        )
    session.show(status_document(statuses, session.terms), lambda: status_table(statuses, session.terms))
    _exit_for([problem for status in statuses for problem in status.problems])


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
    _show_locks(session, session.services, locks, lambda: locks_table(locks, session.terms))


def _show_locks(
    session: _Session, services: list[Service], locks: list[FoundLock], view: Callable[[], RenderableType]
) -> None:
    session.show(locks_document(services, locks, session.terms), view)
    _exit_for([problem for lock in locks for problem in lock_problems(lock)])


@main.command()
@click.argument("path_or_task_id")
@_namespace_option("The lock of the path's file (target), or of the task run that writes it (run).")
@_json_option
@_pass_session
def inspect(session: _Session, path_or_task_id: str, namespace: str) -> None:
    """Everything about one lock: that of a cache path, or the run locks of a task id."""
    locks = _locks_named(session, path_or_task_id, namespace)
    services = list({id(lock.service): lock.service for lock in locks}.values())
    _show_locks(session, services, locks, lambda: Group(*(lock_view(lock, session.terms) for lock in locks)))


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

    services = [session.service_of(path)] if path else session.services
    listening = _Listening()
    try:
        with contextlib.ExitStack() as views:
            views.callback(listening.close)
            for service in services:
                with service.connection.errors_translated():
                    listening.subscribe(service, current()[0].state.keys if path else None, session.settings)
            if session.as_json:

                def refresh(locks: list[FoundLock]) -> None:
                    click.echo(json.dumps(locks_document(services, locks, session.terms)))

            else:
                live = views.enter_context(Live(auto_refresh=False))

                def refresh(locks: list[FoundLock]) -> None:
                    live.update(view(locks), refresh=True)

            while True:
                locks = current()
                refresh(locks)
                listening.wait_for_change(locks, interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: not an error


class _Listening:
    """What ``watch`` listens to, so that a released lock shows at once: each service's channels.

    Revocations are published classically, so a pattern subscription hears every lock's. Releases
    are too, but on a Redis 7+ cluster, where scripts wake waiters by SPUBLISH and sharded pub/sub
    has no pattern form: there ``watch`` subscribes to each shown lock's released channel, at the
    master of its slot, as the locks it shows change.
    """

    def __init__(self) -> None:
        self._subscriptions: dict[tuple[int, str], Subscription] = {}
        self._per_lock: set[tuple[int, str]] = set()

    def subscribe(self, service: Service, keys: LockKeys | None, settings: Settings) -> None:
        """Listen to one lock's channels, or to every lock's of the key prefix; return once Redis confirms."""
        connection = service.connection
        if keys is not None:
            self._add(service, keys.released_channel, pattern=False)
            self._add(service, keys.revoke_channel, pattern=False, sharded=False)  # always classic PUBLISH
            return
        prefix = glob_escaped(settings.key_prefix) + "*}"
        self._add(service, prefix + REVOKE_CHANNEL_SUFFIX, pattern=True)
        if not connection.sharded_pubsub:
            self._add(service, prefix + LockKeys.released_channel.suffix, pattern=True)

    def wait_for_change(self, shown: list[FoundLock], interval: float) -> None:
        """Sleep until a lock publishes or ``interval`` passes; a burst of messages makes one refresh."""
        self._follow(shown)
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline:
            if self._heard():
                while self._heard():
                    pass
                return
            time.sleep(_WATCH_POLL_SECONDS)

    def close(self) -> None:
        for subscription in self._subscriptions.values():
            subscription.close()
        self._subscriptions.clear()

    def _follow(self, shown: list[FoundLock]) -> None:
        """On sharded pub/sub, listen to the released channel of each shown lock, and of no other."""
        kept_all_along = self._subscriptions.keys() - self._per_lock
        wanted = {
            (id(lock.service), lock.state.keys.released_channel): lock.service
            for lock in shown
            if lock.service.connection.sharded_pubsub
        }
        for gone in self._per_lock - wanted.keys():
            self._subscriptions.pop(gone).close()
        for (_, channel), service in wanted.items():
            if (id(service), channel) not in self._subscriptions:
                with service.connection.errors_translated():
                    self._add(service, channel, pattern=False)
        self._per_lock = set(wanted.keys() - kept_all_along)

    def _add(self, service: Service, channel: str, *, pattern: bool, sharded: bool | None = None) -> None:
        """Subscribe to ``channel`` as the lock's scripts publish on it (``sharded``: None, as wake-ups)."""
        connection = service.connection
        self._subscriptions[(id(service), channel)] = (
            subscription_to(connection, channel, pattern=pattern)
            if sharded is None
            else Subscription(connection, channel, sharded=sharded, pattern=pattern)
        )

    def _heard(self) -> bool:
        """Whether any subscription has a message now (each one read at most once)."""
        heard = False
        for subscription in self._subscriptions.values():
            heard = subscription.next_message(timeout=0) is not None or heard
        return heard


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
        **service_document(lock.service),
        "server": state.server,
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
            lock.service.connection,
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
        [service.connection for service in session.services],
        session.settings,
        [workspace_directory(), *paths],
    )
    session.show(
        doctor_document([service_document(service) for service in session.services], checks),
        lambda: doctor_table(checks),
    )
    _exit_for(problems_of(checks))
