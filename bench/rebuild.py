"""Rebuild throughput: `ordo rebuild` over the log of N tasks with retries, cancels and replays.

    .venv/bin/python -m bench.rebuild [--tasks 20000] [--batch 1000] [--concurrency 16] [--profile F]
        [--repeat K]

Embedded NATS and PostgreSQL (fsync on) in a temp folder. The tasks are driven through their
lifecycles (tests/rebuild_workload.py) with a live projector running; once it has caught up, the
rebuild runs as `python -m ordo.cli rebuild` (all projections, shadow tables, swap) while the live
projector stays up. Prints events/s of the rebuild and checks the swapped tables hash equal to the
live ones. The rebuild process runs with its clock a day ahead (libfaketime). `--repeat K` rebuilds
K times over the same log (one line each; driving the workload takes minutes, a rebuild seconds), with
the CPU seconds the rebuild command and PostgreSQL used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import libfaketime

from bench.common import ROOT, ProcSampler, emit, server_pids, servers
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.nats_conn import connect, provision
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers
from ordo.projections.runner import ProjectionRunner, lag
from tests.helpers import eventually
from tests.rebuild_workload import drive
from tests.test_rebuild import all_tables, table_hashes

ROUND = 2000


async def main(
    tasks: int, batch: int, concurrency: int, profile: Path | None = None, repeat: int = 1
) -> None:
    with servers() as srv:
        settings = Settings(
            nats_url=srv.nats.url,
            database_url=srv.postgres.url,
            tenant="b" + uuid.uuid4().hex[:8],
            projection_batch=batch,
        )
        nc = await connect(settings, name="bench-rebuild")
        await provision(nc, settings)
        handler = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
        projector = ProjectionRunner(nc, settings.database_url)
        live = asyncio.create_task(projector.run())
        t0 = time.perf_counter()
        paths: Counter[str] = Counter()
        for done in range(0, tasks, ROUND):  # rounds keep the in-flight load of the generator bounded
            paths += await drive(handler, settings.tenant, min(ROUND, tasks - done), concurrency)
            print(f"driven {done + ROUND} tasks in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        drive_s = time.perf_counter() - t0
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
        assert pool is not None

        async def caught_up() -> bool:
            return not any((await lag(pool, nc)).values())

        await eventually(caught_up, timeout=600, interval=0.2, what="live projector caught up")
        events = await pool.fetchval("SELECT count(*) FROM task_events")
        before = await table_hashes(settings.database_url, all_tables())
        # The rebuild runs with its clock a day ahead (libfaketime): projections must not read it.
        _, preload = libfaketime.get_reload_information()
        env = {**os.environ, **settings.to_env(), **preload, "FAKETIME": "+1d", "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "ordo.cli", "rebuild"]
        if profile is not None:  # py-spy's collapsed stacks of the rebuild (bench.profile_summary)
            py_spy = str(Path(sys.executable).parent / "py-spy")
            cmd = [py_spy, "record", "--format", "raw", "--rate", "200", "-o", str(profile), "--", *cmd]
        for run in range(1, repeat + 1):
            sampler = ProcSampler({"postgres": server_pids(srv)["postgres"]}).start()
            children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t1 = time.perf_counter()
            out = await asyncio.to_thread(
                subprocess.run, cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True
            )
            wall = time.perf_counter() - t1
            children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = sampler.stop()
            after = await table_hashes(settings.database_url, all_tables())
            m = re.search(r"(\d+) events in ([\d.]+) s \((\d+) events/s\)", out.stdout)
            assert m, out.stdout + out.stderr
            rebuild_cpu = sum(getattr(children1, f) - getattr(children0, f) for f in ("ru_utime", "ru_stime"))
            emit(
                {
                    "bench": "rebuild",
                    "run": run,
                    "tasks": tasks,
                    "paths": dict(paths),
                    "log_events": events,
                    "workload_s": round(drive_s, 1),
                    "rebuild_events": int(m.group(1)),
                    "rebuild_s": float(m.group(2)),
                    "rebuild_events_per_s": int(m.group(3)),
                    "command_wall_s": round(wall, 2),
                    "cpu_s": {"rebuild": round(rebuild_cpu, 2), "postgres": cpu["postgres"]["cpu_s"]},
                    "rebuild_clock": "+1 day (libfaketime)",
                    "tables_equal": before == after,
                    "tables_differing": sorted(t for t in after if before.get(t) != after[t]),
                    "rows": {t: n for t, (n, _) in after.items()},
                    "log": [
                        line
                        for line in (out.stdout + out.stderr).splitlines()
                        if "rebuil" in line or "built" in line
                    ],
                }
            )
        await projector.shutdown()
        await live
        await pool.close()
        await nc.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16, help="tasks driven at once")
    ap.add_argument("--profile", type=Path, default=None, help="py-spy output file (collapsed stacks)")
    ap.add_argument("--repeat", type=int, default=1, help="rebuilds over the same log")
    a = ap.parse_args()
    asyncio.run(main(a.tasks, a.batch, a.concurrency, a.profile, a.repeat))
