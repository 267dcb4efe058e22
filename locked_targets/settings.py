"""Settings of locked_targets, read the luigi way from a ``[locked_targets]`` section.

Every value is validated when the settings are built, so a wrong setting fails
before any target is touched, with a message that names it. For gokart
compatibility ``[TaskOnKart] redis_host``/``redis_port``/``redis_timeout`` (or the
same task parameters) switch locking on when ``redis_url`` is not set. A key of
``[locked_targets]`` that no setting reads is logged once per process, since a typo
in ``redis_url`` would otherwise switch locking off without a word.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from collections.abc import Callable
from configparser import ConfigParser
from typing import Literal, TypeVar, cast, get_args

import luigi.configuration

from locked_targets.errors import ConfigurationError
from locked_targets.process_state import Once
from locked_targets.rwlock import redis_address

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

# The key under which a field of Settings keeps its parser in ``dataclasses.field`` metadata.
_PARSER = "parser"


def _text(_name: str, raw: str) -> str:
    return raw


def _number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(name, raw, "must be a number of seconds") from None
    if math.isnan(value):
        raise ConfigurationError(name, raw, "must be a number of seconds")
    return value


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


def _on_redis_error(name: str, raw: str) -> OnRedisError:
    """One of the values of ``OnRedisError``, exactly (lower case)."""
    choices: tuple[str, ...] = get_args(OnRedisError)
    if raw not in choices:
        raise ConfigurationError(name, raw, f"must be {' or '.join(choices)}")
    return cast(OnRedisError, raw)


def _setting(default: _Value, parser: _Parser[_Value]) -> _Value:
    """A field of ``Settings`` whose ``[locked_targets]`` value ``parser`` reads.

    The parser is declared next to the field, so a new field cannot end up read as plain
    text because nobody thought to register its type elsewhere.
    """
    return dataclasses.field(default=default, metadata={_PARSER: parser})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where the locks live, how they are keyed, and how long they last."""

    redis_url: str | None = _setting(None, _text)
    key_prefix: str = _setting("locked_targets:", _text)
    local_key_prefix: str = _setting("local:", _text)
    s3_key_prefix: str = _setting("s3:", _text)
    gcs_key_prefix: str = _setting("gcs:", _text)
    lease_seconds: float = _setting(DEFAULT_LEASE_SECONDS, _number)
    renewal_interval_seconds: float | None = _setting(None, _number)
    wait_timeout_seconds: float | None = _setting(None, _number)
    run_wait_timeout_seconds: float | None = _setting(None, _number)
    fail_on_collision: bool = _setting(False, _boolean)
    shared_lease_idle_seconds: float = _setting(2.0, _number)
    # RUF009 fears one mutable default shared by all instances; "fail" is a str, which ruff
    # cannot tell through the alias.
    on_redis_error: OnRedisError = _setting("fail", _on_redis_error)  # noqa: RUF009
    redis_retry_deadline_seconds: float = _setting(600.0, _number)
    s3_endpoint_url: str | None = _setting(None, _text)
    gcs_endpoint_url: str | None = _setting(None, _text)
    gcs_project: str | None = _setting(None, _text)
    gcs_token: str | None = _setting(None, _text)

    def __post_init__(self) -> None:
        if self.redis_url is not None:
            redis_address(self.redis_url)
        for name in ("key_prefix", "local_key_prefix", "s3_key_prefix", "gcs_key_prefix"):
            prefix = getattr(self, name)
            if "{" in prefix or "}" in prefix:
                raise ConfigurationError(name, prefix, "braces are reserved for the Redis Cluster hash tag")
        # Values given in code (unchecked by mypy in untyped callers) get the file's check.
        _on_redis_error("on_redis_error", self.on_redis_error)
        _require_positive("redis_retry_deadline_seconds", self.redis_retry_deadline_seconds)
        _require_positive("lease_seconds", self.lease_seconds)
        if self.renewal_interval_seconds is not None:
            _require_positive("renewal_interval_seconds", self.renewal_interval_seconds)
        if self.effective_renewal_interval_seconds >= self.lease_seconds:
            raise ConfigurationError(
                "lease_seconds",
                self.lease_seconds,
                f"must be longer than the renewal interval ({self.effective_renewal_interval_seconds} s), "
                "or a lease could expire between two renewals",
            )
        for name in ("wait_timeout_seconds", "run_wait_timeout_seconds", "shared_lease_idle_seconds"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ConfigurationError(name, value, "must be 0 or more")

    @property
    def locking_enabled(self) -> bool:
        return self.redis_url is not None

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
        redis_timeout: float | None = None,
    ) -> Settings:
        """Build settings from luigi's configuration.

        The keyword arguments are a gokart task's own ``redis_*`` parameters; when
        omitted, the ``[TaskOnKart]`` section supplies them.
        """
        config = luigi.configuration.get_config()  # type: ignore[no-untyped-call]
        _report_unknown_settings(config)

        def option(name: str, parse: _Parser[_Value]) -> _Value | None:
            raw = config.get(SECTION, name, None)
            if raw is None or str(raw).strip() == "":
                return None
            return parse(name, str(raw).strip())

        def gokart_option(name: str, given: _Value | None, parse: _Parser[_Value]) -> _Value | None:
            if given is not None:
                return given
            raw = config.get(GOKART_SECTION, name, None)
            if raw is None or str(raw).strip() in ("", "None"):
                return None
            return parse(f"[{GOKART_SECTION}] {name}", str(raw).strip())

        host = gokart_option("redis_host", redis_host, _text)
        gokart_fail_on_collision = gokart_option("redis_fail_on_collision", None, _boolean)
        port = gokart_option("redis_port", redis_port, _integer)
        timeout = gokart_option("redis_timeout", redis_timeout, _number)
        overrides: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            parser: _Parser[object] = field.metadata[_PARSER]
            value = option(field.name, parser)
            if value is not None:
                overrides[field.name] = value
        if "redis_url" not in overrides and host is not None and port is not None:
            overrides["redis_url"] = f"redis://{host}:{port}/0"
        if "lease_seconds" not in overrides and timeout is not None:
            overrides["lease_seconds"] = timeout
        if "fail_on_collision" not in overrides and gokart_fail_on_collision is not None:
            overrides["fail_on_collision"] = gokart_fail_on_collision
        return cls(**overrides)  # type: ignore[arg-type]


def _require_positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(name, value, "must be a positive number of seconds")


# In the order of the fields, which is the order docs/configuration.md lists them in.
_SETTING_NAMES = tuple(field.name for field in dataclasses.fields(Settings))
_TOML_KEYS = frozenset(_SETTING_NAMES)
# luigi's .cfg parser also reads ``redis-url`` for ``redis_url`` (and warns of the dashes itself).
_CFG_KEYS = _TOML_KEYS | {name.replace("_", "-") for name in _SETTING_NAMES}


def _report_unknown_settings(config: ConfigParser) -> None:
    """Warn, once per key and process, of each ``[locked_targets]`` key that no setting reads.

    Its setting keeps the default meanwhile: for a misspelt ``redis_url``, no locking at all.
    Settings are read for every target, so this stays a few set operations when all is well.
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
