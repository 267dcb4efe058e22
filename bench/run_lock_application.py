"""One application of scenario 4, as its own OS process with its own luigi local scheduler and worker.

``python -m bench.run_lock_application {locked_targets,gokart}`` reads its luigi
configuration from ``LUIGI_CONFIG_PATH``, prints ``ready`` once everything is imported,
waits for a line on stdin (the common start of all applications), builds the chain and
exits 0 when luigi reports success.
"""

from __future__ import annotations

import sys

import luigi

from bench.run_lock_pipeline import STEP_CLASSES, STEPS, record

READY = "ready"


def main(run_lock: str) -> int:
    last_step = STEP_CLASSES[run_lock](step=STEPS)
    print(READY, flush=True)
    sys.stdin.readline()
    result = luigi.build(  # type: ignore[no-untyped-call]
        [last_step], local_scheduler=True, detailed_summary=True, log_level="WARNING"
    )
    record("finished", None)
    print(result.summary_text, file=sys.stderr)
    return 0 if result.status.name in ("SUCCESS", "SUCCESS_WITH_RETRY") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
