"""Fuzzed settings are refused by a ConfigurationError that shows no secret, or lock leaving no key stuck."""

from __future__ import annotations

import dataclasses
import math
import threading
import uuid
from typing import Any

import hypothesis.strategies as st
import pytest
import redis
from hypothesis import HealthCheck, event, given, settings

from helpers.redis_keys import keys_without_ttl
from locked_targets.errors import ConfigurationError
from locked_targets.locks import connection_for, lease_terms, lock_key_for
from locked_targets.rwlock import LockMode, ReadWriteLock, redis_address, scripts
from locked_targets.settings import (
    LEASE_BOUNDS,
    LOCK_SERVICE_SETTINGS,
    RENEWAL_INTERVAL_BOUNDS,
    SHARED_LEASE_IDLE_BOUNDS,
    WAIT_BOUNDS,
    Settings,
)

SECRET = "Pw-7f3c9a"  # the password every fuzzed URL carries somewhere, never to be shown

# Every duration setting and its bounds, as Settings declares them: a new one is fuzzed too.
DURATION_BOUNDS = {
    field.name: field.metadata["bounds"]
    for field in dataclasses.fields(Settings)
    if field.metadata["bounds"] is not None
}

# Each part of a setting as (plausible values, hostile values). An example draws one part (a
# duration, the prefixes or the URL), or none, from the hostile values; every other part from
# the plausible ones. So many examples construct (and then lock), with the hostile part in them.
DURATIONS = (
    st.floats(min_value=1, max_value=3600),
    st.one_of(
        # Just outside a bound, far outside all of them, and not a number of seconds at all.
        st.sampled_from([0, 0.001, 0.0999, 0.999, 604_801, 2_592_001, 3.2e7, 1e10, 1e12, 1e14, 1e15, 1e300]),
        st.sampled_from([-1.0, -math.inf, math.inf, math.nan, "60", "", None, True]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**20), max_value=10**20),
    ),
)
hostile_text = st.text(max_size=12)
SCHEMES = (
    st.sampled_from(["redis://", "rediss://", "REDIS://"]),
    st.sampled_from(["unix://", "Rediss://", "rediss//", "redis:/", "redis:", "http://", ""]),
)
HOSTS = (
    st.sampled_from(["127.0.0.1", "localhost", "[::1]"]),
    st.one_of(st.sampled_from(["", "h\u00e9te", "a b"]), hostile_text),
)
PORTS = (
    st.sampled_from(["", ":6379"]),
    st.one_of(st.sampled_from([":0", ":65536", ":port", ":-1"]), hostile_text.map(":{}".format)),
)
PATHS = (
    st.sampled_from(["", "/", "/0", "/15"]),
    st.one_of(st.sampled_from(["/16", "/x", "/1/2", "/99999999999"]), hostile_text),
)
OTHER_PAIRS = (
    st.sampled_from(["db=3", "client_name=app"]),
    st.one_of(
        st.sampled_from(["db=-1", "socket_timeout=abc", "ssl_cert_reqs=none", "foo=bar", "db=1&db=2"]),
        st.tuples(hostile_text, hostile_text).map("=".join),
    ),
)
PREFIXES = (st.sampled_from(["", "team-a:", "caf\u00e9:"]), hostile_text)
credential_names = st.sampled_from(["password", "ssl_password", "Password", "pass%77ord", "auth_token"])
Part = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]


