"""Scenario 6: gokart.build of N small leaves and an aggregate: unlocked, under gokart's lock, under ours.

Every build runs in a fresh process (``bench.dag_application``), so luigi's instance cache
and gokart's state never carry over, on a workspace of its own. A cold build starts from
an empty cache and computes every task; the warm build that follows, in a new process on
the same workspace, finds every leaf present and only the aggregate's output removed: N
completeness checks, N loads and one dump. Each size is built in rounds, each round on
fresh workspaces with the variants one after the other (a, b, c, a, b, c, ..., then a, c,
a, c once gokart's lock, which no goal here judges, has had its rounds), so drift in the
machine's load touches all of them alike; the tables show the median over the rounds. On
a shared virtual machine one process can run its whole life up to 1.8 times slower than
the next, doing the same work: many rounds per size keep a few such builds from deciding
a goal.

The requests a build's tasks wait for grow with N, but a build also pays some once
(connections' greetings, a start-up check, the aggregate's own): the slope between the
smallest and the largest N tells the requests per task apart from those per build.
"""

from __future__ import annotations

import configparser
import dataclasses
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from bench.applications import failure_with_log
from bench.dag_application import CONTROL_URL_VARIABLE, RESULT, BuildReport
from bench.tables import heading, table
from bench.variants import RedisAddress, Variant
from locked_targets.testing import ProcessFailed, ProcessGroup, ProcessSpec

# Issue 9's goals on loopback: locked_targets' build time over unlocked gokart's.
LOOPBACK_COLD_GOAL = 1.15
LOOPBACK_WARM_GOAL = 1.1
# Issue 9's goals: Redis requests the thread running the tasks waits for, per task (the slope over N).
COLD_REQUESTS_GOAL = 3.0
WARM_REQUESTS_GOAL = 1.0
SCRIPT_COMMANDS = ("evalsha", "eval")
MODES = ("cold", "warm")
_BUILD_TIMEOUT_SECONDS = 600.0
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The variants of scenario 2 a pipeline can be written in ((d) is a setting of (c), left out here).
DAG_VARIANTS = (Variant.UNLOCKED, Variant.GOKART_LOCK, Variant.LOCKED_TARGET)
# How each variant's tasks are written and configured, for the legend of each table.
TASK_RECIPES = {
    Variant.UNLOCKED: "tasks on gokart.TaskOnKart, no Redis",
    Variant.GOKART_LOCK: "tasks on gokart.TaskOnKart, [TaskOnKart] redis_host and redis_port set",
    Variant.LOCKED_TARGET: "tasks on locked_targets.TaskOnKart, [locked_targets] redis_url set",
}


def luigi_config(
    variant: Variant, workspace: str, redis: RedisAddress, lease_seconds: float | None
) -> configparser.ConfigParser:
    """The luigi configuration of one build; ``lease_seconds`` shortens locked_targets' leases."""
    config = configparser.ConfigParser()
    config["core"] = {"autoload_range": "false"}
    config["TaskOnKart"] = {
        "workspace_directory": os.path.join(workspace, "cache"),
        "local_temporary_directory": os.path.join(workspace, "tmp"),
    }
    if variant is Variant.GOKART_LOCK:
        config["TaskOnKart"].update(redis_host=redis.host, redis_port=str(redis.port))
    if variant is Variant.LOCKED_TARGET:
        config["locked_targets"] = {"redis_url": redis.url}
        if lease_seconds is not None:
            config["locked_targets"]["lease_seconds"] = f"{lease_seconds:g}"
    return config


# The variants that take a lock in Redis.
LOCKED_DAG_VARIANTS = (Variant.GOKART_LOCK, Variant.LOCKED_TARGET)


