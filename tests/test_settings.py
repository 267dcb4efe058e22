"""Settings: read from luigi's configuration, validated up front, errors that name the setting."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from configparser import ConfigParser

import luigi.configuration
import pytest
from hypothesis import given
from hypothesis import strategies as st

from locked_targets.errors import ConfigurationError
from locked_targets.locks import LockService, lock_service_for
from locked_targets.settings import LOCK_SERVICE_SETTINGS, Settings


def set_option(config: luigi.configuration.LuigiConfigParser, section: str, name: str, value: str) -> None:
    config.set(section, name, value)  # type: ignore[no-untyped-call]


def test_defaults_lock_nothing() -> None:
    settings = Settings()
    assert not settings.locking_enabled
    assert settings.lease_seconds == 180
    assert settings.effective_renewal_interval_seconds == 60


def test_section_values_are_read(luigi_config: luigi.configuration.LuigiConfigParser) -> None:
    set_option(luigi_config, "locked_targets", "redis_url", "redis://cache-redis:6380/2")
    set_option(luigi_config, "locked_targets", "key_prefix", "team-a:")
    set_option(luigi_config, "locked_targets", "s3_key_prefix", "shared-s3:")
    set_option(luigi_config, "locked_targets", "lease_seconds", "90")
    set_option(luigi_config, "locked_targets", "wait_timeout_seconds", "600")
    settings = Settings.from_luigi_config()
    assert settings.redis_url == "redis://cache-redis:6380/2"
    assert settings.key_prefix == "team-a:"
    assert settings.s3_key_prefix == "shared-s3:"
    assert settings.lease_seconds == 90
    assert settings.wait_timeout_seconds == 600


def test_gokart_redis_host_and_port_switch_locking_on(
    luigi_config: luigi.configuration.LuigiConfigParser,
) -> None:
    set_option(luigi_config, "TaskOnKart", "redis_host", "gokart-redis")
    set_option(luigi_config, "TaskOnKart", "redis_port", "6379")
    set_option(luigi_config, "TaskOnKart", "redis_timeout", "120")
    settings = Settings.from_luigi_config()
    assert settings.redis_url == "redis://gokart-redis:6379/0"
    assert settings.lease_seconds == 120


def test_task_parameters_switch_locking_on(luigi_config: luigi.configuration.LuigiConfigParser) -> None:
    settings = Settings.from_luigi_config(redis_host="task-redis", redis_port=7000, redis_timeout=60)
    assert settings.redis_url == "redis://task-redis:7000/0"
    assert settings.lease_seconds == 60


def test_redis_url_wins_over_gokart_host_and_port(
    luigi_config: luigi.configuration.LuigiConfigParser,
) -> None:
    set_option(luigi_config, "locked_targets", "redis_url", "redis://ours:6379/1")
    set_option(luigi_config, "locked_targets", "lease_seconds", "30")
    settings = Settings.from_luigi_config(redis_host="theirs", redis_port=6379, redis_timeout=180)
    assert settings.redis_url == "redis://ours:6379/1"
    assert settings.lease_seconds == 30


def test_lease_not_longer_than_renewal_interval_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"lease_seconds=10.*renewal interval"):
        Settings(lease_seconds=10, renewal_interval_seconds=10)


def test_a_lease_shorter_than_twice_the_renewal_interval_is_refused() -> None:
    with pytest.raises(
        ConfigurationError, match=r"lease_seconds=10: must be at least twice the renewal interval"
    ):
        Settings(lease_seconds=10, renewal_interval_seconds=5.5)


def test_a_lease_of_twice_the_renewal_interval_is_accepted() -> None:
    assert Settings(lease_seconds=10, renewal_interval_seconds=5).effective_renewal_interval_seconds == 5


# Each duration setting, with values just outside its bounds and hostile ones.
OUT_OF_BOUNDS = [
    ("lease_seconds", 0.999),
    ("lease_seconds", 0.001),
    ("lease_seconds", 7 * 24 * 3600 + 1),
    ("lease_seconds", 1e12),
    ("lease_seconds", 1e300),
    ("lease_seconds", float("inf")),
    ("lease_seconds", float("nan")),
    ("renewal_interval_seconds", 0.09),
    ("renewal_interval_seconds", -1),
    ("renewal_interval_seconds", float("nan")),
    ("wait_timeout_seconds", -0.001),
    ("wait_timeout_seconds", 30 * 24 * 3600 + 1),
    ("wait_timeout_seconds", float("inf")),
    ("run_wait_timeout_seconds", -1),
    ("run_wait_timeout_seconds", 1e300),
    ("shared_lease_idle_seconds", -1),
    ("shared_lease_idle_seconds", 7 * 24 * 3600 + 1),
    ("redis_retry_deadline_seconds", 0),
    ("redis_retry_deadline_seconds", 0.5),
    ("redis_retry_deadline_seconds", 30 * 24 * 3600 + 1),
    ("redis_retry_deadline_seconds", float("-inf")),
    ("min_replicas_timeout_seconds", 0),
    ("min_replicas_timeout_seconds", 25.001),
    ("lease_seconds", "60"),  # text given in code
    ("wait_timeout_seconds", True),
]


@pytest.mark.parametrize(("name", "value"), OUT_OF_BOUNDS, ids=str)
def test_a_duration_out_of_its_bounds_is_refused_naming_them(name: str, value: object) -> None:
    with pytest.raises(
        ConfigurationError, match=rf"{name}=.*: must be a number of seconds from [\d.]+ to \d+"
    ):
        Settings(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("lease_seconds", 1.0),
        ("lease_seconds", 1.5),
        ("lease_seconds", 7 * 24 * 3600),
        ("renewal_interval_seconds", 0.1),
        ("wait_timeout_seconds", 0),
        ("wait_timeout_seconds", 30 * 24 * 3600),
        ("shared_lease_idle_seconds", 0),
        ("redis_retry_deadline_seconds", 1),
        ("min_replicas_timeout_seconds", 0.001),
        ("min_replicas_timeout_seconds", 25),
    ],
    ids=str,
)
def test_a_duration_at_its_bounds_is_accepted(name: str, value: float) -> None:
    assert getattr(Settings(**{name: value}), name) == value  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "raw", "complaint"),
    [
        *[
            ("lease_seconds", raw, "must be a number of seconds from 1 to 604800")
            for raw in ("nan", "inf", "1e300")
        ],
        *[
            ("[TaskOnKart] redis_timeout", raw, "must be a whole number")
            for raw in ("0", "1.5", "604801", "1e300")
        ],
    ],
)
def test_a_duration_in_the_file_the_lease_cannot_take_names_the_setting(
    luigi_config: luigi.configuration.LuigiConfigParser, option: str, raw: str, complaint: str
) -> None:
    section, _, name = option.rpartition(" ")
    set_option(luigi_config, section.strip("[]") or "locked_targets", name, raw)
    with pytest.raises(ConfigurationError, match=f"{re.escape(option)}=.*: {complaint}"):
        Settings.from_luigi_config()


def test_negative_wait_timeout_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="wait_timeout_seconds=-1"):
        Settings(wait_timeout_seconds=-1)


@pytest.mark.parametrize("value", [-1, 101, 1.5, True, "1"], ids=repr)
def test_a_min_replicas_acked_that_is_no_count_of_replicas_is_refused(value: object) -> None:
    with pytest.raises(
        ConfigurationError, match=r"min_replicas_acked=.*: must be a whole number from 0 \(off\) to 100"
    ):
        Settings(min_replicas_acked=value)  # type: ignore[arg-type]


def test_min_replicas_acked_is_read_from_the_section(
    luigi_config: luigi.configuration.LuigiConfigParser,
) -> None:
    set_option(luigi_config, "locked_targets", "min_replicas_acked", "2")
    assert Settings.from_luigi_config().min_replicas_acked == 2


def test_a_replica_wait_over_half_the_renewal_interval_is_refused_when_replicas_are_asked_for() -> None:
    with pytest.raises(ConfigurationError, match=r"min_replicas_timeout_seconds=0\.6: must be at most half"):
        Settings(lease_seconds=3, min_replicas_acked=1, min_replicas_timeout_seconds=0.6)


def test_any_wait_for_replicas_within_its_bounds_is_accepted_while_none_are_asked_for() -> None:
    assert Settings(lease_seconds=3, min_replicas_timeout_seconds=25).min_replicas_timeout_seconds == 25


@pytest.mark.parametrize("setting", ["redis_url", "s3_redis_url"])
def test_replicas_asked_for_on_a_redis_cluster_are_refused_naming_the_cluster_url(setting: str) -> None:
    refusal = rf"min_replicas_acked=1: .*Redis Cluster \({setting} names one\)"
    with pytest.raises(ConfigurationError, match=refusal):
        Settings(**{setting: "redis+cluster://127.0.0.1:7000", "min_replicas_acked": 1})  # type: ignore[arg-type]


def test_the_lock_service_of_a_path_shows_no_password_in_its_repr() -> None:
    service = lock_service_for(
        "/tmp/cache/x.pkl", Settings(redis_url="redis://user:hunter2@localhost:6379/0")
    )
    assert service is not None
    assert "hunter2" not in repr(service)
    assert "redis_url" in repr(service)


def test_non_numeric_lease_names_the_setting(luigi_config: luigi.configuration.LuigiConfigParser) -> None:
    set_option(luigi_config, "locked_targets", "lease_seconds", "three minutes")
    with pytest.raises(ConfigurationError, match="lease_seconds='three minutes'"):
        Settings.from_luigi_config()


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_a_gokart_port_out_of_range_names_the_setting(
    luigi_config: luigi.configuration.LuigiConfigParser, port: str
) -> None:
    set_option(luigi_config, "TaskOnKart", "redis_host", "h")
    set_option(luigi_config, "TaskOnKart", "redis_port", port)
    with pytest.raises(
        ConfigurationError, match=rf"\[TaskOnKart\] redis_port='{port}': must be a port number"
    ):
        Settings.from_luigi_config()


def test_a_task_timeout_that_cannot_be_the_lease_names_the_parameter(
    luigi_config: luigi.configuration.LuigiConfigParser,
) -> None:
    with pytest.raises(ConfigurationError, match=r"^invalid setting redis_timeout='0'"):
        Settings.from_luigi_config(redis_timeout=0)


@pytest.mark.parametrize("host", ["h/0", "user:pw@h", "two words", "h?db=1"])
def test_a_gokart_host_that_is_no_host_names_the_setting(
    luigi_config: luigi.configuration.LuigiConfigParser, host: str
) -> None:
    set_option(luigi_config, "TaskOnKart", "redis_host", host)
    set_option(luigi_config, "TaskOnKart", "redis_port", "6379")
    with pytest.raises(ConfigurationError, match=r"\[TaskOnKart\] redis_host=.*: must be a host name"):
        Settings.from_luigi_config()


def test_a_gokart_ipv6_host_is_put_in_brackets(luigi_config: luigi.configuration.LuigiConfigParser) -> None:
    set_option(luigi_config, "TaskOnKart", "redis_host", "::1")
    set_option(luigi_config, "TaskOnKart", "redis_port", "6379")
    assert Settings.from_luigi_config().redis_url == "redis://[::1]:6379/0"


def test_non_numeric_gokart_port_names_the_setting(
    luigi_config: luigi.configuration.LuigiConfigParser,
) -> None:
    set_option(luigi_config, "TaskOnKart", "redis_host", "h")
    set_option(luigi_config, "TaskOnKart", "redis_port", "sixty")
    with pytest.raises(ConfigurationError, match=r"\[TaskOnKart\] redis_port='sixty'"):
        Settings.from_luigi_config()


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("localhost:6379", "must start with redis://"),
        ("http://localhost:6379", "must start with redis://"),
        ("redis://", "needs a host"),
        ("redis://localhost:port/0", "a port is a number from 1 to 65535"),
        ("redis://localhost:6379/zero", "must be a whole number"),
        ("redis://localhost:0/0", "the port must be a number from 1 to 65535"),
        ("redis://localhost:65536/0", "a port is a number from 1 to 65535"),
        ("redis://localhost:6379/1/2", "the database '1/2' .* must be a whole number"),
        ("redis://localhost:6379/99999999999", "must be a whole number from 0 to 2147483647"),
        ("redis://:pass#word@localhost:6379/0", "write a # in a password as %23"),
        ("unix://", "a unix:// URL needs a socket path"),
    ],
)
def test_malformed_redis_url_is_refused(url: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=f"redis_url.*{complaint}"):
        Settings(redis_url=url)


@pytest.mark.parametrize("name", LOCK_SERVICE_SETTINGS)
def test_a_refused_url_never_shows_its_password_and_names_its_setting(name: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings(**{name: "redis://user:hunter2@localhost:6379/db"})  # type: ignore[arg-type]
    assert raised.value.setting == name
    assert "hunter2" not in str(raised.value)
    assert "user:***@localhost" in str(raised.value)


def test_the_repr_of_settings_hides_every_redis_password_and_the_gcs_token() -> None:
    settings = Settings(
        redis_url="redis://user:hunter2@localhost:6379/0?client_name=app",
        local_redis_url="redis://:local-secret@near:6379/0",
        s3_redis_url="rediss://user:s3-redis-secret@far:6380/0",
        gcs_redis_url="redis://far:6379/0?password=gcs-redis-secret",
        gcs_token="ya29.secret-token",
        s3_endpoint_url="http://key:s3-secret@127.0.0.1:9000",
    )
    shown = repr(settings)
    for secret in (
        "hunter2",
        "local-secret",
        "s3-redis-secret",
        "gcs-redis-secret",
        "secret-token",
        "s3-secret",
    ):
        assert secret not in shown
    assert "redis_url='redis://user:***@localhost:6379/0?client_name=app'" in shown
    assert "s3_redis_url='rediss://user:***@far:6380/0'" in shown
    assert "gcs_token='***'" in shown


def test_a_gcs_token_that_is_not_text_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings(gcs_token=b"ya29.secret-token")  # type: ignore[arg-type]
    assert "secret-token" not in str(raised.value)
    assert "gcs_token" in str(raised.value)


def test_a_key_prefix_utf8_cannot_encode_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"key_prefix=.*UTF-8"):
        Settings(key_prefix="team-\ud800:")


def test_braces_in_a_key_prefix_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"gcs_key_prefix.*hash tag"):
        Settings(gcs_key_prefix="{gcs}:")


@given(st.text(max_size=30))
def test_any_lease_text_is_accepted_or_refused_clearly(raw: str) -> None:
    config = luigi.configuration.get_config()  # type: ignore[no-untyped-call]
    if not config.has_section("locked_targets"):
        config.add_section("locked_targets")
    set_option(config, "locked_targets", "lease_seconds", raw.replace("%", "%%"))
    try:
        settings, refusal = built_or_refused(Settings.from_luigi_config)
    finally:
        config.remove_option("locked_targets", "lease_seconds")
    if refusal is None:
        assert settings is not None
        assert settings.lease_seconds > settings.effective_renewal_interval_seconds > 0
    else:
        assert "lease_seconds" in refusal


@given(st.text(max_size=40))
def test_any_redis_url_is_accepted_or_refused_clearly(url: str) -> None:
    _, refusal = built_or_refused(lambda: Settings(redis_url=url))
    assert refusal is None or "redis_url" in refusal


@pytest.mark.parametrize(
    "field", [field for field in dataclasses.fields(Settings) if field.default is not None], ids=str
)
def test_every_setting_reads_its_default_back_as_its_own_type(
    luigi_config: luigi.configuration.LuigiConfigParser, field: dataclasses.Field[object]
) -> None:
    set_option(luigi_config, "locked_targets", field.name, str(field.default))
    value = getattr(Settings.from_luigi_config(), field.name)
    assert value == field.default
    assert type(value) is type(field.default)


def test_on_redis_error_is_read_as_one_of_its_values(
    luigi_config: luigi.configuration.LuigiConfigParser,
) -> None:
    set_option(luigi_config, "locked_targets", "on_redis_error", "wait")
    assert Settings.from_luigi_config().on_redis_error == "wait"


def test_an_unknown_on_redis_error_is_refused(luigi_config: luigi.configuration.LuigiConfigParser) -> None:
    set_option(luigi_config, "locked_targets", "on_redis_error", "sometimes")
    with pytest.raises(ConfigurationError, match="on_redis_error='sometimes': must be fail or wait"):
        Settings.from_luigi_config()


def test_an_unknown_on_redis_error_given_in_code_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="on_redis_error='Wait': must be fail or wait"):
        Settings(on_redis_error="Wait")  # type: ignore[arg-type]


def test_a_boolean_that_does_not_parse_names_the_setting(
    luigi_config: luigi.configuration.LuigiConfigParser,
) -> None:
    set_option(luigi_config, "locked_targets", "fail_on_collision", "maybe")
    with pytest.raises(ConfigurationError, match="fail_on_collision='maybe': must be true or false"):
        Settings.from_luigi_config()


def test_allow_eviction_is_read_from_the_section(luigi_config: luigi.configuration.LuigiConfigParser) -> None:
    set_option(luigi_config, "locked_targets", "allow_eviction", "true")
    assert Settings.from_luigi_config().allow_eviction is True


PER_STORAGE_URLS = ["local_redis_url", "s3_redis_url", "gcs_redis_url"]


def test_each_storage_kind_locks_on_its_own_url_read_from_the_section(
    luigi_config: luigi.configuration.LuigiConfigParser,
) -> None:
    urls = {
        "redis_url": "redis://shared-redis:6379/0",
        "local_redis_url": "redis://near-redis:6379/1",
        "s3_redis_url": "rediss://s3-redis:6380/2",
    }
    for name, url in urls.items():
        set_option(luigi_config, "locked_targets", name, url)
    settings = Settings.from_luigi_config()
    services = [
        lock_service_for(path, settings) for path in ("/cache/x.pkl", "s3://bkt/x.pkl", "gs://bkt/x.pkl")
    ]
    # gs:// has no URL of its own: it locks on redis_url.
    assert services == [
        LockService(name, urls[name]) for name in ("local_redis_url", "s3_redis_url", "redis_url")
    ]


def test_a_storage_kind_without_its_own_url_or_redis_url_has_no_lock_service() -> None:
    settings = Settings(s3_redis_url="redis://s3-redis:6379/0")
    assert settings.locking_enabled
    assert lock_service_for("/cache/x.pkl", settings) is None
    assert lock_service_for("gs://bkt/x.pkl", settings) is None


@pytest.mark.parametrize("name", PER_STORAGE_URLS)
def test_a_per_storage_url_alone_switches_locking_on(name: str) -> None:
    assert Settings(**{name: "redis://cache-redis:6379/0"}).locking_enabled  # type: ignore[arg-type]


def test_sentinel_password_goes_to_every_sentinel_url_and_no_other() -> None:
    urls = {
        "redis_url": "redis://shared:6379/0",
        "local_redis_url": "redis+sentinel://near-1:26379,near-2:26379/near-master",
        "s3_redis_url": "rediss+sentinel://far-1:26379/far-master/2",
    }
    settings = Settings(**urls, sentinel_password="sentinels-own")  # type: ignore[arg-type]
    with_password = {name: f"{url}?sentinel_password=sentinels-own" for name, url in urls.items()}
    assert {name: getattr(settings, name) for name in urls} == {
        **with_password,
        "redis_url": urls["redis_url"],
    }
    assert "sentinels-own" not in repr(settings)


def test_sentinel_password_without_any_sentinel_url_is_refused_naming_the_urls() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings(s3_redis_url="redis://far:6379/0", sentinel_password="sentinels-own")
    assert refused.value.setting == "sentinel_password"
    assert "none of redis_url, local_redis_url, s3_redis_url, gcs_redis_url is one" in str(refused.value)
    assert "sentinels-own" not in str(refused.value)


# The one-time memory of reported keys lasts the whole process, so each test below
# misspells a setting of its own.


def test_a_misspelt_setting_is_reported_with_the_nearest_name(
    luigi_config: luigi.configuration.LuigiConfigParser, caplog: pytest.LogCaptureFixture
) -> None:
    set_option(luigi_config, "locked_targets", "redis_ulr", "redis://cache-redis:6379/0")
    assert warnings_when_read(caplog) == [
        "[locked_targets] has an unknown setting redis_ulr; did you mean redis_url? It is ignored."
    ]


def test_a_misspelt_setting_is_reported_once_per_process(
    luigi_config: luigi.configuration.LuigiConfigParser, caplog: pytest.LogCaptureFixture
) -> None:
    set_option(luigi_config, "locked_targets", "lease_secnds", "90")
    assert len(warnings_when_read(caplog, times=2)) == 1


def test_a_key_close_to_no_setting_is_reported_with_all_their_names(
    luigi_config: luigi.configuration.LuigiConfigParser, caplog: pytest.LogCaptureFixture
) -> None:
    set_option(luigi_config, "locked_targets", "colour", "blue")
    [report] = warnings_when_read(caplog)
    assert (
        "unknown setting colour; the settings are redis_url, local_redis_url, s3_redis_url, gcs_redis_url,"
        in report
    )


def test_default_section_keys_are_not_reported(
    luigi_config: luigi.configuration.LuigiConfigParser, caplog: pytest.LogCaptureFixture
) -> None:
    # luigi's own set() refuses [DEFAULT]; configparser's writes it.
    ConfigParser.set(luigi_config, "DEFAULT", "owner", "team-a")
    try:
        with caplog.at_level(logging.WARNING):
            Settings.from_luigi_config()
    finally:
        luigi_config.remove_option("DEFAULT", "owner")
    assert reported(caplog) == []


def test_dashed_names_luigi_reads_are_not_reported(
    luigi_config: luigi.configuration.LuigiConfigParser, caplog: pytest.LogCaptureFixture
) -> None:
    set_option(luigi_config, "locked_targets", "lease-seconds", "90")
    with caplog.at_level(logging.WARNING), pytest.warns(DeprecationWarning, match="underscores"):
        settings = Settings.from_luigi_config()
    assert settings.lease_seconds == 90
    assert reported(caplog) == []


def test_a_misspelt_setting_in_a_toml_configuration_is_reported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    toml_config = luigi.configuration.LuigiTomlParser()
    toml_config.data = {"locked_targets": {"wait_timout_seconds": 60}}
    monkeypatch.setattr(luigi.configuration, "get_config", lambda: toml_config)
    assert warnings_when_read(caplog) == [
        "[locked_targets] has an unknown setting wait_timout_seconds; "
        "did you mean wait_timeout_seconds? It is ignored."
    ]


def reported(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the settings module logged."""
    return [record.getMessage() for record in caplog.records if record.name == "locked_targets.settings"]


