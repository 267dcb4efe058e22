"""One luigi application running the test pipeline: ``python -m helpers.run_lock_app``; 0 on success."""

from __future__ import annotations

import sys

import luigi

from helpers.run_lock_pipeline import Overlapping, Source, pipeline


def main(workspace: str, scheduler: str, what: str) -> int:
    tasks: dict[str, luigi.Task] = {
        "pipeline": pipeline(workspace),
        "source": Source(workspace_directory=workspace),
        "overlapping": Overlapping(workspace_directory=workspace),
        "overlapping-reversed": Overlapping(workspace_directory=workspace, reverse=True),
    }
    if scheduler == "local":
        result = luigi.build(  # type: ignore[no-untyped-call]
            [tasks[what]], local_scheduler=True, detailed_summary=True, log_level="WARNING"
        )
    else:
        host, port = scheduler.split(":")
        result = luigi.build(  # type: ignore[no-untyped-call]
            [tasks[what]],
            scheduler_host=host,
            scheduler_port=int(port),
            detailed_summary=True,
            log_level="WARNING",
        )
    print(result.summary_text)
    return 0 if result.status.name in ("SUCCESS", "SUCCESS_WITH_RETRY") else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
