"""W1 throughput: N no-op tasks submitted as fast as the client allows (atomic batches), workers
running; time from the first submit to the last task `succeeded` in the read model. Also runs the
bare JetStream loop on the same machine and reports the ratio.

    .venv/bin/python -m bench.w1_throughput [--n 20000] [--workers 1] [--concurrency 256] [--sync-always]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import msgspec

from bench.bare_loop import bare_loop
from bench.common import Components, emit, servers
from domain.commands import SubmitTask
from infra.command_handler import CommandHandler
from infra.event_store import EventStore
from infra.ids import new_task_id
from infra.nats_conn import connect, provision
from infra.settings import Settings
from infra.timers import Timers


async def _wait_projected(dsn: str, tenant: str, n: int, timeout: float) -> tuple[float, list[float]]:
    """Wait until n tasks succeeded in the read model; sample projection lag meanwhile (events)."""
    conn = await asyncpg.connect(dsn)
    lags: list[float] = []
    deadline = time.perf_counter() + timeout
    try:
        while True:
            try:
                done = await conn.fetchval(
                    "SELECT count(*) FROM tasks WHERE tenant=$1 AND status='succeeded'", tenant
                )
            except asyncpg.UndefinedTableError:
                done = 0  # the projector has not created its tables yet
            if done >= n:
                return time.perf_counter(), lags
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {done}/{n} succeeded after {timeout}s")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def _counts(dsn: str, tenant: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        dup = await conn.fetchval(
            "SELECT count(*) FROM (SELECT task_id FROM task_events WHERE tenant=$1 AND type='succeeded'"
            " GROUP BY task_id HAVING count(*) > 1) d",
            tenant,
        )
        total = await conn.fetchval("SELECT count(*) FROM tasks WHERE tenant=$1", tenant)
        return int(dup), int(total)
    finally:
        await conn.close()


async def run(nats_url: str, dsn: str, n: int, chunk: int) -> dict[str, float]:
    tenant = "w1" + uuid.uuid4().hex[:6]
    settings = Settings(nats_url=nats_url, database_url=dsn, tenant=tenant)
    nc = await connect(settings, "bench-w1")
    await provision(nc, settings)
    handler = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
    now = datetime.now(UTC)
    commands = [
        SubmitTask(
            task_id=new_task_id(),
            tenant=tenant,
            queue="default",
            task_type="demo.echo",
            now=now,
            payload=msgspec.Raw(b"null"),
        )
        for _ in range(n)
    ]
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        await handler.submit_many(tenant, commands[start : start + chunk])
    t_submitted = time.perf_counter()
    t_done, _ = await _wait_projected(dsn, tenant, n, timeout=600)
    dup, total = await _counts(dsn, tenant)
    await nc.close()
    return {
        "tasks_per_s": n / (t_done - t0),
        "submit_per_s": n / (t_submitted - t0),
        "wall_s": t_done - t0,
        "lost": n - total,
        "duplicate_succeeded": dup,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--sync-always", action="store_true")
    args = parser.parse_args()
    with servers(sync_always=args.sync_always) as srv:
        ceiling = bare_loop(srv.nats.url, args.n)
        comps = Components({**srv.env, "ORDO_WORKER_CONCURRENCY": str(args.concurrency)})
        comps.start("projector", "projector")
        for i in range(args.workers):
            comps.start(f"worker-{i + 1}", "worker")
        try:
            result = asyncio.run(run(srv.nats.url, srv.postgres.url, args.n, args.chunk))
            usage = comps.usage()
        finally:
            comps.stop()
    emit(
        {
            "bench": "w1_throughput",
            "n": args.n,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "sync_always": args.sync_always,
            **{k: round(v, 2) for k, v in result.items()},
            "bare_loop_tasks_per_s": round(ceiling),
            "ratio_to_bare_loop": round(result["tasks_per_s"] / ceiling, 3),
            "processes": usage,
        }
    )


if __name__ == "__main__":
    main()

