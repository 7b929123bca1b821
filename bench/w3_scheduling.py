"""W3: delayed-task punctuality. Prints one JSON line.

Default: 2,000 tasks with `run_at` 5 s ahead, spread evenly over 1 s. `--delay-only` (issue 4 point
1, also `bench/delay_500.py`): 500 tasks each with `delay` 3 s from its own submit time.

Starts its own embedded nats-server on a temp dir (loopback only), one scheduler and one worker as
`python -m ordo.cli` child processes; no projector. Lateness is measured from the event log: the
server's stored time of each task's `queued` (the scheduler's EnqueueDue) and `attempt_started`
(the worker's start) minus its `run_at`. "early" counts starts before `run_at` (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ordo import event_loop
from ordo.domain import events as ev
from ordo.domain.commands import SubmitTask
from ordo.embedded.nats import EmbeddedNats, NatsServerConfig
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.ids import new_task_id
from ordo.infra.nats_conn import connect, provision
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers

REPO = Path(__file__).resolve().parent.parent
TENANT = "bench"


def summary(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values, default=0), 2),
        "p50": round(_pct(values, 50), 2),
        "p99": round(_pct(values, 99), 2),
        "max": round(max(values, default=0), 2),
    }


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every child, then wait for each (killed after 20 s)."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def spawn(env: dict[str, str], tmp: Path) -> list[subprocess.Popen[bytes]]:
    """A scheduler and a worker as `python -m ordo.cli` children, logging into `tmp`."""
    procs = []
    for cmd in ("scheduler", "worker"):
        log = open(tmp / f"{cmd}.log", "ab")  # noqa: SIM115 - lives as long as the child
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "ordo.cli", cmd], cwd=REPO, env=env, stdout=log, stderr=log
            )
        )
    return procs


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def run(
    n: int, ahead_s: float, spread_s: float, delay_only: bool, concurrency: int | None
) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="ordo-w3-"))
    server = EmbeddedNats(NatsServerConfig(data_dir=tmp / "nats"))
    await asyncio.to_thread(server.start)
    settings = Settings(nats_url=server.url, database_url="unused", tenant=TENANT, timer_lead_s=2.0)
    env = {
        **os.environ,
        **settings.to_env(),
        "ORDO_LOG_LEVEL": "WARNING",
        # The worker's concurrency is what a user gets unless --concurrency says otherwise.
        **({"ORDO_WORKER_CONCURRENCY": str(concurrency)} if concurrency else {}),
    }
    procs: list[subprocess.Popen[bytes]] = []
    nc = await connect(settings, name="bench")
    try:
        await provision(nc, settings)
        procs = spawn(env, tmp)
        handler = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
        await asyncio.sleep(1.5)  # let the children connect and create their consumers
        ids: list[str] = []
        if delay_only:
            sem = asyncio.Semaphore(32)

            async def one() -> None:
                async with sem:
                    now = datetime.now(UTC)
                    tid = new_task_id()
                    ids.append(tid)
                    at = now + timedelta(seconds=ahead_s)
                    cmd = SubmitTask(
                        task_id=tid, tenant=TENANT, queue="default", task_type="demo.echo", now=now, run_at=at
                    )
                    await handler.execute(TENANT, cmd)

            await asyncio.gather(*(one() for _ in range(n)))
        else:
            now = datetime.now(UTC)
            base = now + timedelta(seconds=ahead_s)
            cmds = [
                SubmitTask(
                    task_id=new_task_id(), tenant=TENANT, queue="default", task_type="demo.echo", now=now,
                    run_at=base + timedelta(seconds=spread_s * i / n),
                )
                for i in range(n)
            ]  # fmt: skip
            ids = [c.task_id for c in cmds]
            await handler.submit_many(TENANT, cmds)
        store = EventStore(nc, timeout=30)
        js = nc.jetstream()
        deadline = asyncio.get_running_loop().time() + ahead_s + spread_s + 60
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(1.0)
            succeeded = sj.events_named_filter("succeeded").replace(".*.", f".{TENANT}.", 1)
            info = await js.stream_info(sj.EVENTS_STREAM, subjects_filter=succeeded)
            if len(info.state.subjects or {}) >= n:
                break
        every, _ = await store.load_filter(f"ordo.evt.{TENANT}.>")
        run_at: dict[str, datetime] = {}
        queued: dict[str, datetime] = {}
        started: dict[str, datetime] = {}
        for e in every:
            if isinstance(e.event, ev.Scheduled):
                run_at[e.task_id] = e.event.run_at
            elif isinstance(e.event, ev.Queued) and e.task_id not in queued:
                queued[e.task_id] = e.stored_at
            elif isinstance(e.event, ev.AttemptStarted) and e.task_id not in started:
                started[e.task_id] = e.stored_at
        start_late = [
            (started[t] - run_at[t]).total_seconds() * 1000 for t in ids if t in started and t in run_at
        ]
        enq_late = [
            (queued[t] - run_at[t]).total_seconds() * 1000 for t in ids if t in queued and t in run_at
        ]
        return {
            "bench": "delay_500" if delay_only else "w3_scheduling",
            "tasks": n,
            "scheduled": len(run_at),
            "started": len(start_late),
            "early": sum(1 for x in start_late if x < 0),
            "start_lateness_ms": summary(start_late),
            "enqueue_lateness_ms": summary(enq_late),
            "worker_concurrency": concurrency or settings.worker_concurrency,
        }  # fmt: skip
    finally:
        stop(procs)
        await nc.close()
        await asyncio.to_thread(server.stop)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--delay-only", action="store_true", help="issue 4 point 1: 500 tasks, delay 3 s")
    ap.add_argument("--tasks", type=int, default=None)
    ap.add_argument("--ahead", type=float, default=None, help="seconds ahead (run_at) / delay")
    ap.add_argument("--spread", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=None, help="worker concurrency (default: a user's)")
    a = ap.parse_args(argv)
    n = a.tasks or (500 if a.delay_only else 2000)
    ahead = a.ahead or (3.0 if a.delay_only else 5.0)
    print(json.dumps(event_loop.run(run(n, ahead, a.spread, a.delay_only, a.concurrency))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
