"""The ``locked-targets`` command against a real Redis, with real holders in other OS processes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import luigi.configuration
import pytest
from click.testing import CliRunner, Result

from helpers.clusters import clusters_by_version
from locked_targets.cli import main
from locked_targets.locks import lock_key_for
from locked_targets.settings import Settings
from locked_targets.testing import (
    ClusterDeployment,
    LaunchedProcess,
    ProcessGroup,
    ProcessSpec,
    RedisServer,
    free_port,
)

# Short leases, so that a stopped holder's lease visibly runs down: renewed every 2 s, and
# counted as no longer renewed below 3 s left (6 s less 1.5 renewal intervals).
LEASE_SECONDS = 6.0
DEADLINE_SECONDS = 30.0

# Takes the lock of a path in a mode (waiting as long as it takes), says "held <pid>", holds it
# until a line arrives on its stdin, then asks Redis whether it still holds it (as a refused
# commit does), releases it and says how that went.
LOCK_USER = """
import os, sys
from locked_targets.locks import lock_for
from locked_targets.rwlock import LockMode
from locked_targets.settings import Settings

path, mode, redis_url, key_prefix, lease = sys.argv[1:]
settings = Settings(
    redis_url=redis_url, key_prefix=key_prefix, lease_seconds=float(lease), shared_lease_idle_seconds=0
)
held = lock_for(path, settings, task="Features_0123", wait_timeout_seconds=None).acquire(LockMode(mode))
print("held", os.getpid(), flush=True)
sys.stdin.readline()
try:
    held.verify("asked once the test let it go on")
    held.release()
except Exception as error:
    print("released:", type(error).__name__, flush=True)
else:
    print("released: ok", flush=True)
"""

# Dumps its name to a LockedTarget at a path; with "stall", once the file is written and before
# the commit, says "stalled <pid>" and waits for a line on its stdin. Says how the dump ended.
DUMPER = """
import os, sys
from gokart.file_processor import FileProcessor, make_file_processor
from locked_targets import LockLost, Settings, make_target

path, writer, stall, redis_url, key_prefix, lease = sys.argv[1:]


class StallsBeforeCommit(FileProcessor):
    def __init__(self, inner):
        self.inner = inner

    def format(self):
        return self.inner.format()

    def load(self, file):
        return self.inner.load(file)

    def dump(self, obj, file):
        self.inner.dump(obj, file)
        if stall == "stall":
            print("stalled", os.getpid(), flush=True)
            sys.stdin.readline()


settings = Settings(redis_url=redis_url, key_prefix=key_prefix, lease_seconds=float(lease))
target = make_target(path, processor=StallsBeforeCommit(make_file_processor(path)), settings=settings)
try:
    target.dump(writer)
except LockLost as lost:
    print("LockLost", lost, flush=True)
else:
    print("dumped", flush=True)
"""


@pytest.fixture(autouse=True)
def luigi_config_restored() -> Iterator[None]:
    """The command adds its --config file to luigi's configuration: luigi's own is restored after."""
    parser = luigi.configuration.LuigiConfigParser
    config_paths = list(parser._config_paths)
    yield
    parser._config_paths[:] = config_paths
    parser._instance = None  # built again from luigi's own files at the next use


@pytest.fixture
def path(tmp_path: Path) -> str:
    """A cache file of the test's own."""
    return str(tmp_path / "features.pkl")


@pytest.fixture
def config_file(tmp_path: Path, settings: Settings) -> str:
    """A luigi configuration naming the test's Redis and key prefix, with short leases."""
    path = tmp_path / "luigi.cfg"
    path.write_text(
        f"[locked_targets]\nredis_url = {settings.redis_url}\nkey_prefix = {settings.key_prefix}\n"
        f"lease_seconds = {LEASE_SECONDS}\n"
    )
    return str(path)


