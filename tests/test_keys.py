"""Lock keys: the full normalized path of each storage kind, prefixes, one hash slot per lock."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from locked_targets.locks import LockNamespace, lock_key_for
from locked_targets.settings import Settings

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
