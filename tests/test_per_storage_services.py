"""Per-storage lock services: local files lock on one real redis-server, S3 objects (moto) on another.

``local_redis_url`` and ``s3_redis_url`` name two servers started by the tests, with no
``redis_url`` at all. Where each lock lives is read from the keys on each server. A task
with an output on each storage takes a run lock on each server, in the order of their keys,
and two applications (spawned processes) running it compute it once.
"""

from __future__ import annotations

import multiprocessing.synchronize
import time
from collections.abc import Iterator
from pathlib import Path

import luigi
import luigi.configuration
import pytest

from helpers.lock_processes import SPAWN
from helpers.targets import locked_target
from helpers.waiting import eventually
from locked_targets import RunWithLock, make_target
from locked_targets.locks import LockNamespace, lock_for, lock_key_for
from locked_targets.rwlock import LockMode
from locked_targets.settings import Settings
from locked_targets.target import LockedTarget
from locked_targets.testing import RedisServer, append_line, read_lines

# Long enough for a second application to arrive while the first computes.
RUN_SECONDS = 1.0
DEADLINE_SECONDS = 120.0


@pytest.fixture
def services(private_redis: RedisServer) -> Iterator[dict[str, RedisServer]]:
    """A lock service per storage kind: the test's private server for local files, another for S3."""
    s3_service = RedisServer().start()
    try:
        yield {"local": private_redis, "s3": s3_service}
    finally:
        s3_service.stop()


@pytest.fixture
def options(services: dict[str, RedisServer], key_prefix: str, s3_endpoint: str) -> dict[str, str]:
    """The ``[locked_targets]`` section of the applications: a lock service per storage kind."""
    return {
        "local_redis_url": services["local"].url,
        "s3_redis_url": services["s3"].url,
        "key_prefix": key_prefix,
        "s3_endpoint_url": s3_endpoint,
        "lease_seconds": "30",
    }


@pytest.fixture
def settings_of_both(options: dict[str, str]) -> Settings:
    return Settings(**{**options, "lease_seconds": 30})  # type: ignore[arg-type]


def lock_keys_on(server: RedisServer, key_prefix: str) -> list[str]:
    return sorted(key.decode() for key in server.client().scan_iter(match=f"{key_prefix}*"))


def test_a_local_target_locks_on_the_local_service_and_an_s3_target_on_the_s3_one(
    services: dict[str, RedisServer],
    settings_of_both: Settings,
    key_prefix: str,
    tmp_path: Path,
    s3_root: str,
) -> None:
    local_path, s3_path = str(tmp_path / "features.pkl"), f"{s3_root}/features.pkl"
    for path in (local_path, s3_path):
        target = locked_target(path, settings_of_both)
        target.dump(path)
        assert target.load() == path

    on_local, on_s3 = (lock_keys_on(services[kind], key_prefix) for kind in ("local", "s3"))
    assert lock_key_for(local_path, settings_of_both).fence in on_local
    assert lock_key_for(s3_path, settings_of_both).fence in on_s3
    assert all(key.startswith(f"{key_prefix}local:") for key in on_local), on_local
    assert all(key.startswith(f"{key_prefix}s3:") for key in on_s3), on_s3


class OnBothServices(luigi.Task):
    """A task with one output on the local cache and one on S3, computed under its run lock."""

    local_path = luigi.Parameter()
    s3_path = luigi.Parameter()
    side_log = luigi.Parameter()

    def output(self) -> list[LockedTarget]:
        settings = Settings.from_luigi_config()
        return [
            make_target(path, settings=settings, task=self.task_id)
            for path in (self.local_path, self.s3_path)
        ]

    @RunWithLock
    def run(self) -> None:
        append_line(self.side_log, "computed")
        time.sleep(RUN_SECONDS)
        for target in self.output():
            target.dump("computed")


def build_on_both_services(
    options: dict[str, str],
    task_parameters: dict[str, str],
    start: multiprocessing.synchronize.Barrier | None,
) -> None:
    """In a spawned process: ``luigi.build(OnBothServices)``, as an application configured by ``options``."""
    config = luigi.configuration.get_config()  # type: ignore[no-untyped-call]
    if not config.has_section("locked_targets"):
        config.add_section("locked_targets")
    for name, value in options.items():
        config.set("locked_targets", name, value)
    if start is not None:
        start.wait(DEADLINE_SECONDS)
    task = OnBothServices(**task_parameters)
    assert luigi.build([task], local_scheduler=True, log_level="WARNING")  # type: ignore[no-untyped-call]


@pytest.fixture
def task_parameters(tmp_path: Path, s3_root: str) -> dict[str, str]:
    return {
        "local_path": str(tmp_path / "cache" / "report.pkl"),
        "s3_path": f"{s3_root}/cache/report.pkl",
        "side_log": str(tmp_path / "side.log"),
    }


def test_a_task_with_outputs_on_both_services_takes_a_run_lock_on_each_in_key_order_and_releases_both(
    services: dict[str, RedisServer],
    options: dict[str, str],
    settings_of_both: Settings,
    task_parameters: dict[str, str],
) -> None:
    local_run = lock_key_for(task_parameters["local_path"], settings_of_both, LockNamespace.RUN)
    s3_run = lock_key_for(task_parameters["s3_path"], settings_of_both, LockNamespace.RUN)
    assert local_run.base < s3_run.base, "the local run lock's key sorts first: it is taken first"
    other_application = lock_for(
        task_parameters["local_path"],
        settings_of_both,
        namespace=LockNamespace.RUN,
        wait_timeout_seconds=None,
    ).acquire(LockMode.EXCLUSIVE)
    application = SPAWN.Process(target=build_on_both_services, args=(options, task_parameters, None))
    application.start()
    try:
        eventually(
            lambda: services["local"].client().zcard(local_run.waiting_writers) == 1,
            "the application to wait for the run lock",
            DEADLINE_SECONDS,
        )
        assert services["s3"].client().exists(*s3_run.every_key) == 0, (
            "the S3 run lock was taken before the local one"
        )
    finally:
        other_application.release()
        application.join(DEADLINE_SECONDS)

    assert application.exitcode == 0
    assert services["s3"].client().exists(s3_run.fence) == 1, "the S3 run lock was taken on the S3 service"
    assert services["local"].client().exists(local_run.writer) == 0
    assert services["s3"].client().exists(s3_run.writer) == 0
    assert read_lines(Path(task_parameters["side_log"])) == ["computed"]


def test_two_applications_running_a_task_with_outputs_on_both_services_compute_it_once(
    options: dict[str, str], settings_of_both: Settings, task_parameters: dict[str, str]
) -> None:
    start = SPAWN.Barrier(2)
    applications = [
        SPAWN.Process(target=build_on_both_services, args=(options, task_parameters, start)) for _ in range(2)
    ]
    for application in applications:
        application.start()
    for application in applications:
        application.join(DEADLINE_SECONDS)

    assert [application.exitcode for application in applications] == [0, 0]
    assert read_lines(Path(task_parameters["side_log"])) == ["computed"]
    for path in (task_parameters["local_path"], task_parameters["s3_path"]):
        assert locked_target(path, settings_of_both).load() == "computed"
