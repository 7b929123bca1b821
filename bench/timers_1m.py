"""One million pending timers: nats-server's memory and restart time, the scheduler's start-up, and
whether timers coming due meanwhile still fire on time (issue 13).

Starts an embedded nats-server on a temp dir (deleted afterwards, loopback only), provisions the
product's streams and arms N timers a day ahead (due times spread over an hour), each exactly the
message a submit of a delayed task arms (`Timers.message` and `schedule_headers`: a pending `@at`
schedule on `ordo.timer.task.<tenant>.<task_id>.<due>` that fires into the task's due subject), with
windowed async publishes (the product awaits each one; this only fills the stream faster). Then,
with the N timers pending:

1. nats-server's RSS, VmHWM, the timer stream's bytes, the data dir's size, and its CPU while idle;
2. a scheduler and a worker start (`python -m ordo.cli scheduler|worker`, a user's defaults):
   seconds from spawn until the scheduler's consumer has a pull waiting (`scheduler_ready_s`);
3. a probe: P tasks with `run_at` a few seconds ahead, spread over 0.5 s; their enqueue and start
   lateness from the log (stored time of `queued` / `attempt_started` minus `run_at`), and early
   starts (must be 0);
4. nats-server restarted (children stopped, SIGTERM, same data dir and port): seconds until the port
   accepts, JetStream answers, and the timer stream shows every message; RSS after;
5. the scheduler and worker started again (`scheduler_ready_s` after the restart) and the probe again.

    .venv/bin/python -m bench.timers_1m [--timers 1000000] [--probe 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
from nats.js.errors import NotFoundError

from bench.common import emit, load_average, proc_usage
from bench.nats_1m import _dir_mb, _rss_mb, _until_ready
from bench.w3_scheduling import spawn, stop, summary
from ordo.domain import events as ev
from ordo.domain.commands import SubmitTask
from ordo.embedded.nats import EmbeddedNats, NatsServerConfig
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.ids import new_task_id
from ordo.infra.nats_conn import connect, provision
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers, schedule_headers

TENANT = "bench"


async def arm_timers(settings: Settings, n: int, window: int) -> dict[str, Any]:
    """N pending timers a day ahead, due times spread over one hour."""
    nc = await nats.connect(settings.nats_url, name="bench-timers-1m")
    timers = Timers(nc, settings.timer_lead_s, fired_ttl_s=settings.timer_fired_ttl_s)
    lead = timedelta(seconds=settings.timer_lead_s)
    js = nc.jetstream(publish_async_max_pending=window * 2)
    base = datetime.now(UTC) + timedelta(days=1)
    t0 = time.perf_counter()
    for start in range(0, n, window):
        futures = []
        for i in range(start, min(n, start + window)):
            due_at = base + timedelta(seconds=3600 * i / n)
            (timer_subject, due_subject), data = timers.message(TENANT, new_task_id(), due_at)
            headers = schedule_headers(due_subject, due_at - lead, timers.fired_ttl)
            futures.append(await js.publish_async(timer_subject, data, headers=headers))
        await asyncio.gather(*futures)
    elapsed = time.perf_counter() - t0
    info = await js.stream_info(sj.TIMERS_STREAM)
    await nc.close()
    return {
        "arm_s": round(elapsed, 1),
        "arm_per_s": round(n / elapsed),
        "timer_messages": info.state.messages,
        "timer_stream_mb": round(info.state.bytes / 2**20, 1),
    }


async def scheduler_ready(settings: Settings, t0: float, timeout: float = 300) -> float:
    """Seconds from `t0` until the scheduler's durable consumer has a pull request waiting."""
    nc = await nats.connect(settings.nats_url, name="bench-timers-1m-probe")
    js = nc.jetstream(timeout=5)
    try:
        while time.perf_counter() - t0 < timeout:
            try:
                info = await js.consumer_info(sj.TIMERS_STREAM, sj.SCHEDULER_CONSUMER)
                if (info.num_waiting or 0) > 0:
                    return round(time.perf_counter() - t0, 3)
            except NotFoundError:
                pass  # not created yet
            await asyncio.sleep(0.01)
        raise TimeoutError("the scheduler did not start pulling")
    finally:
        await nc.close()


