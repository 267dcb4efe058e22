"""Lock keys: a local file's real path, an object's literal path, prefixes, one hash slot per lock."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from gokart.file_processor import make_file_processor
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from helpers.fault_processes import STALLED_WHILE_LOADING, load_stalling
from helpers.lock_processes import SPAWN
from helpers.targets import locked_target
from locked_targets.errors import LockLost
from locked_targets.locks import LockNamespace, lock_key_for
from locked_targets.settings import Settings
from locked_targets.storage import storage_kind_for

SETTINGS = Settings()


def base(
    path: str, settings: Settings = SETTINGS, namespace: LockNamespace | str = LockNamespace.TARGET
) -> str:
    return lock_key_for(path, settings, namespace).base


def test_same_basename_on_s3_and_gcs_gets_distinct_locks() -> None:
    assert base("s3://a/x_1.pkl") != base("gs://b/x_1.pkl")
    assert base("s3://a/x_1.pkl") != base("gs://a/x_1.pkl")


def test_same_basename_in_different_directories_gets_distinct_locks() -> None:
    assert base("/cache/a/x_1.pkl") != base("/cache/b/x_1.pkl")


def test_local_paths_are_normalized() -> None:
    assert base("/cache/a/../b/./x.pkl") == base("/cache/b/x.pkl")
    assert base("/cache//b/x.pkl") == base("/cache/b/x.pkl")
    assert base("/cache/b/") == base("/cache/b")


def test_relative_local_paths_are_made_absolute() -> None:
    assert base("resources/x.pkl") == base(os.path.join(os.getcwd(), "resources/x.pkl"))


@pytest.fixture(scope="module")
def linked_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``real/sub/file.pkl`` and symbolic links of every kind around it."""
    root = tmp_path_factory.mktemp("linked")
    (root / "real" / "sub").mkdir(parents=True)
    (root / "real" / "sub" / "file.pkl").write_bytes(b"")
    (root / "to_real").symlink_to(root / "real")  # a directory, absolute
    (root / "chain").symlink_to("to_real")  # a link to a link, relative
    (root / "real" / "up").symlink_to("..")  # the parent: "up/.." is not "."
    (root / "real" / "sub" / "alias.pkl").symlink_to("file.pkl")  # a file
    (root / "dangling.pkl").symlink_to(root / "missing" / "file.pkl")
    (root / "loop").symlink_to("loop")
    return root


def test_a_symbolic_link_to_a_file_shares_the_files_lock(linked_tree: Path) -> None:
    assert base(str(linked_tree / "real" / "sub" / "alias.pkl")) == base(
        str(linked_tree / "real" / "sub" / "file.pkl")
    )


def test_a_path_through_a_linked_directory_shares_the_real_paths_lock(linked_tree: Path) -> None:
    assert base(str(linked_tree / "chain" / "sub" / "file.pkl")) == base(
        str(linked_tree / "real" / "sub" / "file.pkl")
    )