def cli(config_file: str, *arguments: str) -> Result:
    """Run the command in this process, as ``locked-targets --config CONFIG ARGUMENTS``."""
    return CliRunner().invoke(main, ["--config", config_file, *arguments])


def cli_json(config_file: str, *arguments: str) -> Any:
    return json.loads(cli(config_file, "--json", *arguments).stdout)


def lock_users(settings: Settings, *uses: tuple[str, str], lease: float = LEASE_SECONDS) -> ProcessGroup:
    """One process per (path, mode), each taking that lock; they release when told to (``release``)."""
    assert settings.redis_url is not None
    specs = [
        ProcessSpec(
            name=f"{mode}-{number}",
            arguments=[path, mode, settings.redis_url, settings.key_prefix, str(lease)],
        )
        for number, (path, mode) in enumerate(uses)
    ]
    return ProcessGroup([sys.executable, "-c", LOCK_USER], specs, held_for_release=True)


def dumper(settings: Settings, path: str, writer: str, *, stall: bool) -> ProcessGroup:
    assert settings.redis_url is not None
    spec = ProcessSpec(
        name=writer,
        arguments=[
            path,
            writer,
            "stall" if stall else "no",
            settings.redis_url,
            settings.key_prefix,
            str(LEASE_SECONDS),
        ],
    )
    return ProcessGroup([sys.executable, "-c", DUMPER], [spec], held_for_release=stall)


@dataclasses.dataclass(frozen=True)
class Holder:
    """Another process that holds a lock."""

    process: LaunchedProcess
    pid: int

    def let_go(self) -> str:
        """Let it ask Redis whether it still holds the lock, and release it: 'ok', or the error it met."""
        self.process.release()
        return self.process.wait_for_line("released:", time.monotonic() + DEADLINE_SECONDS)


@contextlib.contextmanager
def holding(settings: Settings, path: str, mode: str, lease: float = LEASE_SECONDS) -> Iterator[Holder]:
    """Another process holding the lock of ``path`` in ``mode``, from when it holds it."""
    with lock_users(settings, (path, mode), lease=lease) as users:
        yield Holder(users.processes[0], held_pid(users.processes[0]))


@contextlib.contextmanager
def waiting_writer(settings: Settings, config_file: str, path: str) -> Iterator[dict[str, Any]]:
    """Another process waiting for the write lock of ``path``; the lock as ``inspect`` shows it then."""
    with lock_users(settings, (path, "write")):
        yield waited_for(config_file, path)


def held_pid(process: LaunchedProcess, marker: str = "held") -> int:
    return int(process.wait_for_line(marker, time.monotonic() + DEADLINE_SECONDS))


