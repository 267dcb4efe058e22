"""Settings of locked_targets, read the luigi way from a ``[locked_targets]`` section.

Every value is validated when the settings are built, so a wrong setting fails
before any target is touched, with a message that names it and shows no secret. Each
duration has bounds (``_Bounds``) that keep it within what Redis, the lock's scripts and
Python's waits can count, and the lease long enough for a renewal to be retried. For gokart
compatibility ``[TaskOnKart] redis_host``/``redis_port``/``redis_timeout`` (or the
same task parameters) switch locking on when ``redis_url`` is not set. ``local_redis_url``,
``s3_redis_url`` and ``gcs_redis_url`` override ``redis_url`` for the files of that storage
kind (``locks.lock_service_for``), so each kind may lock on a Redis of its own. A key of
``[locked_targets]`` that no setting reads is logged once per process, since a typo
in ``redis_url`` would otherwise switch locking off without a word. luigi builds targets
all the time, so a process reads and checks a configuration once and reuses its settings
until any value they are read from changes (``_SettingsMemory``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import os
import re
from collections.abc import Callable, Collection, Hashable, Mapping
from configparser import ConfigParser
from typing import Any, Literal, TypeVar, cast, get_args

import luigi.configuration

from locked_targets.errors import ConfigurationError
from locked_targets.process_state import Once, ProcessLocal
from locked_targets.rwlock.lock import DEFAULT_MIN_REPLICAS_TIMEOUT_SECONDS
from locked_targets.rwlock.redis_urls import (
    HIDDEN,
    names_cluster,
    names_sentinels,
    redacted_url,
    redis_address,
    with_sentinel_password,
)
from locked_targets.rwlock.scripts import DEFAULT_FENCING_MEMORY_SECONDS

SECTION = "locked_targets"
GOKART_SECTION = "TaskOnKart"
DEFAULT_LEASE_SECONDS = 180.0  # gokart's redis_timeout default

OnRedisError = Literal["fail", "wait"]
"""What taking or giving back a lock does when Redis fails: raise at once, or retry until a deadline."""

logger = logging.getLogger(__name__)
_reported_unknown_settings = Once()

_Value = TypeVar("_Value")

_Parser = Callable[[str, str], _Value]
"""Reads a setting's raw text; it gets the setting's name to put in its ConfigurationError."""

# The keys under which a field of Settings keeps, in ``dataclasses.field`` metadata, its
# parser, its bounds (durations) and how messages and repr show it (credentials).
_PARSER = "parser"
_BOUNDS = "bounds"
_SHOWN = "shown"

_DAY_SECONDS = 24 * 3600.0


@dataclasses.dataclass(frozen=True)
class _Bounds:
    """The shortest and the longest value of a duration setting, in seconds, both allowed."""

    shortest: float
    longest: float

    def check(self, name: str, value: object) -> None:
        """Raise ``ConfigurationError`` unless ``value`` is a number of seconds within the bounds."""
        if isinstance(value, bool) or not isinstance(value, int | float) or not self.within(value):
            raise ConfigurationError(name, value, f"must be a number of seconds {self}")

    def within(self, value: float) -> bool:
        return self.shortest <= value <= self.longest  # False for NaN too

    def __str__(self) -> str:
        return f"from {self.shortest:.10g} to {self.longest:.10g}"  # 2592000, not 2.592e+06


# A lease must outlast a renewal round trip and a retry (its renewal interval is at most
# half of it, at least 0.1 s); a week is far longer than any holder should block others
# after a crash. The longest wait is 30 days. Every bound keeps durations exact in
# milliseconds, well within what the scripts take (a year) and threading.TIMEOUT_MAX.
LEASE_BOUNDS = _Bounds(1.0, 7 * _DAY_SECONDS)
RENEWAL_INTERVAL_BOUNDS = _Bounds(0.1, LEASE_BOUNDS.longest / 2)
WAIT_BOUNDS = _Bounds(0.0, 30 * _DAY_SECONDS)
SHARED_LEASE_IDLE_BOUNDS = _Bounds(0.0, LEASE_BOUNDS.longest)
REDIS_RETRY_DEADLINE_BOUNDS = _Bounds(1.0, 30 * _DAY_SECONDS)
# However short the fencing memory, the lock keeps its counter at least one lease; 30 days
# is far longer than any backward step of a server clock it has to outlast.
FENCING_MEMORY_BOUNDS = _Bounds(1.0, 30 * _DAY_SECONDS)
# A grant's WAIT for its replicas: never 0 (which Redis reads as "for ever"); a replica that needs
# more than a minute to acknowledge a write is not keeping up.
# Below the command timeout (30 s), which would cut an unanswered WAIT short with a vaguer error.
MIN_REPLICAS_TIMEOUT_BOUNDS = _Bounds(0.001, 25.0)
MIN_REPLICAS_ACKED_RANGE = range(0, 101)
_PORT_RANGE = range(1, 65536)
# A host name or IPv4 address, or an IPv6 address (which the URL puts in brackets).
_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")


def _text(_name: str, raw: str) -> str:
    return raw


def _number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(name, raw, "must be a number of seconds") from None


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ConfigurationError(name, raw, "must be true or false")


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(name, raw, "must be a whole number") from None


def _port(name: str, raw: str) -> int:
    port = _integer(name, raw)
    if port not in _PORT_RANGE:
        raise ConfigurationError(name, raw, "must be a port number from 1 to 65535")
    return port


def _whole_lease_seconds(name: str, raw: str) -> int:
    """gokart's ``redis_timeout``: a whole number of seconds (as gokart reads it) that can be the lease."""
    seconds = _integer(name, raw)
    if not LEASE_BOUNDS.within(seconds):
        raise ConfigurationError(name, raw, f"must be a whole number of seconds {LEASE_BOUNDS}")
    return seconds


