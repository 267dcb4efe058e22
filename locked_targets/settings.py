"""Settings of locked_targets, read the luigi way from a ``[locked_targets]`` section.

Every value is validated when the settings are built, so a wrong setting fails
before any target is touched, with a message that names it. For gokart
compatibility ``[TaskOnKart] redis_host``/``redis_port``/``redis_timeout`` (or the
same task parameters) switch locking on when ``redis_url`` is not set.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TypeVar

import luigi.configuration

from locked_targets.errors import ConfigurationError
from locked_targets.rwlock import redis_address

SECTION = "locked_targets"
GOKART_SECTION = "TaskOnKart"
DEFAULT_LEASE_SECONDS = 180.0  # gokart's redis_timeout default

_Value = TypeVar("_Value")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where the locks live, how they are keyed, and how long they last."""

    redis_url: str | None = None
    key_prefix: str = "locked_targets:"
    local_key_prefix: str = "local:"
    s3_key_prefix: str = "s3:"
    gcs_key_prefix: str = "gcs:"
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    renewal_interval_seconds: float | None = None
    wait_timeout_seconds: float | None = None
    run_wait_timeout_seconds: float | None = None
    fail_on_collision: bool = False
    shared_lease_idle_seconds: float = 2.0
    on_redis_error: str = "fail"
    redis_retry_deadline_seconds: float = 600.0
    s3_endpoint_url: str | None = None
    gcs_endpoint_url: str | None = None
    gcs_project: str | None = None
    gcs_token: str | None = None

    def __post_init__(self) -> None:
        if self.redis_url is not None:
            redis_address(self.redis_url)
        for name in ("key_prefix", "local_key_prefix", "s3_key_prefix", "gcs_key_prefix"):
            prefix = getattr(self, name)
            if "{" in prefix or "}" in prefix:
                raise ConfigurationError(name, prefix, "braces are reserved for the Redis Cluster hash tag")
        if self.on_redis_error not in ("fail", "wait"):
            raise ConfigurationError("on_redis_error", self.on_redis_error, "must be fail or wait")
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

        def option(name: str, parse: Callable[[str, str], _Value]) -> _Value | None:
            raw = config.get(SECTION, name, None)
            if raw is None or str(raw).strip() == "":
                return None
            return parse(name, str(raw).strip())

        def gokart_option(
            name: str, given: _Value | None, parse: Callable[[str, str], _Value]
        ) -> _Value | None:
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
        redis_url = option("redis_url", _text)
        if redis_url is None and host is not None and port is not None:
            redis_url = f"redis://{host}:{port}/0"
        overrides: dict[str, object] = {"redis_url": redis_url}
        for field in dataclasses.fields(cls):
            if field.name == "redis_url":
                continue
            parse = _PARSERS.get(field.type, _text) if isinstance(field.type, str) else _text
            value = option(field.name, parse)
            if value is not None:
                overrides[field.name] = value
        if "lease_seconds" not in overrides and timeout is not None:
            overrides["lease_seconds"] = timeout
        if "fail_on_collision" not in overrides and gokart_fail_on_collision is not None:
            overrides["fail_on_collision"] = gokart_fail_on_collision
        return cls(**overrides)  # type: ignore[arg-type]


def _require_positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(name, value, "must be a positive number of seconds")


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


# How a ``[locked_targets]`` value is parsed, by the type annotation of its field.
_PARSERS: dict[str, Callable[[str, str], object]] = {
    "float": _number,
    "float | None": _number,
    "bool": _boolean,
}