def until(found: Any, what: str) -> Any:
    """Ask ``found()`` again until it answers something true; that answer (bounded by the deadline)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        answer = found()
        if answer:
            return answer
        time.sleep(0.1)
    raise AssertionError(f"never saw {what}")


def only_lock(config_file: str, *arguments: str) -> dict[str, Any]:
    (lock,) = cli_json(config_file, *arguments)["locks"]
    result: dict[str, Any] = lock
    return result


def waited_for(config_file: str, path: str) -> dict[str, Any]:
    """The lock of ``path`` once a writer waits for it."""
    lock: dict[str, Any] = until(
        lambda: (lock := only_lock(config_file, "inspect", path))["waiting_writers"] and lock,
        f"a writer waiting for {path}",
    )
    return lock


def test_ls_shows_the_path_mode_pid_lease_and_waiting_writer_of_a_lock(
    path: str, settings: Settings, config_file: str
) -> None:
    with holding(settings, path, "read") as reader, waiting_writer(settings, config_file, path):
        (lock,) = cli_json(config_file, "ls")["locks"]
    assert (lock["path"], lock["mode"], lock["storage"], lock["namespace"]) == (
        path,
        "read",
        "local",
        "target",
    )
    (holder,) = lock["holders"]
    assert (holder["pid"], holder["task"], holder["lock"]) == (reader.pid, "Features_0123", "read lock")
    assert 0 < holder["lease_left_seconds"] <= LEASE_SECONDS
    (waiting,) = lock["waiting_writers"]
    assert waiting["mode"] == "write"
    assert waiting["pid"] not in (None, reader.pid)


def test_ls_table_names_the_path_and_the_holders_pid(path: str, settings: Settings, config_file: str) -> None:
    with holding(settings, path, "write") as writer:
        result = CliRunner(env={"COLUMNS": "300"}).invoke(main, ["--config", config_file, "ls"])
    assert result.exit_code == 0, result.output
    assert path in result.stdout
    assert f"pid {writer.pid}" in result.stdout


def test_ls_filters_by_holders_waiters_and_namespace(
    tmp_path: Path, settings: Settings, config_file: str
) -> None:
    contended, quiet = str(tmp_path / "contended.pkl"), str(tmp_path / "quiet.pkl")
    with (
        holding(settings, contended, "read"),
        holding(settings, quiet, "read"),
        waiting_writer(settings, config_file, contended),
    ):
        held = cli_json(config_file, "ls", "--held")["locks"]
        waited = cli_json(config_file, "ls", "--waiting")["locks"]
        runs = cli_json(config_file, "ls", "--namespace", "run")["locks"]
    assert {lock["path"] for lock in held} == {contended, quiet}
    assert [lock["path"] for lock in waited] == [contended]
    assert runs == []


def test_inspect_shows_the_writer_and_fencing_token_of_a_path(
    path: str, settings: Settings, config_file: str
) -> None:
    with holding(settings, path, "write") as writer:
        lock = only_lock(config_file, "inspect", path)
    assert lock["mode"] == "write"
    assert [holder["pid"] for holder in lock["holders"]] == [writer.pid]
    assert lock["holders"][0]["renewed"] is True
    assert isinstance(lock["fencing_token"], int)


def test_inspect_of_a_holder_past_its_lease_says_so_and_exits_1(
    path: str, settings: Settings, config_file: str
) -> None:
    # The long-lived reader keeps the readers' key alive, so the killed one's entry outlives its lease.
    with holding(settings, path, "read", lease=1.0) as short, holding(settings, path, "read"):
        os.kill(short.pid, signal.SIGKILL)
        result = until(
            lambda: (answer := cli(config_file, "--json", "inspect", path)).exit_code == 1 and answer,
            "the killed reader past its lease",
        )
    (lock,) = json.loads(result.stdout)["locks"]
    (problem,) = lock["problems"]
    assert f"pid {short.pid}" in problem
    assert "past its lease" in problem


def test_status_counts_held_locks_and_waiting_writers(
    path: str, settings: Settings, config_file: str
) -> None:
    with holding(settings, path, "write") as writer, waiting_writer(settings, config_file, path):
        result = cli(config_file, "--json", "status")
    assert result.exit_code == 0, result.output
    (service,) = json.loads(result.stdout)["services"]
    assert service["server"]["role"] == "master"
    assert service["server"]["maxmemory_policy"] == "noeviction"
    assert service["held_locks"] == {"read": 0, "write": 1}
    assert service["waiting_writers"] == 1
    assert (service["oldest_holder"]["path"], service["oldest_holder"]["pid"]) == (path, writer.pid)
    assert service["longest_wait"]["path"] == path


class Watcher:
    """``python -m locked_targets ... --json watch``, its lines read as they come."""

    def __init__(self, config_file: str, *arguments: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "locked_targets", "--config", config_file, "--json", "watch", *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def next_document(self, timeout: float) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        document: dict[str, Any] = json.loads(line)
        return document


def test_watch_shows_a_release_within_a_second(path: str, settings: Settings, config_file: str) -> None:
    with holding(settings, path, "write") as writer:
        assert_watch_shows_the_release(config_file, writer, path)


def test_break_lets_the_waiting_writer_in_at_once_and_the_broken_dump_raises_lock_lost(
    path: str, settings: Settings, config_file: str
) -> None:
    with dumper(settings, path, "holder", stall=True) as holder:
        held_pid(holder.processes[0], "stalled")
        with dumper(settings, path, "waiter", stall=False) as waiter:
            waited_for(config_file, path)
            result = cli(config_file, "break", path, "--yes", "--reason", "holder hung")
            assert result.exit_code == 0, result.output
            # The holder is alive and renewing: without the break the waiter would wait for ever.
            waiter.processes[0].wait_for_line("dumped", time.monotonic() + 5.0)
        holder.release()
        lost = holder.processes[0].wait_for_line("LockLost", time.monotonic() + DEADLINE_SECONDS)
    assert path in lost
    with open(path, "rb") as file:
        assert pickle.load(file) == "waiter"


def test_break_without_yes_refuses_while_the_holder_renews(
    path: str, settings: Settings, config_file: str
) -> None:
    with holding(settings, path, "write") as writer:
        result = cli(config_file, "break", path)
        still = only_lock(config_file, "inspect", path)["holders"]
        assert writer.let_go() == "ok"
    assert result.exit_code == 1
    assert "refused" in result.output
    assert "--yes" in result.output
    assert [holder["pid"] for holder in still] == [writer.pid]


def test_break_without_yes_goes_ahead_once_the_holder_stopped_renewing(
    path: str, settings: Settings, config_file: str
) -> None:
    with holding(settings, path, "write") as writer:
        os.kill(writer.pid, signal.SIGSTOP)
        try:
            until(
                lambda: not only_lock(config_file, "inspect", path)["holders"][0]["renewed"],
                "the stopped holder's lease run down",
            )
            result = cli(config_file, "break", path)
        finally:
            os.kill(writer.pid, signal.SIGCONT)
        assert writer.let_go() == "LockLost"
    assert result.exit_code == 0, result.output


def test_break_records_who_broke_the_lock_and_why_and_advances_the_fencing_token(
    path: str, settings: Settings, config_file: str
) -> None:
    with holding(settings, path, "write"):
        granted = only_lock(config_file, "inspect", path)["fencing_token"]
        broken = cli_json(config_file, "break", path, "--yes", "--reason", "host lost")
        lock = only_lock(config_file, "inspect", path)
    assert broken["broken"] is True
    assert broken["holders_removed"] == 1
    assert lock["holders"] == []
    assert (lock["broken"]["reason"], lock["broken"]["pid"]) == ("host lost", os.getpid())
    assert lock["fencing_token"] == broken["fencing_token"] > granted


def test_an_unknown_option_value_exits_2(config_file: str) -> None:
    result = cli(config_file, "ls", "--storage", "floppy")
    assert result.exit_code == 2
    assert "floppy" in result.output


def test_without_a_redis_url_exits_2_and_says_where_to_set_one(tmp_path: Path) -> None:
    empty = tmp_path / "empty.cfg"
    empty.write_text("[core]\n")
    result = CliRunner().invoke(main, ["--config", str(empty), "ls"])
    assert result.exit_code == 2
    assert "redis_url" in result.output


def test_an_unreachable_redis_exits_1_without_showing_the_password(config_file: str) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = cli(config_file, "--redis-url", url, "status")
    assert result.exit_code == 1
    assert "unavailable" in result.output
    assert "hunter2" not in result.output


# On a Redis Cluster: locks on every master, each read and broken at the master of its slot.


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], ClusterDeployment]]:
    """The module's clusters by version ("6.2": the wheel's; "7": skipped without one), each started at
    its first use and shared by the tests after (none fails a master over)."""
    with clusters_by_version(tmp_path_factory) as of:
        yield of


@pytest.fixture
def cluster(clusters: Callable[[str], ClusterDeployment]) -> ClusterDeployment:
    return clusters("6.2")


def cluster_config(tmp_path: Path, cluster: ClusterDeployment, key_prefix: str) -> tuple[Settings, str]:
    """Settings naming the cluster, and a luigi configuration with them."""
    settings = Settings(redis_url=cluster.url, key_prefix=key_prefix, lease_seconds=LEASE_SECONDS)
    config = tmp_path / "cluster.cfg"
    config.write_text(
        f"[locked_targets]\nredis_url = {cluster.url}\nkey_prefix = {key_prefix}\n"
        f"lease_seconds = {LEASE_SECONDS}\n"
    )
    return settings, str(config)


def paths_on_each_master(tmp_path: Path, cluster: ClusterDeployment, settings: Settings) -> dict[int, str]:
    """A cache path whose lock lives on each master, by the master's port."""
    found: dict[int, str] = {}
    for number in range(200):
        path = str(tmp_path / f"file-{number}.pkl")
        found.setdefault(cluster.master_of(lock_key_for(path, settings).writer), path)
        if len(found) == len(cluster.masters()):
            return found
    raise AssertionError("found no path for some master")