def _host(name: str, raw: str) -> str:
    if not _HOST.fullmatch(raw):
        raise ConfigurationError(name, raw, "must be a host name or an IP address")
    return raw


def _on_redis_error(name: str, raw: str) -> OnRedisError:
    """One of the values of ``OnRedisError``, exactly (lower case)."""
    choices: tuple[str, ...] = get_args(OnRedisError)
    if raw not in choices:
        raise ConfigurationError(name, raw, f"must be {' or '.join(choices)}")
    return cast(OnRedisError, raw)


def _setting(
    default: _Value,
    parser: _Parser[_Value],
    *,
    bounds: _Bounds | None = None,
    shown: Callable[[str], str] | None = None,
) -> _Value:
    """A field of ``Settings`` whose ``[locked_targets]`` value ``parser`` reads.

    The parser is declared next to the field, so a new field cannot end up read as plain
    text because nobody thought to register its type elsewhere; so are a duration's
    ``bounds``, and how messages show a value that may hold a credential (``shown``).
    """
    return dataclasses.field(default=default, metadata={_PARSER: parser, _BOUNDS: bounds, _SHOWN: shown})


def _hidden(_value: str) -> str:
    """A credential as messages show it."""
    return HIDDEN


LOCK_SERVICE_SETTINGS = ("redis_url", "local_redis_url", "s3_redis_url", "gcs_redis_url")
"""The settings naming a Redis to lock on: ``redis_url`` for every storage kind, the others for one each."""


def _check_lock_service_url(name: str, url: str | None) -> None:
    """Raise ``ConfigurationError`` naming the setting ``name`` unless ``url`` is unset or usable."""
    if url is None:
        return
    try:
        redis_address(url)
    except ConfigurationError as refused:
        raise ConfigurationError(name, refused.value, refused.expectation) from None


