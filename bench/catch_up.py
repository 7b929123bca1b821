"""The live projector's catch-up rate: W1's tasks run to the end with no projector, then the
projector starts and drains the backlog (the `submitted`, `attempt_started` and `succeeded` of
every task) with nothing else running. Reports events/s from its first commit to the read model
showing every task succeeded, and the CPU of the projector and PostgreSQL meanwhile.

This is the last part of W1 (`catch_up_s` there): once the workers are done, the backlog is all
that is left, and how fast it drains decides when the read model has caught up.

    .venv/bin/python -m bench.catch_up [--n 20000] [--payload-bytes 0]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import asyncpg

from bench.common import Components, ProcSampler, emit, load_average, server_pids, servers, succeeded_shown
from bench.w1_throughput import noop_submissions
from ordo import event_loop
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.nats_conn import connect, provision
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers


async def _run_tasks(nats_url: str, dsn: str, n: int, payload_bytes: int) -> str:
    """Submit n no-op tasks and wait until the log holds all their events (the worker is running)."""
    tenant = "c" + uuid.uuid4().hex[:6]
    settings = Settings(nats_url=nats_url, database_url=dsn, tenant=tenant)
    nc = await connect(settings, "bench-catch-up")
    try:
        await provision(nc, settings)
        handler = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
        commands = noop_submissions(tenant, n, payload_bytes)
        for start in range(0, n, 1000):
            await handler.submit_many(tenant, commands[start : start + 1000])
        js = nc.jetstream()
        deadline = time.monotonic() + 300
        while (await js.stream_info(sj.EVENTS_STREAM)).state.messages < 3 * n:
            if time.monotonic() > deadline:
                raise TimeoutError("the tasks did not finish")
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
    return tenant


async def _drained(dsn: str, tenant: str, n: int) -> tuple[float, int, float]:
    """(time of the projector's first commit, its checkpoint then, time every task showed succeeded)."""
    conn = None
    while conn is None:
        try:
            conn = await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(0.05)
    first: tuple[float, int] | None = None
    try:
        while True:
            try:
                if first is None:
                    seq = await conn.fetchval(
                        "SELECT last_seq FROM projection_checkpoints WHERE name='tasks'"
                    )
                    if seq:
                        first = (time.perf_counter(), int(seq))
                done = await succeeded_shown(conn, tenant, n)
            except asyncpg.UndefinedTableError:
                done = 0  # the projector has not created its checkpoints yet
            if done >= n and first is not None:
                return first[0], first[1], time.perf_counter()
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000, help="tasks (three events each)")
    parser.add_argument("--payload-bytes", type=int, default=0, help="each task's payload (and result) size")
    args = parser.parse_args()
    load_start = load_average()
    result: dict[str, Any] = {}
    with servers() as srv:
        comps = Components(srv.env)
        comps.start("worker", "worker")
        try:
            time.sleep(2.0)  # the worker connects and provisions
            tenant = event_loop.run(_run_tasks(srv.nats.url, srv.postgres.url, args.n, args.payload_bytes))
            comps.procs["worker"].terminate()
            comps.procs["worker"].wait(timeout=30)
            comps.start("projector", "projector")
            sampler = ProcSampler({**server_pids(srv), "projector": comps.procs["projector"].pid}).start()
            t_first, seq_first, t_done = event_loop.run(_drained(srv.postgres.url, tenant, args.n))
            usage = sampler.stop()
        finally:
            comps.stop()
    events = 3 * args.n - seq_first
    result = {
        "events_after_first_commit": events,
        "seconds": round(t_done - t_first, 3),
        "events_per_s": round(events / (t_done - t_first)),
        "processes": usage,
    }
    sizes = {"n": args.n, "payload_bytes": args.payload_bytes}
    emit({"bench": "catch_up", **sizes, **result, "loadavg_start": load_start})


if __name__ == "__main__":
    main()
