"""Scenario 3: eight OS processes load one hot 256 KiB target as fast as they can.

Each variant runs twice: loading over and over through one target, and building a fresh
target for every load (``make_target(path).load()``), as a task's ``self.load()`` does.

The processes are spawned once and run one phase per variant, in rounds: each round runs
every variant's phase, one after the other, so drift in the machine's load touches all of
them alike, and each variant's row is its median round. A barrier starts every phase in
all processes (and the parent, which reads redis-server's CPU time) together.
Each load is compared byte for byte with the object that was dumped, so a torn or
foreign load is counted, never silently timed. A reference phase adds two PINGs to an
unlocked load: the floor of any lock that talks to Redis twice per load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import redis
from redis.cluster import RedisCluster

from bench.tables import heading, table, verdict
from bench.variants import RedisUrl, Variant, make_target, redis_client, use_redis_for_locked_targets

PROCESSES = 8
OBJECT_BYTES = 256 * 1024
# Issue 2's goal: LockedTarget's throughput within this factor of unlocked gokart.
SLOWDOWN_GOAL = 1.5
# Issue 9's goals, a fresh target per load: LockedTarget's throughput over unlocked gokart's
# (at least), and over gokart's lock's (at least).
FRESH_AGAINST_UNLOCKED_GOAL = 0.8
FRESH_AGAINST_GOKART_LOCK_GOAL = 25.0
REFERENCE = "reference"


@dataclasses.dataclass(frozen=True)
class FreshTargets:
    """A phase in which every load goes through a target built for it, as a task's ``self.load()`` does."""

    variant: Variant


# A phase reuses one target of a variant, builds a fresh one per load, or is the (ref) phase.
Phase = Variant | FreshTargets | str
FRESH_VARIANTS = (Variant.UNLOCKED, Variant.GOKART_LOCK, Variant.LOCKED_TARGET)
PHASES: tuple[Phase, ...] = (*Variant, REFERENCE, *(FreshTargets(variant) for variant in FRESH_VARIANTS))
_SEED = 265  # gokart's issue about lock congestion
_SPAWN = multiprocessing.get_context("spawn")
# Spawning and importing gokart in 8 processes on 2 cores takes several seconds.
_START_TIMEOUT_SECONDS = 120.0


def hot_object() -> bytes:
    """The 256 KiB payload, the same in every process."""
    return random.Random(_SEED).randbytes(OBJECT_BYTES)


def phase_title(phase: Phase) -> str:
    if isinstance(phase, Variant):
        return f"{phase.letter} {phase.title}"
    if isinstance(phase, FreshTargets):
        return f"{phase.variant.letter} {phase.variant.title}, fresh target per load"
    return "(ref) 2 PINGs + unlocked load"


@dataclasses.dataclass(frozen=True)
class WorkerPlan:
    """What every worker process does: which target, in which phases, for how long, against which object."""

    path: str
    redis: RedisUrl
    phases: tuple[Phase, ...]
    seconds: float
    digest: str


@dataclasses.dataclass(frozen=True)
class WorkerResult:
    """One worker's loads in one phase."""

    phase: Phase
    loads: int
    bad_loads: int
    seconds: float
    cpu_seconds: float
    first_error: str | None


def work(plan: WorkerPlan, start_together: Barrier, results: Queue[WorkerResult]) -> None:
    """Entry point of a worker process: one timed phase of loads per entry of ``plan.phases``, in order."""
    use_redis_for_locked_targets(plan.redis)
    expected = hot_object()
    if hashlib.sha256(expected).hexdigest() != plan.digest:
        raise RuntimeError("this process built a different hot object than the parent dumped")
    for phase in plan.phases:
        load = _loader(phase, plan)
        load()  # connect and register scripts before the clock starts
        loads = bad_loads = 0
        first_error: str | None = None
        start_together.wait(timeout=_START_TIMEOUT_SECONDS)
        started, cpu_started = time.perf_counter(), time.process_time()
        deadline = started + plan.seconds
        while time.perf_counter() < deadline:
            try:
                whole = load() == expected
            except Exception as error:
                whole = False
                first_error = first_error or f"{type(error).__name__}: {error}"
            loads += 1
            bad_loads += not whole
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        results.put(WorkerResult(phase, loads, bad_loads, elapsed, cpu, first_error))


def _loader(phase: Phase, plan: WorkerPlan) -> Callable[[], object]:
    if isinstance(phase, Variant):
        return make_target(phase, plan.path, plan.redis).load
    if isinstance(phase, FreshTargets):
        variant = phase.variant
        return lambda: make_target(variant, plan.path, plan.redis).load()
    client = redis_client(plan.redis)
    target = make_target(Variant.UNLOCKED, plan.path, plan.redis)

    def pinged_load() -> object:
        client.ping()
        loaded = target.load()
        client.ping()
        return loaded

    return pinged_load