@dataclasses.dataclass(frozen=True, repr=False)
class Settings:
    """Where the locks live, how they are keyed, and how long they last."""

    redis_url: str | None = _setting(None, _text, shown=redacted_url)
    local_redis_url: str | None = _setting(None, _text, shown=redacted_url)
    s3_redis_url: str | None = _setting(None, _text, shown=redacted_url)
    gcs_redis_url: str | None = _setting(None, _text, shown=redacted_url)
    key_prefix: str = _setting("locked_targets:", _text)
    local_key_prefix: str = _setting("local:", _text)
    s3_key_prefix: str = _setting("s3:", _text)
    gcs_key_prefix: str = _setting("gcs:", _text)
    lease_seconds: float = _setting(DEFAULT_LEASE_SECONDS, _number, bounds=LEASE_BOUNDS)
    renewal_interval_seconds: float | None = _setting(None, _number, bounds=RENEWAL_INTERVAL_BOUNDS)
    wait_timeout_seconds: float | None = _setting(None, _number, bounds=WAIT_BOUNDS)
    run_wait_timeout_seconds: float | None = _setting(None, _number, bounds=WAIT_BOUNDS)
    fail_on_collision: bool = _setting(False, _boolean)
    # Long enough for a pipeline's completeness checks when it is scheduled to still hold when
    # its tasks run and read: a writer asks for a kept lease back whenever it needs it.
    shared_lease_idle_seconds: float = _setting(60.0, _number, bounds=SHARED_LEASE_IDLE_BOUNDS)
    # RUF009 fears one mutable default shared by all instances; "fail" is a str, which ruff
    # cannot tell through the alias.
    on_redis_error: OnRedisError = _setting("fail", _on_redis_error)  # noqa: RUF009
    redis_retry_deadline_seconds: float = _setting(600.0, _number, bounds=REDIS_RETRY_DEADLINE_BOUNDS)
    fencing_memory_seconds: float = _setting(
        DEFAULT_FENCING_MEMORY_SECONDS, _number, bounds=FENCING_MEMORY_BOUNDS
    )
    min_replicas_acked: int = _setting(0, _integer)
    min_replicas_timeout_seconds: float = _setting(
        DEFAULT_MIN_REPLICAS_TIMEOUT_SECONDS, _number, bounds=MIN_REPLICAS_TIMEOUT_BOUNDS
    )
    allow_eviction: bool = _setting(False, _boolean)
    s3_endpoint_url: str | None = _setting(None, _text, shown=redacted_url)
    gcs_endpoint_url: str | None = _setting(None, _text, shown=redacted_url)
    gcs_project: str | None = _setting(None, _text)
    gcs_token: str | None = _setting(None, _text, shown=_hidden)
    sentinel_password: str | None = _setting(None, _text, shown=_hidden)

    def __post_init__(self) -> None:
        # Values given in code (unchecked by mypy in untyped callers) get the file's checks.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                if field.default is not None:
                    raise ConfigurationError(field.name, value, "must be set")
                continue
            if field.metadata[_PARSER] is _text and not isinstance(value, str):
                raise ConfigurationError(field.name, _shown(field, value), "must be text")
            if field.metadata[_BOUNDS] is not None:
                field.metadata[_BOUNDS].check(field.name, value)
        for name in LOCK_SERVICE_SETTINGS:
            _check_lock_service_url(name, getattr(self, name))
        if self.sentinel_password is not None:
            self._give_sentinel_urls_their_password(self.sentinel_password)
        for name in ("key_prefix", "local_key_prefix", "s3_key_prefix", "gcs_key_prefix"):
            prefix = getattr(self, name)
            if "{" in prefix or "}" in prefix:
                raise ConfigurationError(name, prefix, "braces are reserved for the Redis Cluster hash tag")
            if not _encodable(prefix):
                raise ConfigurationError(name, prefix, "must be text UTF-8 can encode (no lone surrogate)")
        _on_redis_error("on_redis_error", self.on_redis_error)
        interval = self.effective_renewal_interval_seconds
        if interval > self.lease_seconds / 2:
            raise ConfigurationError(
                "lease_seconds",
                self.lease_seconds,
                f"must be at least twice the renewal interval ({interval:g} s), "
                "so that a renewal that fails can be retried before the lease ends",
            )
        self._check_min_replicas(interval)

    def _check_min_replicas(self, renewal_interval: float) -> None:
        """``min_replicas_acked`` is a count; the wait for the replicas leaves the lease its renewals."""
        acked = self.min_replicas_acked
        if isinstance(acked, bool) or not isinstance(acked, int) or acked not in MIN_REPLICAS_ACKED_RANGE:
            raise ConfigurationError(
                "min_replicas_acked",
                acked,
                f"must be a whole number from 0 (off) to {MIN_REPLICAS_ACKED_RANGE[-1]}",
            )
        clusters = [name for name in LOCK_SERVICE_SETTINGS if names_cluster(getattr(self, name))]
        if acked and clusters:
            raise ConfigurationError(
                "min_replicas_acked",
                acked,
                f"is not supported on a Redis Cluster ({', '.join(clusters)} names one): WAIT counts the "
                "writes of one connection, and a cluster's locks live on several; set it to 0",
            )
        if acked and self.min_replicas_timeout_seconds > renewal_interval / 2:
            raise ConfigurationError(
                "min_replicas_timeout_seconds",
                self.min_replicas_timeout_seconds,
                f"must be at most half the renewal interval ({renewal_interval:g} s) when min_replicas_acked "
                "is set, so that a grant's first renewal comes well before its lease ends",
            )

    def __repr__(self) -> str:
        shown = (
            f"{field.name}={_shown(field, getattr(self, field.name))!r}" for field in dataclasses.fields(self)
        )
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def locking_enabled(self) -> bool:
        """Whether any storage kind has a lock service (``redis_url`` or a ``<kind>_redis_url``)."""
        return any(getattr(self, name) is not None for name in LOCK_SERVICE_SETTINGS)

    def _give_sentinel_urls_their_password(self, sentinel_password: str) -> None:
        """Put ``sentinel_password`` into each sentinel URL: a connection is made from its URL alone."""
        sentinel_urls = [name for name in LOCK_SERVICE_SETTINGS if names_sentinels(getattr(self, name))]
        if not sentinel_urls:
            raise ConfigurationError(
                "sentinel_password",
                HIDDEN,
                "applies only to a redis+sentinel:// or rediss+sentinel:// URL, and none of "
                f"{', '.join(LOCK_SERVICE_SETTINGS)} is one",
            )
        for name in sentinel_urls:
            object.__setattr__(self, name, with_sentinel_password(getattr(self, name), sentinel_password))

    @property
    def effective_renewal_interval_seconds(self) -> float:
        """How often held leases are renewed: a third of the lease unless set."""
        if self.renewal_interval_seconds is not None:
            return self.renewal_interval_seconds
        return self.lease_seconds / 3

    @classmethod
    def for_task(cls, task: object) -> Settings:
        """Settings for a gokart task: luigi's configuration plus the task's own ``redis_*`` parameters."""
        return cls.from_luigi_config(
            redis_host=getattr(task, "redis_host", None),
            redis_port=getattr(task, "redis_port", None),
            redis_timeout=getattr(task, "redis_timeout", None),
        )

    @classmethod
    def from_luigi_config(
        cls,
        *,
        redis_host: str | None = None,
        redis_port: int | None = None,
        redis_timeout: int | None = None,
    ) -> Settings:
        """Settings from luigi's configuration: read and checked once per configuration, then reused.

        The keyword arguments are a gokart task's own ``redis_*`` parameters; when
        omitted, the ``[TaskOnKart]`` section supplies them. luigi builds a task's targets
        again on every ``complete()``, ``input()`` and ``load()``, so the settings of an
        unchanged configuration are the very same object (see ``_SettingsMemory``).
        """
        config = luigi.configuration.get_config()  # type: ignore[no-untyped-call]
        return _remembered_settings.get().settings(config, (cls, redis_host, redis_port, redis_timeout))

    @classmethod
    def _read(
        cls,
        config: luigi.configuration.LuigiConfigParser,
        *,
        redis_host: str | None,
        redis_port: int | None,
        redis_timeout: int | None,
    ) -> Settings:
        """Read and check every setting of ``config``, as ``from_luigi_config`` describes."""
        _report_unknown_settings(config)

        def option(name: str, parse: _Parser[_Value]) -> _Value | None:
            raw = config.get(SECTION, name, None)  # type: ignore[no-untyped-call]
            if raw is None or str(raw).strip() == "":
                return None
            return parse(name, str(raw).strip())

        host = _gokart_option(config, "redis_host", redis_host, _host)
        port = _gokart_option(config, "redis_port", redis_port, _port)
        timeout = _gokart_option(config, "redis_timeout", redis_timeout, _whole_lease_seconds)
        gokart_fail_on_collision = _gokart_option(config, "redis_fail_on_collision", None, _boolean)
        overrides: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            parser: _Parser[object] = field.metadata[_PARSER]
            value = option(field.name, parser)
            if value is not None:
                overrides[field.name] = value
        if "redis_url" not in overrides and host is not None and port is not None:
            overrides["redis_url"] = (
                f"redis://[{host}]:{port}/0" if ":" in host else f"redis://{host}:{port}/0"
            )
        if "lease_seconds" not in overrides and timeout is not None:
            overrides["lease_seconds"] = timeout
        if "fail_on_collision" not in overrides and gokart_fail_on_collision is not None:
            overrides["fail_on_collision"] = gokart_fail_on_collision
        return cls(**overrides)  # type: ignore[arg-type]


