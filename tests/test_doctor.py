"""``locked-targets doctor`` against real servers: a private redis-server, moto's S3 server, the GCS emulator.

Each test runs the command as a separate process (``python -m locked_targets``), as an
operator would, with a luigi configuration of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from helpers.clusters import started_cluster
from helpers.header_dropping_proxy import header_dropping_proxy
from helpers.object_stores import GCS_PROJECT, GCS_TOKEN
from locked_targets.testing import ClusterDeployment, RedisServer, free_port

DEADLINE_SECONDS = 120.0
USER_PASSWORD = "hunter2-doctor"
CACHED_FILE = "features.pkl"


def luigi_config(tmp_path: Path, redis_url: str, **settings: str) -> Path:
    """A luigi configuration: the Redis, other ``[locked_targets]`` settings, a workspace of its own."""
    workspace = tmp_path / "cache"
    workspace.mkdir(exist_ok=True)
    path = tmp_path / "luigi.cfg"
    lines = [f"{name} = {value}" for name, value in {"redis_url": redis_url, **settings}.items()]
    path.write_text(
        "[locked_targets]\n" + "\n".join(lines) + f"\n[TaskOnKart]\nworkspace_directory = {workspace}\n"
    )
    return path


def doctor(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """``locked-targets --config CONFIG doctor ARGUMENTS`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "locked_targets", "--config", str(config), "doctor", *arguments],
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS,
        cwd=config.parent,
        env={**os.environ, "COLUMNS": "300"},
        check=False,
    )


def doctor_json(config: Path, *paths: str) -> tuple[int, list[dict[str, Any]]]:
    """The exit status and the checks of ``doctor --json PATHS``."""
    result = doctor(config, "--json", *paths)
    checks: list[dict[str, Any]] = json.loads(result.stdout)["checks"]
    return result.returncode, checks


def only_check(checks: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (check,) = [check for check in checks if check["name"] == name]
    return check


def not_fine(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [check for check in checks if check["status"] in ("warning", "problem")]


def test_a_healthy_set_up_passes_every_check(
    tmp_path: Path, private_redis: RedisServer, s3_endpoint: str, s3_root: str
) -> None:
    client = private_redis.client()
    client.config_set("dir", str(tmp_path))
    client.config_set("appendonly", "yes")
    config = luigi_config(tmp_path, private_redis.url, s3_endpoint_url=s3_endpoint)
    status, checks = doctor_json(config, s3_root)
    assert not_fine(checks) == []
    assert status == 0
    assert {"scripts", "channels", "maxmemory_policy", "persistence", "hard_links", "create_if_absent"} <= {
        check["name"] for check in checks
    }


def test_an_eviction_policy_other_than_noeviction_is_a_problem(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    private_redis.client().config_set("maxmemory-policy", "allkeys-lru")
    status, checks = doctor_json(luigi_config(tmp_path, private_redis.url))
    policy = only_check(checks, "maxmemory_policy")
    assert status == 1
    assert policy["status"] == "problem"
    assert "allkeys-lru" in policy["detail"]
    assert "maxmemory-policy noeviction" in policy["fix"]


def test_the_table_shows_a_problem_with_its_fix(tmp_path: Path, private_redis: RedisServer) -> None:
    private_redis.client().config_set("maxmemory-policy", "volatile-ttl")
    result = doctor(luigi_config(tmp_path, private_redis.url))
    assert result.returncode == 1
    assert "problem" in result.stdout
    assert "set maxmemory-policy noeviction" in result.stdout


@pytest.mark.parametrize("missing", ["evalsha", "publish"])
def test_a_user_missing_a_permission_is_a_problem_naming_the_acl_rule(
    tmp_path: Path, private_redis: RedisServer, missing: str
) -> None:
    private_redis.client().acl_setuser(
        "pipelines",
        enabled=True,
        passwords=[f"+{USER_PASSWORD}"],
        keys=["*"],
        commands=["+@all", f"-{missing}"],
    )
    url = f"redis://pipelines:{USER_PASSWORD}@127.0.0.1:{private_redis.port}/0"
    result = doctor(luigi_config(tmp_path, url), "--json")
    problems = [check for check in json.loads(result.stdout)["checks"] if check["status"] == "problem"]
    assert result.returncode == 1
    assert any(f"+{missing}" in check["fix"].split() for check in problems), problems
    assert USER_PASSWORD not in result.stdout + result.stderr


def test_an_s3_endpoint_that_ignores_if_none_match_is_a_problem(
    tmp_path: Path, private_redis: RedisServer, s3_endpoint: str, s3_root: str
) -> None:
    with header_dropping_proxy(s3_endpoint, "If-None-Match") as careless_endpoint:
        config = luigi_config(tmp_path, private_redis.url, s3_endpoint_url=careless_endpoint)
        status, checks = doctor_json(config, s3_root)
    create_if_absent = only_check(checks, "create_if_absent")
    assert status == 1
    assert create_if_absent["status"] == "problem"
    assert "replaced" in create_if_absent["detail"]
    assert "If-None-Match" in create_if_absent["fix"]


def test_the_gcs_check_reports_what_the_endpoint_did_with_a_precondition(
    tmp_path: Path, private_redis: RedisServer, gcs_endpoint: str, gcs_root: str
) -> None:
    # The emulator ignores preconditions: only real GCS can show that an object is never replaced.
    config = luigi_config(
        tmp_path,
        private_redis.url,
        gcs_endpoint_url=gcs_endpoint,
        gcs_token=GCS_TOKEN,
        gcs_project=GCS_PROJECT,
    )
    _status, checks = doctor_json(config, gcs_root)
    (create_if_absent,) = [check for check in checks if check["subject"] == gcs_root]
    assert create_if_absent["name"] == "create_if_absent"
    assert create_if_absent["status"] in ("ok", "problem")
    assert "ifGenerationMatch=0" in create_if_absent["detail"]


def test_without_persistence_a_warning_alone_exits_0(tmp_path: Path, private_redis: RedisServer) -> None:
    status, checks = doctor_json(luigi_config(tmp_path, private_redis.url))  # --save "" --appendonly no
    assert [(check["name"], check["status"]) for check in not_fine(checks)] == [("persistence", "warning")]
    assert "forgets every lock" in only_check(checks, "persistence")["detail"]
    assert status == 0


def test_an_unreachable_redis_is_a_problem_naming_the_address_not_the_password(tmp_path: Path) -> None:
    port = free_port()
    result = doctor(luigi_config(tmp_path, f"redis://:{USER_PASSWORD}@127.0.0.1:{port}/0"), "--json")
    connection = only_check(json.loads(result.stdout)["checks"], "connection")
    assert result.returncode == 1
    assert connection["status"] == "problem"
    assert f"127.0.0.1:{port}" in connection["detail"]
    assert USER_PASSWORD not in result.stdout + result.stderr


def test_doctor_leaves_the_cache_as_it_found_it(
    tmp_path: Path, private_redis: RedisServer, s3_endpoint: str, s3_root: str
) -> None:
    config = luigi_config(tmp_path, private_redis.url, s3_endpoint_url=s3_endpoint)
    cached = tmp_path / "cache" / CACHED_FILE
    cached.write_bytes(b"computed")
    bucket = boto3.resource("s3", endpoint_url=s3_endpoint).Bucket(s3_root.removeprefix("s3://"))
    bucket.put_object(Key=CACHED_FILE, Body=b"computed")
    doctor_json(config, s3_root)
    assert os.listdir(cached.parent) == [CACHED_FILE]
    assert cached.read_bytes() == b"computed"
    assert [summary.key for summary in bucket.objects.all()] == [CACHED_FILE]
    assert bucket.Object(CACHED_FILE).get()["Body"].read() == b"computed"
    assert private_redis.client().dbsize() == 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    """The wheel's Redis 6.2 cluster, shared by this module's cluster tests."""
    with started_cluster(str(tmp_path_factory.mktemp("cluster")), "6.2") as started:
        yield started


def test_a_healthy_cluster_passes_every_check_of_each_master(
    tmp_path: Path, cluster: ClusterDeployment
) -> None:
    status, checks = doctor_json(luigi_config(tmp_path, cluster.url))
    masters = {f"127.0.0.1:{port}" for port in cluster.masters()}
    assert status == 0
    # The cluster's nodes keep no append-only file: one warning per master, nothing else.
    assert sorted((check["name"], check["server"]) for check in not_fine(checks)) == sorted(
        ("persistence", master) for master in masters
    )
    for name in ("version", "role", "maxmemory_policy"):
        assert {(check["server"], check["status"]) for check in checks if check["name"] == name} == {
            (master, "ok") for master in masters
        }
    assert {
        check["status"] for check in checks if check["name"] in ("cluster_slots", "scripts", "channels")
    } == {"ok"}


def test_an_eviction_policy_on_one_master_of_a_cluster_is_a_problem_naming_that_master(
    tmp_path: Path, cluster: ClusterDeployment
) -> None:
    master = cluster.masters()[-1]
    cluster.client(master).config_set("maxmemory-policy", "volatile-lru")
    try:
        status, checks = doctor_json(luigi_config(tmp_path, cluster.url))
    finally:
        cluster.client(master).config_set("maxmemory-policy", "noeviction")
    (problem,) = [check for check in checks if check["status"] == "problem"]
    assert status == 1
    assert (problem["name"], problem["server"]) == ("maxmemory_policy", f"127.0.0.1:{master}")
    assert "volatile-lru" in problem["detail"]


def test_doctor_checks_every_lock_service_the_settings_name(
    tmp_path: Path, private_redis: RedisServer, redis_url: str
) -> None:
    status, checks = doctor_json(luigi_config(tmp_path, redis_url, s3_redis_url=private_redis.url))
    connected = [check for check in checks if check["name"] == "connection"]
    assert status == 0
    assert [check["server"] is None and check["status"] for check in connected] == ["ok", "ok"]
    assert len({check["subject"] for check in connected}) == 2