def test_ls_on_a_cluster_shows_the_locks_held_on_every_master(
    tmp_path: Path, cluster: ClusterDeployment, key_prefix: str
) -> None:
    settings, config = cluster_config(tmp_path, cluster, key_prefix)
    on_master = paths_on_each_master(tmp_path, cluster, settings)
    with lock_users(settings, *((path, "write") for path in on_master.values())):
        locks = until(
            lambda: len(found := cli_json(config, "ls")["locks"]) == len(on_master) and found,
            "a lock on every master",
        )
    assert {(lock["path"], lock["server"]) for lock in locks} == {
        (path, f"127.0.0.1:{port}") for port, path in on_master.items()
    }
    assert all(len(lock["holders"]) == 1 for lock in locks)


def test_status_of_a_cluster_reports_the_health_of_each_master(
    tmp_path: Path, cluster: ClusterDeployment, key_prefix: str
) -> None:
    _settings, config = cluster_config(tmp_path, cluster, key_prefix)
    result = cli(config, "--json", "status")
    assert result.exit_code == 0, result.output
    (service,) = json.loads(result.stdout)["services"]
    assert sorted(server["address"] for server in service["servers"]) == [
        f"127.0.0.1:{port}" for port in cluster.masters()
    ]
    assert {(server["role"], server["maxmemory_policy"]) for server in service["servers"]} == {
        ("master", "noeviction")
    }