# gokart's task parameters for its Redis, each with the parser that checks it as gokart reads it.
_GOKART_PARAMETERS: dict[str, _Parser[object]] = {
    "redis_host": _host,
    "redis_port": _port,
    "redis_timeout": _whole_lease_seconds,
}


def _gokart_option(
    config: luigi.configuration.LuigiConfigParser, name: str, given: object, parse: _Parser[_Value]
) -> _Value | None:
    """A gokart option: the task's own parameter ``given``, else ``[TaskOnKart]``'s; None if neither."""
    if given is not None:
        return parse(name, str(given))
    raw = config.get(GOKART_SECTION, name, None)  # type: ignore[no-untyped-call]
    if raw is None or str(raw).strip() in ("", "None"):
        return None
    return parse(f"[{GOKART_SECTION}] {name}", str(raw).strip())


def check_gokart_parameters(passed: Collection[str] = ()) -> None:
    """Check ``[TaskOnKart]``'s ``redis_host``, ``redis_port`` and ``redis_timeout`` before a task reads them.

    gokart parses them with luigi, whose bare ``ValueError`` names no setting (or takes a value
    the lock cannot use); this raises ``ConfigurationError`` naming the setting instead.
    Parameters given to the task itself (``passed``) are not read from the section.
    """
    config = luigi.configuration.get_config()  # type: ignore[no-untyped-call]
    for name, parse in _GOKART_PARAMETERS.items():
        if name not in passed:
            _gokart_option(config, name, None, parse)


