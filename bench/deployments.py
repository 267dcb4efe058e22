"""Scenario 9: scenarios 2 and 3 on Sentinel and on a Redis Cluster, beside standalone: what each one costs.

Besides the run's own server, it starts a Sentinel deployment (a master, its replica and
three sentinels) and a Redis Cluster (three masters with a replica each), all on 127.0.0.1
and the same ``redis-server``, and keeps them all up until every one is measured. Each is
measured by scenario 2's and 3's own functions, reached through its ``redis_url``, with the
variants that can lock on it: gokart's lock takes one server's host and port, so it runs on
standalone only. Every ratio is taken within this scenario, so all of them share its effort
and the machine's load of the moment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os

from bench import hot_target, per_call
from bench.hot_target import FreshTargets, Phase, Throughput
from bench.per_call import OPERATIONS
from bench.tables import heading, table
from bench.variants import LOCKED_VARIANTS, RedisAddress, RedisUrl, Variant, use_redis_for_locked_targets
from locked_targets.testing import ClusterDeployment, SentinelDeployment

STANDALONE = "standalone"
SENTINEL = "Sentinel"
CLUSTER = "Cluster"
# Scenario 3's phases that need no gokart lock: LockedTarget and unlocked gokart, one target reused or
# a fresh one per load. (d) and the (ref) phase are left out to keep the scenario short.
HOT_PHASES: tuple[Phase, ...] = (
    Variant.UNLOCKED,
    Variant.LOCKED_TARGET,
    FreshTargets(Variant.UNLOCKED),
    FreshTargets(Variant.LOCKED_TARGET),
)
_HOT_LOCKED_PHASES = (Variant.LOCKED_TARGET, FreshTargets(Variant.LOCKED_TARGET))


@dataclasses.dataclass(frozen=True)
class DeploymentResult:
    """One deployment's ``redis_url``, its per-call times and round trip (scenario 2), its hot target (3)."""

    url: str
    median_ms: dict[tuple[str, Variant], float]
    round_trip_ms: float
    throughputs: dict[Phase, Throughput]


@dataclasses.dataclass(frozen=True)
class DeploymentsResult:
    """Every deployment's measurements, standalone first, and the effort each got."""

    deployments: dict[str, DeploymentResult]
    calls: int
    hot_seconds: float

    def against_standalone(self, deployment: str, operation: str, variant: Variant) -> float:
        """``variant``'s median time of ``operation`` on ``deployment`` over its time on standalone."""
        measured = self.deployments[deployment].median_ms[operation, variant]
        return measured / self.deployments[STANDALONE].median_ms[operation, variant]


def measure(directory: str, standalone: RedisAddress, calls: int, hot_seconds: float) -> DeploymentsResult:
    """Measure standalone, Sentinel and Cluster in turn; this process locks on ``standalone`` again after."""
    with contextlib.ExitStack() as servers:
        sentinel = servers.enter_context(SentinelDeployment(_made(directory, "sentinel-servers")))
        cluster = ClusterDeployment(_made(directory, "cluster-servers")).start()
        servers.callback(cluster.stop)
        servers.callback(_quiet_listeners)  # the last callback registered runs first: before the servers stop
        reached = {STANDALONE: standalone, SENTINEL: RedisUrl(sentinel.url), CLUSTER: RedisUrl(cluster.url)}
        try:
            deployments = {
                name: _measure_one(_made(directory, f"deployment-{name.lower()}"), redis, calls, hot_seconds)
                for name, redis in reached.items()
            }
        finally:
            use_redis_for_locked_targets(standalone)
    return DeploymentsResult(deployments, calls, hot_seconds)


def _quiet_listeners() -> None:
    """Silence locked_targets' warnings for the rest of the run (which is why this scenario runs last).

    This process's listeners for kept shared leases on Sentinel and the Cluster outlive them;
    their reconnect warnings once the servers stop say nothing about the benchmark.
    """
    logging.getLogger("locked_targets").setLevel(logging.ERROR)


def _made(directory: str, name: str) -> str:
    """A new directory ``name`` inside ``directory``."""
    made = os.path.join(directory, name)
    os.makedirs(made)
    return made


