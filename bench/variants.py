"""The four ways of reaching one gokart cache file that the benchmark compares."""

from __future__ import annotations

import dataclasses
import enum
import functools

import gokart.target
import luigi.configuration
import redis as redis_py
from gokart.conflict_prevention_lock.task_lock import make_task_lock_params
from gokart.target import TargetOnKart
from redis.cluster import RedisCluster

import locked_targets
from locked_targets.rwlock.connection import RedisConnection
from locked_targets.settings import Settings

# gokart's default lease (redis_timeout), which LockedTarget also uses by default.
GOKART_REDIS_TIMEOUT_SECONDS = 180


@dataclasses.dataclass(frozen=True)
class RedisUrl:
    """A Redis deployment LockedTarget locks on through its ``redis_url``: Sentinel, Cluster or one server.

    gokart's lock cannot use it: it takes one server's host and port.
    """

    url: str

    @property
    def variants(self) -> tuple[Variant, ...]:
        """The variants that can lock on this deployment."""
        return tuple(variant for variant in Variant if variant is not Variant.GOKART_LOCK)


@dataclasses.dataclass(frozen=True)
class RedisAddress(RedisUrl):
    """One private redis-server, in the forms each variant wants: a URL, and gokart's host and port."""

    host: str
    port: int

    @property
    def variants(self) -> tuple[Variant, ...]:
        return tuple(Variant)


class Variant(enum.Enum):
    """A target as a user would build it: unlocked, under gokart's lock, or a LockedTarget.

    (c) is LockedTarget as configured by default: a process keeps its shared lease between
    reads, so a repeated read of one target asks Redis nothing. (d) switches keeping off,
    so every read pays what a process's first (cold) read of a target pays.
    """

    UNLOCKED = "a"
    GOKART_LOCK = "b"
    LOCKED_TARGET = "c"
    LOCKED_TARGET_NO_KEPT_LEASES = "d"

    @property
    def letter(self) -> str:
        """How the tables name the variant: ``(a)`` to ``(d)``."""
        return f"({self.value})"

    @property
    def title(self) -> str:
        return {
            Variant.UNLOCKED: "unlocked gokart",
            Variant.GOKART_LOCK: "gokart's lock",
            Variant.LOCKED_TARGET: "LockedTarget",
            Variant.LOCKED_TARGET_NO_KEPT_LEASES: "LockedTarget, kept leases off",
        }[self]

    @property
    def recipe(self) -> str:
        """How the target is made, for the legend of each table."""
        return {
            Variant.UNLOCKED: "gokart.target.make_target(path)",
            Variant.GOKART_LOCK: (
                "gokart.target.make_target(path, task_lock_params=make_task_lock_params("
                f"path, None, redis_host, redis_port, redis_timeout={GOKART_REDIS_TIMEOUT_SECONDS}))"
            ),
            Variant.LOCKED_TARGET: (
                "locked_targets.make_target(path), [locked_targets] redis_url set (default configuration)"
            ),
            Variant.LOCKED_TARGET_NO_KEPT_LEASES: (
                "as (c), with [locked_targets] shared_lease_idle_seconds = 0"
            ),
        }[self]


# LockedTarget's two configurations, each judged against issue 2's goals.
LOCKED_VARIANTS = (Variant.LOCKED_TARGET, Variant.LOCKED_TARGET_NO_KEPT_LEASES)


def use_redis_for_locked_targets(redis: RedisUrl) -> None:
    """Point ``[locked_targets] redis_url`` of this process's luigi configuration at ``redis``."""
    config = luigi.configuration.get_config()  # type: ignore[no-untyped-call]
    if not config.has_section("locked_targets"):
        config.add_section("locked_targets")
    config.set("locked_targets", "redis_url", redis.url)


def make_target(variant: Variant, path: str, redis: RedisUrl) -> TargetOnKart:
    """The cache target at ``path`` as ``variant`` builds it."""
    if variant is Variant.UNLOCKED:
        return gokart.target.make_target(path)
    if variant is Variant.GOKART_LOCK:
        if not isinstance(redis, RedisAddress):
            raise ValueError(f"gokart's lock needs one server's host and port, not only a URL ({redis.url})")
        lock_params = make_task_lock_params(
            file_path=path,
            unique_id=None,
            redis_host=redis.host,
            redis_port=redis.port,
            redis_timeout=GOKART_REDIS_TIMEOUT_SECONDS,
        )
        return gokart.target.make_target(path, task_lock_params=lock_params)
    if variant is Variant.LOCKED_TARGET:
        return locked_targets.make_target(path)
    return locked_targets.make_target(path, settings=_without_kept_leases(Settings.from_luigi_config()))


@functools.lru_cache(maxsize=1)
def _without_kept_leases(settings: Settings) -> Settings:
    """``settings`` with kept shared leases off, made once per configuration, as a user who turns them
    off in the configuration gets it: one ``Settings`` for every target, whose locks share their parts."""
    return dataclasses.replace(settings, shared_lease_idle_seconds=0)


def redis_client(redis: RedisUrl) -> redis_py.Redis | RedisCluster:
    """A client of ``redis`` as LockedTarget reaches it: Sentinel's master, the cluster, or the server."""
    return RedisConnection(redis.url).client