def warnings_when_read(caplog: pytest.LogCaptureFixture, times: int = 1) -> list[str]:
    """What the settings module warns of while luigi's configuration is read ``times`` times."""
    with caplog.at_level(logging.WARNING):
        for _ in range(times):
            Settings.from_luigi_config()
    return reported(caplog)


def built_or_refused(build: Callable[[], Settings]) -> tuple[Settings | None, str | None]:
    """The settings, or the message of the ConfigurationError that refused them (any other error fails)."""
    try:
        return build(), None
    except ConfigurationError as error:
        return None, str(error)


# Settings are read once per configuration and reused: luigi builds targets on every
# complete(), input() and load(). Every kind of change below must still be seen at once.


def test_an_unchanged_configuration_gives_the_very_same_settings(
    luigi_config: luigi.configuration.LuigiConfigParser,
) -> None:
    set_option(luigi_config, "locked_targets", "redis_url", "redis://cache-redis:6379/0")
    assert Settings.from_luigi_config() is Settings.from_luigi_config()


def test_a_set_option_is_seen_at_once(luigi_config: luigi.configuration.LuigiConfigParser) -> None:
    set_option(luigi_config, "locked_targets", "lease_seconds", "90")
    Settings.from_luigi_config()
    set_option(luigi_config, "locked_targets", "lease_seconds", "120")
    assert Settings.from_luigi_config().lease_seconds == 120