def _measure_one(directory: str, redis: RedisUrl, calls: int, hot_seconds: float) -> DeploymentResult:
    use_redis_for_locked_targets(redis)
    median_ms, round_trip_ms = per_call.measure_median_times(directory, redis, calls)
    throughputs = hot_target.measure(directory, redis, hot_seconds, HOT_PHASES)
    return DeploymentResult(redis.url, median_ms, round_trip_ms, throughputs)


def report(result: DeploymentsResult) -> str:
    c, d = (locked.letter for locked in LOCKED_VARIANTS)
    per_call_rows = [
        [
            name,
            f"{measured.round_trip_ms:.3f}",
            operation,
            *(_ms_cell(measured, operation, variant) for variant in (Variant.UNLOCKED, Variant.GOKART_LOCK)),
            *(
                cell
                for locked in LOCKED_VARIANTS
                for cell in (
                    _ms_cell(measured, operation, locked),
                    f"{result.against_standalone(name, operation, locked):.2f}x",
                )
            ),
        ]
        for name, measured in result.deployments.items()
        for operation in OPERATIONS
    ]
    hot_rows = [
        [
            name,
            f"{measured.round_trip_ms:.3f}",
            *(
                cell
                for phase in _HOT_LOCKED_PHASES
                for cell in (
                    f"{measured.throughputs[phase].loads_per_second:,.0f}",
                    f"{hot_target.against_unlocked(measured.throughputs, phase):.2f}x",
                )
            ),
            f"{sum(throughput.bad_loads for throughput in measured.throughputs.values()):,}",
        ]
        for name, measured in result.deployments.items()
    ]
    errors = [
        f"  first error on {name}, {hot_target.phase_title(phase)}: {throughput.first_error}"
        for name, measured in result.deployments.items()
        for phase, throughput in measured.throughputs.items()
        if throughput.first_error
    ]
    return "\n".join(
        [
            heading(f"9. Deployments: {STANDALONE}, {SENTINEL}, {CLUSTER}"),
            "Scenarios 2 and 3 again on each deployment, all on 127.0.0.1 and the same redis-server, "
            "each reached through its redis_url:",
            *(f"  {name}: {measured.url}" for name, measured in result.deployments.items()),
            f"  ({SENTINEL}: a master, its replica and 3 sentinels; {CLUSTER}: 3 masters with a replica "
            "each; all of them up throughout.)",
            "Less effort than scenarios 2 and 3, to keep this scenario short: median of "
            f"{result.calls} calls per cell, {result.hot_seconds:g} s per hot-target phase.",
            "(b) gokart's lock takes one server's host and port (redis_host, redis_port): it cannot lock "
            "on Sentinel or a Cluster, so it runs on standalone only ('-').",
            "RT = median PING interleaved with the calls, through the deployment's client (Sentinel: the "
            "master it names; Cluster: one master).",
            "'/ std' = the median time over the same variant's on standalone in this scenario; "
            f"{c} reads one target over and over (kept lease), {d} every read cold.",
            "",
            table(
                [
                    "deployment",
                    "RT ms",
                    "op",
                    *(f"{variant.letter} ms" for variant in (Variant.UNLOCKED, Variant.GOKART_LOCK)),
                    *(header for locked in LOCKED_VARIANTS for header in (f"{locked.letter} ms", "/ std")),
                ],
                per_call_rows,
            ),
            "",
            f"Hot target (scenario 3): {hot_target.PROCESSES} processes load one "
            f"{hot_target.OBJECT_BYTES // 1024} KiB target; loads per second of all processes, and over",
            "(a)'s of its kind (one target reused, or a fresh one per load), measured beside them on the "
            "same deployment. Bad loads: every phase's.",
            table(
                [
                    "deployment",
                    "RT ms",
                    *(
                        header
                        for phase in _HOT_LOCKED_PHASES
                        for header in (f"{hot_target.phase_title(phase)} loads/s", "/ (a)")
                    ),
                    "bad loads",
                ],
                hot_rows,
            ),
            *errors,
        ]
    )


def _ms_cell(measured: DeploymentResult, operation: str, variant: Variant) -> str:
    """The median ms of ``variant``'s ``operation``, or ``-`` where it cannot lock on the deployment."""
    median_ms = measured.median_ms.get((operation, variant))
    return "-" if median_ms is None else f"{median_ms:.3f}"