@st.composite
def hostile_settings(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments for Settings: some durations, prefixes and a URL that carries ``SECRET``,
    as ``redis_url`` or as one of the per-storage URLs."""
    hostile = draw(st.sampled_from([None, *DURATION_BOUNDS, "prefixes", "redis_url"]))

    def part(values: Part, setting: str) -> Any:
        return draw(values[1] if setting == hostile else values[0])

    # The hostile part is always set. A plausible renewal interval could come too close to a
    # plausible lease, so only a hostile one is set.
    names = draw(st.sets(st.sampled_from(sorted(DURATION_BOUNDS)))) - {"renewal_interval_seconds"}
    if hostile in DURATION_BOUNDS:
        names.add(hostile)
    arguments: dict[str, Any] = {name: part(DURATIONS, name) for name in names}
    prefixes = st.sets(st.sampled_from(["key_prefix", "s3_key_prefix"]), min_size=int(hostile == "prefixes"))
    for name in draw(prefixes):
        arguments[name] = part(PREFIXES, "prefixes")
    if hostile != "redis_url" and draw(st.booleans()):
        return arguments
    # SECRET is the password of the user information or of the query, never anywhere else.
    pairs = [part(OTHER_PAIRS, "redis_url") for _ in range(draw(st.integers(0, 3)))]
    in_query = draw(st.booleans())
    if in_query:
        pairs.insert(draw(st.integers(0, len(pairs))), f"{draw(credential_names)}={SECRET}")
    user_information = "" if in_query else f"{draw(st.sampled_from(['', 'user']))}:{SECRET}@"
    query = f"?{'&'.join(pairs)}" if pairs else ""
    arguments[draw(st.sampled_from(LOCK_SERVICE_SETTINGS))] = (
        f"{part(SCHEMES, 'redis_url')}{user_information}{part(HOSTS, 'redis_url')}"
        f"{part(PORTS, 'redis_url')}{part(PATHS, 'redis_url')}{query}"
    )
    return arguments


def assert_usable_by_the_lock(built: Settings) -> None:
    for name, bounds in DURATION_BOUNDS.items():
        value = getattr(built, name)
        assert value is None or bounds.within(value), name
    assert built.effective_renewal_interval_seconds <= built.lease_seconds / 2
    for name in LOCK_SERVICE_SETTINGS:
        if getattr(built, name) is not None:
            redis_address(getattr(built, name))
    assert SECRET not in repr(built)


def lock_and_unlock(built: Settings, redis_url: str, client: redis.Redis) -> None:
    """Take and give back the lock of one file with ``built``'s prefixes and durations, on the test server."""
    isolated = f"fuzz-{uuid.uuid4().hex[:12]}:"
    on_the_test_server = Settings(
        **{
            **{name: getattr(built, name) for name in (*DURATION_BOUNDS, "s3_key_prefix")},
            "redis_url": redis_url,
            "key_prefix": isolated + built.key_prefix,
        }
    )
    lock = ReadWriteLock(
        connection_for(redis_url),
        lock_key_for("s3://bucket/fuzzed.pkl", on_the_test_server),
        lease_terms(on_the_test_server),
        wait_timeout_seconds=on_the_test_server.wait_timeout_seconds,
    )
    lock.acquire(LockMode.EXCLUSIVE).release()
    lock.acquire(LockMode.SHARED).release()
    assert keys_without_ttl(client, isolated) == []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arguments=hostile_settings())
def test_hostile_settings_are_refused_without_the_secret_or_lock_without_leaving_a_key_stuck(
    arguments: dict[str, Any], redis_url: str, redis_client: redis.Redis
) -> None:
    built, refusal = built_or_refused(arguments)
    event("refused" if built is None else "built")
    if built is None:
        assert SECRET not in refusal
        return
    assert_usable_by_the_lock(built)
    lock_and_unlock(built, redis_url, redis_client)


def built_or_refused(arguments: dict[str, Any]) -> tuple[Settings | None, str]:
    """The settings, or None and all a refusal shows: its message and its value (any other error fails)."""
    try:
        return Settings(**arguments), ""
    except ConfigurationError as refusal:
        return None, f"{refusal} {refusal.value!r}"


@pytest.mark.parametrize(
    "durations",
    [
        {"lease_seconds": LEASE_BOUNDS.shortest},
        {"lease_seconds": LEASE_BOUNDS.longest},
        {"lease_seconds": LEASE_BOUNDS.longest, "renewal_interval_seconds": RENEWAL_INTERVAL_BOUNDS.longest},
        {"lease_seconds": 2 * RENEWAL_INTERVAL_BOUNDS.shortest + 1, "renewal_interval_seconds": 0.1},
        {"wait_timeout_seconds": WAIT_BOUNDS.longest, "redis_retry_deadline_seconds": WAIT_BOUNDS.longest},
        {"shared_lease_idle_seconds": SHARED_LEASE_IDLE_BOUNDS.longest},
    ],
    ids=str,
)
def test_settings_at_their_bounds_lock_without_leaving_a_key_stuck(
    durations: dict[str, float], redis_url: str, redis_client: redis.Redis
) -> None:
    lock_and_unlock(Settings(**durations), redis_url, redis_client)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(DURATION_BOUNDS))
def test_every_duration_a_setting_allows_fits_the_scripts_and_pythons_waits(name: str) -> None:
    longest = DURATION_BOUNDS[name].longest
    assert scripts.milliseconds(longest) <= scripts.LONGEST_MILLISECONDS
    assert longest < threading.TIMEOUT_MAX