@dataclasses.dataclass(frozen=True)
class Workspace:
    """Where one variant's builds keep their cache, and the Redis they lock in."""

    directory: str
    variant: Variant
    leaves: int
    redis: RedisAddress
    """What the builds connect to: the server, or a delay proxy in front of it."""
    control_url: str
    """The server itself, whose statistics each build resets and reads."""
    lease_seconds: float | None = None
    """locked_targets' ``lease_seconds``, if not its default (gokart's lock refuses 10 s or less)."""

    def build(self, mode: str) -> BuildReport:
        """One ``cold`` or ``warm`` build in a fresh process; its report."""
        os.makedirs(self.directory, exist_ok=True)
        config = os.path.join(self.directory, "luigi.cfg")
        with open(config, "w") as file:
            luigi_config(self.variant, self.directory, self.redis, self.lease_seconds).write(file)
        spec = ProcessSpec(
            name=f"dag-{self.variant.name.lower()}-{self.leaves}-{mode}",
            arguments=[
                "locked_targets" if self.variant is Variant.LOCKED_TARGET else "gokart",
                str(self.leaves),
                mode,
            ],
            environment={"LUIGI_CONFIG_PATH": config, CONTROL_URL_VARIABLE: self.control_url},
            log_path=os.path.join(self.directory, f"{mode}.log"),
        )
        command = [sys.executable, "-m", "bench.dag_application"]
        deadline = time.monotonic() + _BUILD_TIMEOUT_SECONDS
        with ProcessGroup(command, [spec], cwd=_REPOSITORY) as process:
            try:
                [result] = process.wait_for_line(RESULT, deadline)
                process.wait(deadline, expect_success=True)
            except ProcessFailed as failure:
                raise RuntimeError(failure_with_log(failure)) from failure
        return BuildReport.from_json(result)

    def cold_and_warm(self) -> ColdAndWarm:
        return ColdAndWarm(cold=self.build("cold"), warm=self.build("warm"))

    def cached_files(self) -> int:
        """How many files the builds wrote into the cache: the targets whose locks were taken."""
        return sum(len(files) for _, _, files in os.walk(os.path.join(self.directory, "cache")))


@dataclasses.dataclass(frozen=True)
class ColdAndWarm:
    """A cold build on an empty cache, then a warm one with only the aggregate's output missing."""

    cold: BuildReport
    warm: BuildReport

    def seconds(self, mode: str) -> float:
        return self.in_mode(mode).seconds

    def in_mode(self, mode: str) -> BuildReport:
        return self.cold if mode == "cold" else self.warm


@dataclasses.dataclass(frozen=True)
class RequestsPerLeaf:
    """One build's Redis traffic divided by its N leaves."""

    main_thread: float
    background: float
    scripts: float
    server_commands: float

    @classmethod
    def of(cls, report: BuildReport, leaves: int) -> RequestsPerLeaf:
        commands = report.server_commands
        return cls(
            main_thread=report.requests.main_thread / leaves,
            background=report.requests.background / leaves,
            scripts=sum(commands.get(name, 0) for name in SCRIPT_COMMANDS) / leaves,
            server_commands=sum(commands.values()) / leaves,
        )

    @classmethod
    def median(cls, builds: Sequence[RequestsPerLeaf]) -> RequestsPerLeaf:
        """Each count's median over ``builds``: a stray reconnect in one build does not show."""
        return cls(
            **{
                field.name: statistics.median(getattr(build, field.name) for build in builds)
                for field in dataclasses.fields(cls)
            }
        )


@dataclasses.dataclass(frozen=True)
class Rounds:
    """One variant's cold and warm builds of N leaves, once per round, each round on a fresh workspace."""

    leaves: int
    builds: tuple[ColdAndWarm, ...]

    @property
    def count(self) -> int:
        """How many rounds there were."""
        return len(self.builds)

    def seconds(self, mode: str) -> float:
        """The median build time over the rounds."""
        return statistics.median(build.seconds(mode) for build in self.builds)

    def requests(self, mode: str) -> RequestsPerLeaf:
        """The builds' requests per leaf, each count's median over the rounds."""
        return RequestsPerLeaf.median(
            [RequestsPerLeaf.of(build.in_mode(mode), self.leaves) for build in self.builds]
        )

    def waited(self, mode: str) -> float:
        """The requests the thread running the tasks waited for in one build, the median over the rounds."""
        return statistics.median(build.in_mode(mode).requests.main_thread for build in self.builds)


@dataclasses.dataclass(frozen=True)
class WaitedRequests:
    """The requests the tasks' thread waits for in a build of N leaves: ``per_task * N + per_build``.

    A straight line through two sizes of one variant and mode: its slope is what one more leaf
    adds (its checks, dumps and loads); the rest is paid once per build whatever N, such as a
    new connection's greeting, the start-up check and the aggregate's own requests.
    """

    per_task: float
    per_build: float

    @classmethod
    def between(cls, smaller: Rounds, larger: Rounds, mode: str) -> WaitedRequests:
        per_task = (larger.waited(mode) - smaller.waited(mode)) / (larger.leaves - smaller.leaves)
        return cls(per_task=per_task, per_build=smaller.waited(mode) - per_task * smaller.leaves)


