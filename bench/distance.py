"""Scenario 7: scenario 6's DAG with Redis farther away, behind a delay proxy (Redis "in another cluster").

Both locked variants reach the bench's server through ``bench.delay_proxy`` at each
added round trip (and directly, for loopback); unlocked gokart needs no Redis, so it is
built once per round and every ratio is over it. Every proxy stays open for the whole
scenario, so that each round builds every cell one after the other, as scenario 6 does,
and the table shows the median over the rounds. gokart's lock can be given fewer rounds
than the others: no goal judges it, and at the farthest link its cold build is the
longest of the scenario. Each link's round trip is measured with PINGs through it, since
the proxy's own work adds a little to the delay it is asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping

from bench import per_call
from bench.dag import (
    DAG_VARIANTS,
    LOCKED_DAG_VARIANTS,
    MODES,
    RequestsPerLeaf,
    Rounds,
    Workspace,
    interleaved_rounds,
    legend,
)
from bench.delay_proxy import delay_proxy
from bench.round_trip import measure_round_trip_ms
from bench.tables import heading, table
from bench.variants import LOCKED_VARIANTS, RedisAddress, Variant, use_redis_for_locked_targets

# Round trips the proxy adds, in ms; 0 is the direct loopback connection.
ADDED_ROUND_TRIPS_MS = (0.0, 1.0, 5.0)
# Issue 9's goals at the farthest link: locked_targets' build time over unlocked gokart's.
DISTANT_COLD_GOAL = 4.0
DISTANT_WARM_GOAL = 3.0


def link_title(added_ms: float) -> str:
    """How a table names a link: by the round trip the proxy adds to it."""
    return "loopback" if added_ms == 0 else f"+{added_ms:g} ms"


@dataclasses.dataclass(frozen=True)
class DistanceResult:
    """Unlocked gokart's builds; per added round trip, the one measured and each locked variant's builds.

    Every cell holds the cold and warm builds of each round its variant was built in.
    """

    leaves: int
    unlocked: Rounds
    measured_round_trip_ms: dict[float, float]
    builds: dict[tuple[float, Variant], Rounds]
    per_call: dict[float, tuple[dict[tuple[str, Variant], float], float]]
    """Per added round trip (not loopback: that is scenario 2), scenario 2's median ms per (operation,
    variant) through the link, and the median of the PINGs interleaved with them."""
    calls: int

    def rounds(self, variant: Variant) -> int:
        """How many rounds ``variant`` was built in."""
        return (self.unlocked if variant is Variant.UNLOCKED else self.builds[self.farthest, variant]).count

    @property
    def farthest(self) -> float:
        """The largest round trip the proxy added, in ms."""
        return max(self.measured_round_trip_ms)

    def ratio(self, added_ms: float, variant: Variant, mode: str) -> float:
        return self.builds[added_ms, variant].seconds(mode) / self.unlocked.seconds(mode)

    def requests(self, added_ms: float, variant: Variant, mode: str) -> RequestsPerLeaf:
        return self.builds[added_ms, variant].requests(mode)


@contextlib.contextmanager
def _reached_through(redis: RedisAddress, added_ms: float) -> Iterator[RedisAddress]:
    """``redis`` itself for no added delay, else a delay proxy in front of it."""
    if added_ms == 0:
        yield redis
        return
    with delay_proxy(redis.port, added_ms / 1000) as port:
        yield RedisAddress(url=f"redis://127.0.0.1:{port}/0", host="127.0.0.1", port=port)


# Scenario 2's calls, and a dump of a DataFrame, whose round trip a dump written ahead hides.
_PER_CALL_OPERATIONS = (*per_call.OPERATIONS, per_call.FRAME_DUMP)

# The key of unlocked gokart's builds among a round's cells: it reaches no Redis, so no link is its own.
_NO_REDIS = (0.0, Variant.UNLOCKED)


def measure(
    directory: str,
    redis: RedisAddress,
    leaves: int,
    pings: int,
    *,
    rounds: Mapping[Variant, int],
    calls: int,
) -> DistanceResult:
    """Each variant's cold and warm builds of ``leaves`` leaves, ``rounds[variant]`` times, at every link;
    and scenario 2's calls, ``calls`` of each, at every link the proxy lengthens."""

    def workspace(name: str, variant: Variant, reached_at: RedisAddress, round_number: int) -> Workspace:
        return Workspace(
            directory=os.path.join(directory, f"distance-{name}-{variant.name.lower()}-{round_number}"),
            variant=variant,
            leaves=leaves,
            redis=reached_at,
            control_url=redis.url,
        )

    with contextlib.ExitStack() as links:
        reached = {
            added_ms: links.enter_context(_reached_through(redis, added_ms))
            for added_ms in ADDED_ROUND_TRIPS_MS
        }
        measured_round_trip_ms = {
            added_ms: measure_round_trip_ms(reached_at.url, pings) for added_ms, reached_at in reached.items()
        }

        def workspaces(round_number: int) -> dict[tuple[float, Variant], Workspace]:
            """The cells of one round: those whose variant has not had all its rounds yet."""
            cells = {}
            if round_number < rounds[Variant.UNLOCKED]:
                cells[_NO_REDIS] = workspace("none", Variant.UNLOCKED, redis, round_number)
            for added_ms, reached_at in reached.items():
                for variant in LOCKED_DAG_VARIANTS:
                    if round_number < rounds[variant]:
                        cells[added_ms, variant] = workspace(
                            f"{added_ms:g}ms", variant, reached_at, round_number
                        )
            return cells

        builds = interleaved_rounds(max(rounds.values()), workspaces)
        per_call_times = {
            added_ms: _per_call_times(os.path.join(directory, f"per-call-{added_ms:g}ms"), reached_at, calls)
            for added_ms, reached_at in reached.items()
            if added_ms > 0
        }
        use_redis_for_locked_targets(redis)
    unlocked = builds.pop(_NO_REDIS)
    return DistanceResult(leaves, unlocked, measured_round_trip_ms, builds, per_call_times, calls)


