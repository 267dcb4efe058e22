"""One build of the DAG of scenarios 6 to 8, in a fresh process: no luigi or gokart state leaks across builds.

``python -m bench.dag_application {gokart,locked_targets} LEAVES {cold,warm}`` reads its
luigi configuration from ``LUIGI_CONFIG_PATH``. A warm build first removes the aggregate's
output (the leaves' stay), so it checks N leaves complete and loads N of them. Around the
build it resets the statistics of the Redis server named by ``BENCH_DAG_CONTROL_URL`` (if
set; directly, not through a delay proxy) and reads them back, and it counts the requests
its own redis-py connections send. It prints one ``result`` line of JSON (``BuildReport``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import gokart
import redis
from gokart.target import TargetOnKart

from bench import client_requests
from bench.client_requests import ClientRequests
from bench.dag_pipeline import AGGREGATES

RESULT = "result"
CONTROL_URL_VARIABLE = "BENCH_DAG_CONTROL_URL"
# The commands the control connection itself sends around the build.
_CONTROL_COMMANDS = ("cmdstat_config", "cmdstat_info")


@dataclasses.dataclass(frozen=True)
class BuildReport:
    """What one build took: wall seconds, requests sent by thread, and commands the server ran by name."""

    seconds: float
    requests: ClientRequests
    server_commands: dict[str, int]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BuildReport:
        fields = json.loads(text)
        return cls(**{**fields, "requests": ClientRequests(**fields["requests"])})


def main(base: str, leaves: int, mode: str) -> int:
    client_requests.start_counting()
    aggregate = AGGREGATES[base](leaves=leaves)
    if mode == "warm":
        output = aggregate.output()
        assert isinstance(output, TargetOnKart)
        os.remove(output.path())
    control_url = os.environ.get(CONTROL_URL_VARIABLE)
    control = redis.Redis.from_url(control_url) if control_url else None
    if control is not None:
        control.config_resetstat()
    sent_before = client_requests.sent_so_far()
    started = time.perf_counter()
    gokart.build(aggregate, return_value=False)
    seconds = time.perf_counter() - started
    sent = client_requests.sent_so_far() - sent_before
    server_commands = (
        {
            name.removeprefix("cmdstat_"): int(stats["calls"])
            for name, stats in control.info("commandstats").items()
            if not name.startswith(_CONTROL_COMMANDS)
        }
        if control is not None
        else {}
    )
    print(RESULT, BuildReport(seconds, sent, server_commands).to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