def test_a_removed_option_is_seen_at_once(luigi_config: luigi.configuration.LuigiConfigParser) -> None:
    set_option(luigi_config, "locked_targets", "redis_url", "redis://cache-redis:6379/0")
    Settings.from_luigi_config()
    luigi_config.remove_option("locked_targets", "redis_url")
    assert Settings.from_luigi_config().redis_url is None


def test_a_changed_gokart_option_is_seen_at_once(luigi_config: luigi.configuration.LuigiConfigParser) -> None:
    set_option(luigi_config, "TaskOnKart", "redis_host", "gokart-redis")
    set_option(luigi_config, "TaskOnKart", "redis_port", "6379")
    Settings.from_luigi_config()
    set_option(luigi_config, "TaskOnKart", "redis_port", "6380")
    assert Settings.from_luigi_config().redis_url == "redis://gokart-redis:6380/0"


def test_a_changed_default_value_a_setting_refers_to_is_seen_at_once(
    luigi_config: luigi.configuration.LuigiConfigParser,
) -> None:
    # luigi's own set() refuses [DEFAULT]; configparser's writes it.
    ConfigParser.set(luigi_config, "DEFAULT", "cache_lease", "90")
    try:
        set_option(luigi_config, "locked_targets", "lease_seconds", "%(cache_lease)s")
        Settings.from_luigi_config()
        ConfigParser.set(luigi_config, "DEFAULT", "cache_lease", "120")
        assert Settings.from_luigi_config().lease_seconds == 120
    finally:
        luigi_config.remove_option("DEFAULT", "cache_lease")