Cell = TypeVar("Cell")


def interleaved_rounds(
    rounds: int, workspaces: Callable[[int], Mapping[Cell, Workspace]]
) -> dict[Cell, Rounds]:
    """Each cell's cold and warm builds in every round, the cells one after the other within a round.

    ``workspaces(round_number)`` gives each cell a fresh workspace of that round: a cold build
    needs an empty cache.
    """
    builds: dict[Cell, list[ColdAndWarm]] = {}
    leaves: dict[Cell, int] = {}
    for round_number in range(rounds):
        for cell, workspace in workspaces(round_number).items():
            builds.setdefault(cell, []).append(workspace.cold_and_warm())
            leaves[cell] = workspace.leaves
    return {cell: Rounds(leaves[cell], tuple(cell_builds)) for cell, cell_builds in builds.items()}


@dataclasses.dataclass(frozen=True)
class DagResult:
    """Per number of leaves, per variant: the cold and warm builds of every round."""

    builds: dict[tuple[int, Variant], Rounds]

    @property
    def sizes(self) -> list[int]:
        return sorted({leaves for leaves, _ in self.builds})

    def rounds(self, leaves: int) -> int:
        return self.builds[leaves, Variant.UNLOCKED].count

    def ratio(self, leaves: int, variant: Variant, mode: str) -> float:
        """``variant``'s median build time over unlocked gokart's, for ``leaves`` leaves."""
        unlocked = self.builds[leaves, Variant.UNLOCKED]
        return self.builds[leaves, variant].seconds(mode) / unlocked.seconds(mode)

    def requests(self, leaves: int, variant: Variant, mode: str) -> RequestsPerLeaf:
        return self.builds[leaves, variant].requests(mode)

    def waited(self, variant: Variant, mode: str) -> WaitedRequests:
        """``variant``'s waited requests per task and per build, from the smallest and the largest N."""
        smallest, *_, largest = self.sizes
        return WaitedRequests.between(self.builds[smallest, variant], self.builds[largest, variant], mode)


def _workspaces(
    directory: str, redis: RedisAddress, leaves: int, gokart_lock_rounds: int, round_number: int
) -> dict[Variant, Workspace]:
    """A fresh workspace per variant for one round of the builds of ``leaves`` leaves; gokart's
    lock only in the first ``gokart_lock_rounds`` rounds."""
    return {
        variant: Workspace(
            directory=os.path.join(directory, f"dag-{leaves}-{variant.name.lower()}-{round_number}"),
            variant=variant,
            leaves=leaves,
            redis=redis,
            control_url=redis.url,
        )
        for variant in DAG_VARIANTS
        if variant is not Variant.GOKART_LOCK or round_number < gokart_lock_rounds
    }


def measure(
    directory: str, redis: RedisAddress, rounds: Mapping[int, int], gokart_lock_rounds: int
) -> DagResult:
    """``rounds[N]`` rounds of the cold and warm builds of N leaves, for two sizes N or more, of
    unlocked gokart and LockedTarget; gokart's lock, which no goal judges here, in at most
    ``gokart_lock_rounds`` of them (its builds take the longest)."""
    if len(rounds) < 2:
        raise ValueError(
            "scenario 6 needs two sizes or more to tell requests per task from those per build, "
            f"got {list(rounds)}"
        )
    builds = {}
    for leaves, count in rounds.items():
        size_workspaces = functools.partial(_workspaces, directory, redis, leaves, gokart_lock_rounds)
        for variant, variant_rounds in interleaved_rounds(count, size_workspaces).items():
            builds[leaves, variant] = variant_rounds
    return DagResult(builds)


def legend() -> list[str]:
    return [f"  {variant.letter} {variant.title}: {TASK_RECIPES[variant]}" for variant in DAG_VARIANTS]


def rounds_legend(result: DagResult) -> str:
    """How many rounds each size N was built in, as a legend says it."""
    sizes = ", ".join(f"{result.rounds(leaves)} for N = {leaves}" for leaves in result.sizes)
    gokart_lock = "/".join(str(result.builds[leaves, Variant.GOKART_LOCK].count) for leaves in result.sizes)
    return f"{sizes}; (b), which no goal here judges, only in the first {gokart_lock} of them"