def test_a_files_lock_is_the_same_before_and_after_it_is_written(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    path = str(tmp_path / "link" / "new" / "x.pkl")  # neither the file nor its directory exist yet
    before = base(path)
    storage_kind_for(path).single_file_target(path, make_file_processor(path), SETTINGS).dump("x")
    assert base(path) == before
    assert base(str(tmp_path / "real" / "new" / "x.pkl")) == before


names = st.sampled_from(
    ["real", "sub", "file.pkl", "to_real", "chain", "up", "alias.pkl", "dangling.pkl", "loop", "missing"]
)


@given(st.lists(st.one_of(names, st.sampled_from(["..", ".", ""])), max_size=6))
def test_a_local_paths_identity_is_its_real_path(linked_tree: Path, parts: list[str]) -> None:
    path = os.path.join(linked_tree, *parts)
    assert lock_key_for(path, SETTINGS).path == os.path.realpath(path)


def seconds_waited_behind_a_load(loaded: str, settings: Settings, action: Callable[[], object]) -> float:
    """How long ``action`` took while another process held a load of ``loaded`` stalled for 4 s."""
    events = SPAWN.Queue()
    loader = SPAWN.Process(target=load_stalling, args=(loaded, settings, events, 4.0))
    loader.start()
    assert events.get(timeout=60) == STALLED_WHILE_LOADING
    started = time.monotonic()
    action()
    waited = time.monotonic() - started
    assert events.get(timeout=60) == "loaded"
    loader.join(timeout=30)
    return waited


def test_a_remove_through_one_name_waits_for_a_load_through_another(
    tmp_path: Path, settings: Settings
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    real, linked = str(tmp_path / "real" / "x.pkl"), str(tmp_path / "link" / "x.pkl")
    locked_target(real, settings).dump("x")
    waited = seconds_waited_behind_a_load(linked, settings, locked_target(real, settings).remove)
    assert waited > 1.0, "the remove went ahead while the load held the file's lock"


def gokart_log_files(workspace: str, task: str = "Leaf_0123abcd") -> list[str]:
    """The paths of the five log files gokart writes for one task (as gokart's getters name them)."""
    return [
        f"{workspace}/log/{kind}/{task}.{'txt' if kind == 'module_versions' else 'pkl'}"
        for kind in ("random_seed", "task_params", "module_versions", "processing_time", "task_log")
    ]


@pytest.mark.parametrize("workspace", ["/cache", "s3://bucket/cache", "gs://bucket/cache"])
def test_a_tasks_five_log_files_share_one_lock_named_for_all_five(workspace: str) -> None:
    keys = {lock_key_for(path, SETTINGS) for path in gokart_log_files(workspace)}
    assert len(keys) == 1
    assert keys.pop().path == (
        f"{workspace}/log/{{module_versions,processing_time,random_seed,task_log,task_params}}/Leaf_0123abcd"
    )


def test_log_files_of_other_tasks_and_files_elsewhere_keep_locks_of_their_own() -> None:
    one_task = base(gokart_log_files("/cache")[0])
    other_tasks = [gokart_log_files("/cache", task="Leaf_4567ef01")[0], gokart_log_files("/other")[0]]
    not_log_files = [
        "/cache/log/Leaf_0123abcd.pkl",  # not in a log kind's directory
        "/cache/log/my_log/Leaf_0123abcd.pkl",  # a kind gokart does not write
        "/cache/logs/task_log/Leaf_0123abcd.pkl",
    ]
    for path in other_tasks + not_log_files:
        assert base(path) != one_task, path
    for path in not_log_files:
        assert lock_key_for(path, SETTINGS).path == path, "a file that is not a gokart log file locks alone"


def test_a_write_of_one_log_file_waits_for_a_load_of_another_of_its_task(
    tmp_path: Path, settings: Settings
) -> None:
    task_params, task_log = gokart_log_files(str(tmp_path))[1::3]
    locked_target(task_log, settings).dump("log")
    waited = seconds_waited_behind_a_load(
        task_log, settings, lambda: locked_target(task_params, settings).dump({"leaves": "1"})
    )
    assert waited > 1.0, "the dump went ahead while a load of the task's other log file held their lock"


def test_object_keys_stay_literal() -> None:
    assert base("s3://bucket/a//b.pkl") != base("s3://bucket/a/b.pkl")
    assert base("gs://bucket/a/../b.pkl") != base("gs://bucket/b.pkl")


def test_prefixes_apply_overall_and_per_storage_kind() -> None:
    settings = Settings(key_prefix="cluster-a:", s3_key_prefix="shared-s3:", local_key_prefix="nfs:")
    assert base("s3://bucket/x.pkl", settings).startswith("cluster-a:shared-s3:target:{")
    assert base("/cache/x.pkl", settings).startswith("cluster-a:nfs:target:{")
    assert base("gs://bucket/x.pkl", settings).startswith("cluster-a:gcs:target:{")


def test_run_namespace_is_separate_from_targets() -> None:
    assert base("/cache/x.pkl", namespace="run") != base("/cache/x.pkl")


def test_every_key_and_channel_of_one_lock_share_a_cluster_hash_slot() -> None:
    keys = lock_key_for("s3://bucket/deep/path/x.pkl", SETTINGS)
    names = (*keys.every_key, *keys.channels)
    assert keys.fence in names
    assert keys.revoke_channel in names
    slots = {key_slot(name.encode()) for name in names}
    assert len(slots) == 1


paths = st.one_of(
    st.builds(lambda key: f"s3://bucket/{key}", st.text(min_size=1, max_size=300)),
    st.builds(lambda key: f"gs://bucket/{key}", st.text(min_size=1, max_size=300)),
    st.builds(
        lambda name: f"/cache/{name}", st.text(min_size=1, max_size=300).filter(lambda n: "\0" not in n)
    ),
)


@given(paths, paths)
def test_distinct_normalized_paths_get_distinct_keys(first: str, second: str) -> None:
    same_file = lock_key_for(first, SETTINGS).path == lock_key_for(second, SETTINGS).path and (
        first[:5] == second[:5]
    )
    assert (base(first) == base(second)) == same_file


@given(paths)
def test_keys_are_stable_short_and_have_one_hash_tag(path: str) -> None:
    key = base(path)
    assert key == base(path)
    assert len(key) < 100
    assert key.count("{") == 1
    assert key.count("}") == 1


segments = st.one_of(
    st.sampled_from(["..", ".", "", " ", "a b", "{tag}", "}{", "line\nbreak", "ünïcödé", "x" * 255]),
    st.text(min_size=1, max_size=20).filter(lambda text: "\0" not in text),
)
local_paths = st.builds(
    lambda parts, trailing: "/cache/" + "/".join(parts) + ("/" if trailing else ""),
    st.lists(segments, min_size=1, max_size=8),
    st.booleans(),
)


@given(local_paths)
def test_a_local_path_and_its_normalized_form_share_one_lock(path: str) -> None:
    assert base(path) == base(os.path.normpath(path))
    key = base(path)
    assert key.count("{") == 1
    assert key.count("}") == 1


@given(local_paths, local_paths)
def test_local_paths_share_a_lock_exactly_when_they_normalize_alike(first: str, second: str) -> None:
    assert (base(first) == base(second)) == (os.path.normpath(first) == os.path.normpath(second))


def versions_and_a_link_to_the_first(tmp_path: Path) -> Path:
    """Directories ``v1`` and ``v2``, and ``current``, a symbolic link to ``v1``."""
    for version in ("v1", "v2"):
        (tmp_path / version).mkdir()
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "v1")
    return current


def test_a_write_through_a_re_pointed_link_locks_the_file_the_link_names_now(
    tmp_path: Path, settings: Settings
) -> None:
    current = versions_and_a_link_to_the_first(tmp_path)
    path = str(current / "x.pkl")
    locked_target(path, settings).dump("into v1")  # this process now remembers the lock of v1's file
    current.unlink()
    current.symlink_to(tmp_path / "v2")
    with pytest.raises(LockLost, match="symbolic link"):
        locked_target(path, settings).dump("into v2")
    assert not (tmp_path / "v2" / "x.pkl").exists(), "nothing was written under the old file's lock"
    retried = locked_target(path, settings)
    retried.dump("into v2")
    lock = retried._file_lock()
    assert lock is not None
    assert lock.keys == lock_key_for(str(tmp_path / "v2" / "x.pkl"), settings)
    assert retried.load() == "into v2"


def test_a_target_that_met_a_re_pointed_link_locks_the_file_named_now_when_tried_again(
    tmp_path: Path, settings: Settings
) -> None:
    """A task's run keeps its targets (``TaskOnKart.make_target``): the same target is tried again."""
    current = versions_and_a_link_to_the_first(tmp_path)
    target = locked_target(str(current / "x.pkl"), settings)
    target.exists()  # the target builds its lock of v1's file, and keeps it
    current.unlink()
    current.symlink_to(tmp_path / "v2")
    with pytest.raises(LockLost, match="symbolic link"):
        target.dump("into v2")
    target.dump("into v2")
    lock = target._file_lock()
    assert lock is not None
    assert lock.keys == lock_key_for(str(tmp_path / "v2" / "x.pkl"), settings)
    assert target.load() == "into v2"
