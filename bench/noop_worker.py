"""A worker process for the latency benchmarks: the product's worker (`workers.service.run_worker`)
with one extra handler, `bench.noop`, that returns the wall-clock time it started (time.time()).

    python -m bench.noop_worker        (same ORDO_* environment as `ordo worker`)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordo import event_loop  # noqa: E402
from ordo.infra.logs import setup_logging  # noqa: E402
from ordo.infra.settings import Settings  # noqa: E402
from ordo.worker_process import run_worker  # noqa: E402
from ordo.workers.context import TaskContext  # noqa: E402
from ordo.workers.demo import registry  # noqa: E402

TASK_TYPE = "bench.noop"


@registry.task(TASK_TYPE)
async def noop(ctx: TaskContext) -> dict[str, float]:
    """Record when the handler started; do nothing else."""
    return {"started": time.time()}


def main() -> None:
    setup_logging()
    event_loop.run(run_worker(Settings.from_env()))


if __name__ == "__main__":
    main()