def test_a_changed_environment_variable_a_setting_names_is_seen_at_once(
    luigi_config: luigi.configuration.LuigiConfigParser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCKED_TARGETS_TEST_REDIS_HOST", "first-redis")
    set_option(
        luigi_config, "locked_targets", "redis_url", "redis://${LOCKED_TARGETS_TEST_REDIS_HOST}:6379/0"
    )
    Settings.from_luigi_config()
    monkeypatch.setenv("LOCKED_TARGETS_TEST_REDIS_HOST", "second-redis")
    assert Settings.from_luigi_config().redis_url == "redis://second-redis:6379/0"


def test_different_task_parameters_get_their_own_settings(
    luigi_config: luigi.configuration.LuigiConfigParser,
) -> None:
    first = Settings.from_luigi_config(redis_host="task-redis", redis_port=7000)
    second = Settings.from_luigi_config(redis_host="task-redis", redis_port=7001)
    assert (first.redis_url, second.redis_url) == ("redis://task-redis:7000/0", "redis://task-redis:7001/0")


def test_a_new_luigi_parser_instance_is_seen_at_once(
    luigi_config: luigi.configuration.LuigiConfigParser, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_option(luigi_config, "locked_targets", "lease_seconds", "90")
    Settings.from_luigi_config()
    # What luigi's instance() does when there is none yet: a new parser that reads the files again.
    monkeypatch.setattr(luigi.configuration.LuigiConfigParser, "_instance", None)
    fresh = luigi.configuration.get_config()  # type: ignore[no-untyped-call]
    assert fresh is not luigi_config
    assert Settings.from_luigi_config().lease_seconds == Settings().lease_seconds


def test_a_switch_to_the_toml_parser_is_seen_at_once(
    luigi_config: luigi.configuration.LuigiConfigParser, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_option(luigi_config, "locked_targets", "lease_seconds", "90")
    Settings.from_luigi_config()
    toml_config = luigi.configuration.LuigiTomlParser()
    toml_config.data = {"locked_targets": {"lease_seconds": 120}}
    # luigi refuses its TOML parser unless the toml package is installed; the data is set here.
    monkeypatch.setattr(luigi.configuration.LuigiTomlParser, "enabled", True)
    monkeypatch.setattr(luigi.configuration.LuigiTomlParser, "_instance", toml_config)
    monkeypatch.setenv("LUIGI_CONFIG_PARSER", "toml")
    assert Settings.from_luigi_config().lease_seconds == 120


def test_a_change_to_the_toml_data_is_seen_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    toml_config = luigi.configuration.LuigiTomlParser()
    toml_config.data = {"locked_targets": {"lease_seconds": 90}}
    monkeypatch.setattr(luigi.configuration, "get_config", lambda: toml_config)
    Settings.from_luigi_config()
    toml_config.set("locked_targets", "lease_seconds", 120)  # type: ignore[no-untyped-call]
    assert Settings.from_luigi_config().lease_seconds == 120


def test_a_misspelt_setting_is_reported_once_across_changes_of_the_configuration(
    luigi_config: luigi.configuration.LuigiConfigParser, caplog: pytest.LogCaptureFixture
) -> None:
    set_option(luigi_config, "locked_targets", "wait_timeout_secs", "60")
    first = warnings_when_read(caplog)
    set_option(luigi_config, "locked_targets", "lease_seconds", "90")
    assert warnings_when_read(caplog) == first
    assert len(first) == 1