@dataclasses.dataclass(frozen=True)
class Throughput:
    """All workers' loads in one phase, and the CPU they and redis-server spent."""

    loads_per_second: float
    loads: int
    bad_loads: int
    worker_cpu_seconds: float
    server_cpu_seconds: float
    first_error: str | None


def measure(
    directory: str,
    redis_address: RedisUrl,
    seconds: float,
    phases: tuple[Phase, ...] = PHASES,
    rounds: int = 1,
) -> dict[Phase, Throughput]:
    """Loads per second of each of ``phases`` (all of them by default; only the variants that can
    lock on ``redis_address`` can run): its median over ``rounds`` phases of ``seconds``."""
    payload = hot_object()
    path = os.path.join(directory, "hot.pkl")
    make_target(Variant.UNLOCKED, path, redis_address).dump(payload)
    plan = WorkerPlan(
        path=path,
        redis=redis_address,
        phases=phases * rounds,
        seconds=seconds,
        digest=hashlib.sha256(payload).hexdigest(),
    )
    start_together = _SPAWN.Barrier(PROCESSES + 1)
    results: Queue[WorkerResult] = _SPAWN.Queue()
    workers = [
        _SPAWN.Process(target=work, args=(plan, start_together, results), name=f"bench-hot-{index}")
        for index in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    server = redis_client(redis_address)
    try:
        measured: dict[Phase, list[Throughput]] = {}
        for phase in plan.phases:
            start_together.wait(timeout=_START_TIMEOUT_SECONDS)
            server_cpu_started = _server_cpu_seconds(server)
            phase_results = [results.get(timeout=_START_TIMEOUT_SECONDS) for _ in workers]
            total = _total(phase_results, _server_cpu_seconds(server) - server_cpu_started)
            measured.setdefault(phase, []).append(total)
        for worker in workers:
            worker.join(timeout=_START_TIMEOUT_SECONDS)
        return {phase: _median_round(each_round) for phase, each_round in measured.items()}
    finally:
        server.close()
        for worker in workers:
            if worker.is_alive():
                worker.kill()


def _median_round(each_round: list[Throughput]) -> Throughput:
    """The round with the median loads per second (of an even number, the slower of the middle two)."""
    return sorted(each_round, key=lambda measured: measured.loads_per_second)[(len(each_round) - 1) // 2]


def _server_cpu_seconds(client: redis.Redis | RedisCluster) -> float:
    """The CPU time redis-server has spent, of every node of a cluster together."""
    if isinstance(client, RedisCluster):
        per_node = list(client.info("cpu", target_nodes=RedisCluster.ALL_NODES).values())
    else:
        per_node = [client.info("cpu")]
    return sum(float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]) for cpu in per_node)


def _total(phase: list[WorkerResult], server_cpu_seconds: float) -> Throughput:
    return Throughput(
        loads_per_second=sum(result.loads / result.seconds for result in phase),
        loads=sum(result.loads for result in phase),
        bad_loads=sum(result.bad_loads for result in phase),
        worker_cpu_seconds=sum(result.cpu_seconds for result in phase),
        server_cpu_seconds=server_cpu_seconds,
        first_error=next((result.first_error for result in phase if result.first_error), None),
    )


def against_unlocked(throughputs: dict[Phase, Throughput], phase: Phase) -> float:
    """``phase``'s loads per second over unlocked gokart's made the same way (one target, or one per load)."""
    return throughputs[phase].loads_per_second / throughputs[_unlocked_of_its_kind(phase)].loads_per_second


def slowdown(throughputs: dict[Phase, Throughput], variant: Variant) -> float:
    """How many times fewer loads per second ``variant`` made than unlocked gokart."""
    return throughputs[Variant.UNLOCKED].loads_per_second / throughputs[variant].loads_per_second


def reference_slowdown(throughputs: dict[Phase, Throughput]) -> float:
    """The slowdown of the (ref) phase: an unlocked load plus two PINGs."""
    return throughputs[Variant.UNLOCKED].loads_per_second / throughputs[REFERENCE].loads_per_second


def slowdown_goal_met(throughputs: dict[Phase, Throughput], variant: Variant) -> bool:
    return slowdown(throughputs, variant) <= SLOWDOWN_GOAL