def _shown(field: dataclasses.Field[Any], value: object) -> object:
    """A field's value as a message or repr may show it: a credential hidden."""
    shown: Callable[[str], str] | None = field.metadata[_SHOWN]
    if shown is None or value is None:
        return value
    return shown(str(value))


def _encodable(text: str) -> bool:
    """Whether Redis can be sent ``text`` (as UTF-8): a lone surrogate cannot."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# In the order of the fields, which is the order docs/configuration.md lists them in.
_SETTING_NAMES = tuple(field.name for field in dataclasses.fields(Settings))
_TOML_KEYS = frozenset(_SETTING_NAMES)
# luigi's .cfg parser also reads ``redis-url`` for ``redis_url`` (and warns of the dashes itself).
_CFG_KEYS = _TOML_KEYS | {name.replace("_", "-") for name in _SETTING_NAMES}


def _report_unknown_settings(config: ConfigParser) -> None:
    """Warn, once per key and process, of each ``[locked_targets]`` key that no setting reads.

    Its setting keeps the default meanwhile: for a misspelt ``redis_url``, no locking at all.
    It runs when a configuration is read, once per configuration (see ``_SettingsMemory``).
    """
    for key in sorted(_unread_keys(config)):
        if _reported_unknown_settings.first_time(key):
            logger.warning("[%s] has an unknown setting %s; %s It is ignored.", SECTION, key, _hint_for(key))


def _unread_keys(config: ConfigParser) -> set[str]:
    """The keys written in ``[locked_targets]`` that ``from_luigi_config`` does not read."""
    if isinstance(config, luigi.configuration.LuigiTomlParser):
        # The TOML parser keeps its sections in ``data``, not configparser's, and has no [DEFAULT].
        return set(config.data.get(SECTION, {})) - _TOML_KEYS
    if not config.has_section(SECTION):
        return set()
    # configparser lists every [DEFAULT] key in every section; they are nobody's typo here
    # (a key written both there and in [locked_targets] goes unreported).
    return set(config.options(SECTION)) - config.defaults().keys() - _CFG_KEYS


def _hint_for(unknown_key: str) -> str:
    """The setting the key was probably meant to be, or all of them when none is close."""
    nearest = difflib.get_close_matches(unknown_key.lower(), _SETTING_NAMES, n=1)
    if nearest:
        return f"did you mean {nearest[0]}?"
    return f"the settings are {', '.join(_SETTING_NAMES)}."


# luigi's ``${NAME}`` interpolation of environment variables in a .cfg value (its EnvironmentInterpolation).
_ENVIRONMENT_REFERENCE = re.compile(r"\$\{([^}]+)\}")
# Distinct configurations (and task parameters) remembered at once; more are forgotten together.
_MOST_REMEMBERED = 64


@dataclasses.dataclass(frozen=True)
class _Remembered:
    """Settings built from one configuration, and the environment variables its values named, as they were."""

    settings: Settings
    environment: tuple[tuple[str, str | None], ...]

    def environment_unchanged(self) -> bool:
        return not self.environment or all(os.environ.get(name) == value for name, value in self.environment)


_Parameters = tuple[type[Settings], str | None, int | None, int | None]
"""What ``from_luigi_config`` reads with: the class, and a task's redis_host, redis_port and redis_timeout."""