def _per_call_times(
    directory: str, reached_at: RedisAddress, calls: int
) -> tuple[dict[tuple[str, Variant], float], float]:
    """Scenario 2's median times of ``calls`` calls each, this process's LockedTargets locking through
    ``reached_at`` (the caller points them back at the bench's server)."""
    os.makedirs(directory)
    use_redis_for_locked_targets(reached_at)
    return per_call.measure_median_times(directory, reached_at, calls, _PER_CALL_OPERATIONS)


def report(result: DistanceResult) -> str:
    rows = [
        [
            "-",
            "-",
            f"{Variant.UNLOCKED.letter} {Variant.UNLOCKED.title}",
            *(cell for mode in MODES for cell in (f"{result.unlocked.seconds(mode):.2f}", "1.00x", "-")),
        ]
    ]
    for added_ms, measured_ms in result.measured_round_trip_ms.items():
        for variant in LOCKED_DAG_VARIANTS:
            builds = result.builds[added_ms, variant]
            rows.append(
                [
                    link_title(added_ms),
                    f"{measured_ms:.2f}",
                    f"{variant.letter} {variant.title}",
                    *(
                        cell
                        for mode in MODES
                        for cell in (
                            f"{builds.seconds(mode):.2f}",
                            f"{result.ratio(added_ms, variant, mode):.2f}x",
                            f"{result.requests(added_ms, variant, mode).main_thread:.2f}",
                        )
                    ),
                ]
            )
    rounds = ", ".join(f"{result.rounds(variant)} for {variant.letter}" for variant in DAG_VARIANTS)
    c, d = (locked.letter for locked in LOCKED_VARIANTS)
    per_call_rows = [
        [
            link_title(added_ms),
            f"{round_trip_ms:.2f}",
            operation,
            f"{times[operation, Variant.UNLOCKED]:.3f}",
            *(
                cell
                for locked in LOCKED_VARIANTS
                for cell in (
                    f"{per_call.added_ms_of(times, operation, locked):+.3f}",
                    f"{per_call.added_ms_of(times, operation, locked) / round_trip_ms:.2f}",
                )
            ),
            f"{per_call.added_ms_of(times, operation, Variant.GOKART_LOCK) / round_trip_ms:.2f}",
        ]
        for added_ms, (times, round_trip_ms) in result.per_call.items()
        for operation in _PER_CALL_OPERATIONS
    ]
    return "\n".join(
        [
            heading(f"7. The DAG of scenario 6 (N = {result.leaves}) with Redis behind a delay proxy"),
            "An asyncio TCP proxy on 127.0.0.1 delays every chunk by half the added round trip in each "
            "direction (order kept per direction;",
            "pub/sub goes through it too); (b) and (c) reach Redis through it, (a) needs no Redis. RT = "
            "median PING through the link.",
            f"Rounds: {rounds} (no goal judges (b)); each round builds its rows cold, then warm, on fresh "
            "workspaces, one row after",
            "the other, every proxy open throughout. Seconds: the median over the rounds; ratios: that "
            "median over (a)'s of the same mode.",
            "'waited/N' = requests the thread running the tasks waited for in the build / N (the median over "
            "the rounds), what a build",
            "pays once included (scenario 6 separates it).",
            *legend(),
            "",
            table(
                [
                    "link",
                    "RT ms",
                    "variant",
                    *(f"{mode} {header}" for mode in MODES for header in ("s", "/ (a)", "waited/N")),
                ],
                rows,
            ),
            "",
            f"One call of scenario 2 at each link: the median of {result.calls} calls per cell, interleaved "
            "with PINGs through the link (RT), (b) in a pass of its own as in scenario 2;",
            f"the time {c}, {d} and (b) add to (a)'s call, in RTs of the link. (a) reaches no Redis. "
            f"'{per_call.FRAME_DUMP}': a dump of a DataFrame",
            "of 100,000 rows and 4 float columns to a fresh path, whose serialization and write take "
            "longer than the round trip (a local dump writes its file while its lock is asked for).",
            table(
                [
                    "link",
                    "RT ms",
                    "op",
                    "(a) ms",
                    f"{c}-a ms",
                    f"{c}-a in RTs",
                    f"{d}-a ms",
                    f"{d}-a in RTs",
                    "b-a in RTs",
                ],
                per_call_rows,
            ),
        ]
    )