def fresh_speedup(throughputs: dict[Phase, Throughput], over: Variant) -> float:
    """LockedTarget's loads per second over ``over``'s, both building a fresh target per load."""
    locked = throughputs[FreshTargets(Variant.LOCKED_TARGET)].loads_per_second
    return locked / throughputs[FreshTargets(over)].loads_per_second


def fresh_goals_met(throughputs: dict[Phase, Throughput]) -> tuple[bool, bool]:
    """Whether LockedTarget, a fresh target per load, meets issue 9's goals: against (a), against (b)."""
    return (
        fresh_speedup(throughputs, Variant.UNLOCKED) >= FRESH_AGAINST_UNLOCKED_GOAL,
        fresh_speedup(throughputs, Variant.GOKART_LOCK) >= FRESH_AGAINST_GOKART_LOCK_GOAL,
    )


def _unlocked_of_its_kind(phase: Phase) -> Phase:
    """The unlocked phase a row is compared with: a fresh target per load, or one target reused."""
    return FreshTargets(Variant.UNLOCKED) if isinstance(phase, FreshTargets) else Variant.UNLOCKED


def report(throughputs: dict[Phase, Throughput], seconds: float, rounds: int) -> str:
    rows = [
        [
            phase_title(phase),
            f"{result.loads_per_second:,.0f}",
            f"{result.loads:,}",
            f"{result.bad_loads:,}",
            f"{1 / against_unlocked(throughputs, phase):.2f}x",
            f"{result.worker_cpu_seconds / result.loads * 1e6:,.0f}",
            f"{result.server_cpu_seconds / result.loads * 1e6:,.1f}",
        ]
        for phase, result in throughputs.items()
    ]
    errors = [
        f"  first error in {phase_title(phase)}: {result.first_error}"
        for phase, result in throughputs.items()
        if result.first_error
    ]
    return "\n".join(
        [
            heading(f"3. Hot target: {PROCESSES} processes load one {OBJECT_BYTES // 1024} KiB target"),
            f"{PROCESSES} spawned OS processes, started together by a barrier, each loading the same "
            f"pickled bytes object for {seconds:g} s per variant, in {rounds} rounds",
            "(each round runs every variant, one after the other; each row is the variant's median round);",
            "every load is compared byte for byte with the dumped object (bad = different or raised).",
            "CPU per load: worker processes' CPU time (all their threads) and redis-server's, "
            "divided by the loads; the (ref) row",
            "adds two PINGs to each unlocked load: the floor for any lock that asks Redis twice per load.",
            "The 'fresh target per load' rows build a target for every load, as a task's self.load() does; "
            "their slowdown is over (a)'s fresh row.",
            "",
            table(
                [
                    "variant",
                    "loads/s (all processes)",
                    "loads",
                    "bad loads",
                    "slowdown ((a) / row)",
                    "worker CPU us/load",
                    "redis CPU us/load",
                ],
                rows,
            ),
            *errors,
            "",
            f"unlocked / {phase_title(Variant.GOKART_LOCK)}: "
            f"{slowdown(throughputs, Variant.GOKART_LOCK):.2f}x",
            f"unlocked / {phase_title(Variant.LOCKED_TARGET)}: "
            f"{slowdown(throughputs, Variant.LOCKED_TARGET):.2f}x  "
            f"(goal <= {SLOWDOWN_GOAL}x, judged on the default configuration: "
            f"{verdict(slowdown_goal_met(throughputs, Variant.LOCKED_TARGET))})",
            f"unlocked / {phase_title(Variant.LOCKED_TARGET_NO_KEPT_LEASES)}: "
            f"{slowdown(throughputs, Variant.LOCKED_TARGET_NO_KEPT_LEASES):.2f}x  "
            "(each load asks Redis twice; the (ref) row's floor for that: "
            f"{reference_slowdown(throughputs):.2f}x)",
            *_fresh_lines(throughputs),
        ]
    )


def _fresh_lines(throughputs: dict[Phase, Throughput]) -> list[str]:
    against_unlocked, against_gokart = fresh_goals_met(throughputs)
    locked = phase_title(FreshTargets(Variant.LOCKED_TARGET))
    return [
        f"{locked} / (a) fresh: {fresh_speedup(throughputs, Variant.UNLOCKED):.2f}x the loads per second "
        f"(goal >= {FRESH_AGAINST_UNLOCKED_GOAL}x: {verdict(against_unlocked)})",
        f"{locked} / (b) fresh: {fresh_speedup(throughputs, Variant.GOKART_LOCK):.1f}x the loads per second "
        f"(goal >= {FRESH_AGAINST_GOKART_LOCK_GOAL:g}x: {verdict(against_gokart)})",
    ]