def requests_legend() -> list[str]:
    return [
        "Redis requests per leaf (the build's requests / N, each count the median over the rounds): "
        "'waited' = sent by the thread running",
        "the tasks (luigi's worker), each a round trip it waits for; 'background' = lease renewals, the "
        "pub/sub listener, gokart's lock",
        "extender (counted in redis-py, a pipeline once); 'scripts' and 'all commands' = INFO commandstats "
        "of the server (CONFIG RESETSTAT",
        "before the build); 'all commands' includes those run inside Lua scripts, which Redis cannot tell "
        "from requests. Each '/N' spreads",
        "what a build pays once over its leaves; the table after it separates the two for 'waited'.",
    ]


def requests_cells(requests: RequestsPerLeaf) -> list[str]:
    return [
        f"{requests.main_thread:.2f}",
        f"{requests.background:.2f}",
        f"{requests.scripts:.2f}",
        f"{requests.server_commands:.1f}",
    ]


REQUESTS_HEADERS = ("waited/N", "background/N", "scripts/N", "all commands/N")


def waited_legend(result: DagResult) -> list[str]:
    smallest, *_, largest = result.sizes
    return [
        f"Requests the thread running the tasks waited for in one build (the median), as a line through N = "
        f"{smallest} and N = {largest}:",
        f"'per task' = (waited({largest}) - waited({smallest})) / {largest - smallest}, what each further "
        "leaf adds (its checks, dumps and loads);",
        f"'per build' = waited({smallest}) - {smallest} x 'per task', paid once whatever N: such as a new "
        "connection's greeting, (c)'s start-up",
        "check of the server (an INFO, rwlock/server_checks.py) and the aggregate's own requests. Goals of "
        f"issue 9, on 'per task': <= {COLD_REQUESTS_GOAL:g} cold,",
        f"<= {WARM_REQUESTS_GOAL:g} warm.",
    ]


def waited_cells(waited: WaitedRequests) -> list[str]:
    return [f"{waited.per_task:.2f}", f"{waited.per_build:.1f}"]


def report(result: DagResult) -> str:
    time_rows = []
    request_rows = []
    for leaves in result.sizes:
        for variant in DAG_VARIANTS:
            builds = result.builds[leaves, variant]
            time_rows.append(
                [
                    str(leaves),
                    f"{variant.letter} {variant.title}",
                    *(
                        cell
                        for mode in MODES
                        for cell in (
                            f"{builds.seconds(mode):.2f}",
                            f"{result.ratio(leaves, variant, mode):.2f}x",
                        )
                    ),
                ]
            )
            if variant is not Variant.UNLOCKED:
                request_rows.append(
                    [
                        str(leaves),
                        f"{variant.letter} {variant.title}",
                        *(
                            cell
                            for mode in MODES
                            for cell in requests_cells(result.requests(leaves, variant, mode))
                        ),
                    ]
                )
    waited_rows = [
        [
            f"{variant.letter} {variant.title}",
            *(cell for mode in MODES for cell in waited_cells(result.waited(variant, mode))),
        ]
        for variant in LOCKED_DAG_VARIANTS
    ]
    return "\n".join(
        [
            heading("6. A DAG of N small tasks, built with gokart.build (Redis on loopback)"),
            "N leaves, each dumping a small dict, and one aggregate that requires and loads them all; one "
            "gokart.build with its local scheduler",
            "and one worker, each build in a fresh process on a workspace of its own (wall time of the build "
            "alone, timed inside that process).",
            "cold: empty cache, every task computed (gokart also dumps 5 log files per task). warm: every "
            "leaf present, the aggregate's",
            "output removed: N completeness checks, N loads, one aggregate run. Run lock off. Each round "
            "builds every variant cold, then warm,",
            "on fresh workspaces, the variants one after the other; rounds: "
            f"{rounds_legend(result)}. Seconds: the median over the rounds.",
            "Ratios: that median over (a)'s of the same N and mode.",
            *legend(),
            "",
            table(
                ["N", "variant", "cold s", "cold / (a)", "warm s", "warm / (a)"],
                time_rows,
            ),
            "",
            *requests_legend(),
            table(
                [
                    "N",
                    "variant",
                    *(f"{mode} {header}" for mode in MODES for header in REQUESTS_HEADERS),
                ],
                request_rows,
            ),
            "",
            *waited_legend(result),
            table(
                [
                    "variant",
                    *(f"{mode} {header}" for mode in MODES for header in ("per task", "per build")),
                ],
                waited_rows,
            ),
        ]
    )