def _read(config: luigi.configuration.LuigiConfigParser, parameters: _Parameters) -> Settings:
    cls, redis_host, redis_port, redis_timeout = parameters
    return cls._read(config, redis_host=redis_host, redis_port=redis_port, redis_timeout=redis_timeout)


class _SettingsMemory:
    """The settings this process built from luigi's configuration, by what they were built from.

    The key is a fingerprint of everything ``from_luigi_config`` reads, uninterpolated: the
    raw values of ``[locked_targets]``, ``[TaskOnKart]`` and ``[DEFAULT]`` (``%(name)s`` refers
    only to those), the ``Settings`` class and the task's parameters; the parser object itself
    is kept, so a new one (luigi's TOML parser, a fresh ``LuigiConfigParser``) forgets all. A
    value naming ``${NAME}`` is reused only while those environment variables are unchanged.
    Errors are not remembered: a wrong setting fails on every read.
    """

    def __init__(self) -> None:
        self._config: ConfigParser | None = None
        self._remembered: dict[Hashable, _Remembered] = {}
        self._last: tuple[tuple[object, ...], tuple[Mapping[str, object], ...], _Remembered] | None = None

    def settings(self, config: luigi.configuration.LuigiConfigParser, parameters: _Parameters) -> Settings:
        """The settings of ``config`` for ``parameters`` (the class, then a task's ``redis_host``,
        ``redis_port`` and ``redis_timeout``), read only if not remembered."""
        if config is not self._config:
            self._config, self._remembered, self._last = config, {}, None
        sections = _sections_read(config)
        # The common case, the configuration and parameters of the last call: comparing the
        # sections costs less than building and hashing their fingerprint.
        if self._last is not None:
            last_parameters, last_sections, last = self._last
            if parameters == last_parameters and sections == last_sections and last.environment_unchanged():
                return last.settings
        read = functools.partial(_read, config, parameters)
        remembered = self._remembered_by_fingerprint(config, parameters, read)
        if remembered is None:  # a value that cannot be a key (a TOML list): read it every time
            return read()
        if sections is not None:
            self._last = (parameters, tuple(dict(section) for section in sections), remembered)
        return remembered.settings

    def _remembered_by_fingerprint(
        self, config: ConfigParser, parameters: _Parameters, read: Callable[[], Settings]
    ) -> _Remembered | None:
        """The settings of this fingerprint, read now if not remembered; None if it cannot be a key."""
        raw = _raw_values(config)
        key = (raw, parameters)
        try:
            remembered = self._remembered.get(key)
        except TypeError:
            return None
        if remembered is not None and remembered.environment_unchanged():
            return remembered
        remembered = _Remembered(read(), _environment_named_in(raw))
        if len(self._remembered) >= _MOST_REMEMBERED:
            self._remembered.clear()
        self._remembered[key] = remembered
        return remembered


_remembered_settings = ProcessLocal(_SettingsMemory)


def _sections_read(config: ConfigParser) -> tuple[Mapping[str, object], ...] | None:
    """The sections ``from_luigi_config`` reads, as the parser holds them (None for luigi's TOML parser)."""
    if isinstance(config, luigi.configuration.LuigiTomlParser):
        return None
    sections: dict[str, dict[str, object]] = vars(config)["_sections"]
    return (config.defaults(), sections.get(SECTION, {}), sections.get(GOKART_SECTION, {}))


def _raw_values(config: ConfigParser) -> tuple[tuple[tuple[str, object], ...], ...]:
    """The uninterpolated values of the sections ``from_luigi_config`` reads, as they are now."""
    if isinstance(config, luigi.configuration.LuigiTomlParser):
        return tuple(tuple(config.data.get(section, {}).items()) for section in (SECTION, GOKART_SECTION))
    sections: dict[str, dict[str, object]] = vars(config)["_sections"]
    return (
        tuple(config.defaults().items()),
        tuple(sections.get(SECTION, {}).items()),
        tuple(sections.get(GOKART_SECTION, {}).items()),
    )


def _environment_named_in(
    raw: tuple[tuple[tuple[str, object], ...], ...],
) -> tuple[tuple[str, str | None], ...]:
    """The environment variables that ``${NAME}`` in ``raw``'s values name, with their values now."""
    names = {
        name
        for section in raw
        for _, value in section
        if isinstance(value, str) and "${" in value
        for name in _ENVIRONMENT_REFERENCE.findall(value)
    }
    return tuple((name, os.environ.get(name)) for name in sorted(names))