def test_inspect_and_break_a_lock_on_a_master_other_than_the_first_node(
    tmp_path: Path, cluster: ClusterDeployment, key_prefix: str
) -> None:
    settings, config = cluster_config(tmp_path, cluster, key_prefix)
    first_node = cluster.ports[0]
    port, path = next(
        (port, path)
        for port, path in paths_on_each_master(tmp_path, cluster, settings).items()
        if port != first_node
    )
    with holding(settings, path, "write") as writer:
        inspected = only_lock(config, "inspect", path)
        broken = cli_json(config, "break", path, "--yes", "--reason", "test")
        assert writer.let_go() == "LockLost"
    assert (inspected["server"], [holder["pid"] for holder in inspected["holders"]]) == (
        f"127.0.0.1:{port}",
        [writer.pid],
    )
    assert (broken["broken"], broken["holders_removed"], broken["server"]) == (True, 1, f"127.0.0.1:{port}")


@pytest.mark.parametrize("version", ["6.2", "7"], ids=["redis-6.2", "redis-7"])
def test_watch_on_a_cluster_shows_a_release_within_a_second(
    tmp_path: Path, clusters: Callable[[str], ClusterDeployment], version: str, key_prefix: str
) -> None:
    # On Redis 7 the release is SPUBLISHed at the master of the lock's slot: only a sharded
    # subscription there hears it.
    settings, config = cluster_config(tmp_path, clusters(version), key_prefix)
    path = str(tmp_path / "features.pkl")
    with holding(settings, path, "write") as writer:
        assert_watch_shows_the_release(config, writer, path)