async def probe(settings: Settings, p: int, ahead_s: float) -> dict[str, Any]:
    """P tasks due `ahead_s` from now, spread over 0.5 s: lateness of their enqueue and start."""
    nc = await connect(settings, name="bench-timers-1m-submit")
    try:
        handler = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
        now = datetime.now(UTC)
        base = now + timedelta(seconds=ahead_s)
        cmds = [
            SubmitTask(
                task_id=new_task_id(), tenant=TENANT, queue="default", task_type="demo.echo", now=now,
                run_at=base + timedelta(seconds=0.5 * i / p),
            )
            for i in range(p)
        ]  # fmt: skip
        ids = {c.task_id for c in cmds}
        await handler.submit_many(TENANT, cmds)
        store = EventStore(nc, timeout=30)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ahead_s + 60
        started: dict[str, datetime] = {}
        queued: dict[str, datetime] = {}
        run_at: dict[str, datetime] = {}
        while loop.time() < deadline:
            await asyncio.sleep(0.5)
            every, _ = await store.load_filter(f"ordo.evt.{TENANT}.>")
            for e in every:
                if e.task_id not in ids:
                    continue
                if isinstance(e.event, ev.Scheduled):
                    run_at[e.task_id] = e.event.run_at
                elif isinstance(e.event, ev.Queued):
                    queued.setdefault(e.task_id, e.stored_at)
                elif isinstance(e.event, ev.AttemptStarted):
                    started.setdefault(e.task_id, e.stored_at)
            if len(started) >= p:
                break
        start_late = [(started[t] - run_at[t]).total_seconds() * 1000 for t in started if t in run_at]
        enq_late = [(queued[t] - run_at[t]).total_seconds() * 1000 for t in queued if t in run_at]
        return {
            "tasks": p,
            "started": len(start_late),
            "early": sum(1 for x in start_late if x < 0),
            "enqueue_lateness_ms": summary(enq_late),
            "start_lateness_ms": summary(start_late),
        }
    finally:
        await nc.close()


def _children(env: dict[str, str], tmp: Path) -> tuple[list[subprocess.Popen[bytes]], float]:
    t0 = time.perf_counter()
    return spawn(env, tmp), t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timers", type=int, default=1_000_000, help="pending timers a day ahead")
    parser.add_argument("--window", type=int, default=2000, help="async publishes in flight")
    parser.add_argument("--probe", type=int, default=200, help="tasks due soon, timed while N are pending")
    parser.add_argument("--ahead", type=float, default=5.0, help="the probe's run_at, seconds ahead")
    args = parser.parse_args()
    load_start = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="ordo-timers1m-"))
    out: dict[str, Any] = {"bench": "timers_1m", "timers": args.timers, "loadavg_start": load_start}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        os.chmod(tmp, 0o755)
        server = EmbeddedNats(NatsServerConfig(data_dir=tmp / "nats"))
        server.start()
        settings = Settings(nats_url=server.url, database_url="unused", tenant=TENANT)
        env = {**os.environ, **settings.to_env(), "ORDO_LOG_LEVEL": "WARNING"}
        try:
            asyncio.run(_provision(settings))
            out.update(asyncio.run(arm_timers(settings, args.timers, args.window)))
            assert server.pid is not None
            out["rss_mb"] = _rss_mb(server.pid)
            out["peak_rss_mb"] = round(proc_usage(server.pid)[1] / 2**20, 1)
            cpu0 = proc_usage(server.pid)[0]
            time.sleep(10)  # idle: what do a million pending schedules cost the server per second?
            out["idle_cpu_per_s"] = round((proc_usage(server.pid)[0] - cpu0) / 10, 3)
            procs, t0 = _children(env, tmp)
            out["scheduler_ready_s"] = asyncio.run(scheduler_ready(settings, t0))
            out["probe"] = asyncio.run(probe(settings, args.probe, args.ahead))
            stop(procs)
            procs = []
            t_stop = time.perf_counter()
        finally:
            stop(procs)
            procs = []
            server.stop(timeout=120)
        out["stop_s"] = round(time.perf_counter() - t_stop, 2)
        out["disk_mb"] = _dir_mb(tmp / "nats")
        restarted = EmbeddedNats(NatsServerConfig(data_dir=tmp / "nats", port=server.port))
        t0 = time.perf_counter()
        restarted.start()
        try:
            out["restart_port_s"] = round(time.perf_counter() - t0, 3)
            ready = asyncio.run(_until_ready(restarted.url, 0, t0))
            out["restart_jetstream_s"] = ready["jetstream_s"]
            out["restart_timers_s"] = asyncio.run(_timers_back(restarted.url, out["timer_messages"], t0))
            assert restarted.pid is not None
            out["rss_after_restart_mb"] = _rss_mb(restarted.pid)
            procs, t1 = _children(env, tmp)
            out["scheduler_ready_after_restart_s"] = asyncio.run(scheduler_ready(settings, t1))
            out["probe_after_restart"] = asyncio.run(probe(settings, args.probe, args.ahead))
        finally:
            stop(procs)
            restarted.stop(timeout=120)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(out)


async def _provision(settings: Settings) -> None:
    nc = await connect(settings, name="bench-timers-1m-provision")
    try:
        await provision(nc, settings)
    finally:
        await nc.close()


async def _timers_back(url: str, expected: int, t0: float, timeout: float = 300) -> float:
    """Seconds from `t0` until the timer stream shows at least `expected` messages again."""
    nc = await nats.connect(url, name="bench-timers-1m-restart")
    js = nc.jetstream(timeout=5)
    try:
        while time.perf_counter() - t0 < timeout:
            try:
                info = await js.stream_info(sj.TIMERS_STREAM)
                if info.state.messages >= expected:
                    return round(time.perf_counter() - t0, 3)
            except Exception:  # noqa: BLE001 - still recovering
                pass
            await asyncio.sleep(0.01)
        raise TimeoutError("the timer stream did not come back")
    finally:
        await nc.close()


if __name__ == "__main__":
    sys.exit(main())