def assert_watch_shows_the_release(config: str, writer: Holder, path: str) -> None:
    """A watcher refreshed every 60 s unless a lock publishes: a prompt refresh shows the channel woke it."""
    watcher = Watcher(config, "--interval", "60")
    try:
        first = watcher.next_document(timeout=DEADLINE_SECONDS)
        assert [lock["path"] for lock in first["locks"]] == [path]
        writer.process.release()
        released_at = time.monotonic()
        after = watcher.next_document(timeout=DEADLINE_SECONDS)
        shown_after = time.monotonic() - released_at
        assert after["locks"] == []
        assert shown_after < 1.0 + 2.0  # a second, and generous room for a busy machine
        watcher.process.send_signal(signal.SIGINT)
        assert watcher.process.wait(timeout=DEADLINE_SECONDS) == 0
    finally:
        watcher.process.kill()


# Several lock services: a local cache's locks on a Redis of their own, the others' on redis_url.


@pytest.fixture
def two_services(
    tmp_path: Path, settings: Settings, private_redis: RedisServer
) -> tuple[Settings, Settings, str]:
    """Settings of the shared service (redis_url) and of the local one (local_redis_url), and a
    configuration naming both."""
    local = dataclasses.replace(settings, redis_url=private_redis.url)
    config = tmp_path / "two.cfg"
    config.write_text(
        f"[locked_targets]\nredis_url = {settings.redis_url}\nlocal_redis_url = {private_redis.url}\n"
        f"key_prefix = {settings.key_prefix}\nlease_seconds = {LEASE_SECONDS}\n"
    )
    return settings, local, str(config)


S3_PATH = "s3://shared-bucket/features.pkl"


def test_status_and_ls_show_the_locks_of_every_lock_service(
    path: str, two_services: tuple[Settings, Settings, str]
) -> None:
    shared, local, config = two_services
    with holding(local, path, "write"), holding(shared, S3_PATH, "read"):
        services = cli_json(config, "status")["services"]
        locks = cli_json(config, "ls")["locks"]
    assert [(service["settings"], service["held_locks"]) for service in services] == [
        (["redis_url"], {"read": 1, "write": 0}),
        (["local_redis_url"], {"read": 0, "write": 1}),
    ]
    shown = {service["settings"][0]: service["redis"] for service in services}
    assert {(lock["path"], lock["redis"]) for lock in locks} == {
        (S3_PATH, shown["redis_url"]),
        (path, shown["local_redis_url"]),
    }


def test_inspect_finds_a_local_paths_lock_on_the_local_lock_service(
    path: str, two_services: tuple[Settings, Settings, str], private_redis: RedisServer
) -> None:
    _shared, local, config = two_services
    with holding(local, path, "write") as writer:
        document = cli_json(config, "inspect", path)
    (lock,) = document["locks"]
    assert [holder["pid"] for holder in lock["holders"]] == [writer.pid]
    assert lock["server"] == f"127.0.0.1:{private_redis.port}/0"
    assert document["services"] == [{"redis": lock["redis"], "settings": ["local_redis_url"]}]


def test_with_only_a_per_storage_redis_url_the_command_looks_there(
    tmp_path: Path, path: str, settings: Settings
) -> None:
    config = tmp_path / "local-only.cfg"
    config.write_text(
        f"[locked_targets]\nlocal_redis_url = {settings.redis_url}\nkey_prefix = {settings.key_prefix}\n"
    )
    with holding(settings, path, "read"):
        result = cli(str(config), "--json", "ls")
    assert result.exit_code == 0, result.output
    assert [lock["path"] for lock in json.loads(result.stdout)["locks"]] == [path]
