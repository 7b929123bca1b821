"""Cron punctuality: a schedule ticking every second; how late each tick's task starts. One JSON line.

    .venv/bin/python -m bench.cron_ticks [--ticks 60]

Starts its own embedded nats-server on a temp dir (loopback only), one scheduler and one worker as
`python -m ordo.cli` child processes with the settings a user gets (no projector: lateness is read
from the event log). Creates a schedule `* * * * * *` (second, minute, ... : every second, overlap
`allow`) for a no-op task type, lets it tick `--ticks` times, deletes it, then measures per tick:
- fire lateness: the server's stored time of the schedule's `fired` event minus the tick's time;
- start lateness: the stored time of the tick task's first `attempt_started` minus the tick's time.
"early" counts starts before their tick (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.w3_scheduling import spawn, stop, summary
from ordo import event_loop
from ordo.domain import events as ev
from ordo.domain import schedule_commands as sc
from ordo.domain import schedule_events as se
from ordo.embedded.nats import EmbeddedNats, NatsServerConfig
from ordo.infra import subjects as sj
from ordo.infra.event_store import EventStore
from ordo.infra.ids import new_task_id
from ordo.infra.nats_conn import connect, provision
from ordo.infra.settings import Settings
from ordo.infra.wiring import command_handler, schedule_handler

REPO = Path(__file__).resolve().parent.parent
TENANT = "bench"


async def run(ticks: int) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="ordo-cron-"))
    server = EmbeddedNats(NatsServerConfig(data_dir=tmp / "nats"))
    await asyncio.to_thread(server.start)
    settings = Settings(nats_url=server.url, database_url="unused", tenant=TENANT)
    env = {**os.environ, **settings.to_env(), "ORDO_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)}
    procs: list[subprocess.Popen[bytes]] = []
    nc = await connect(settings, name="bench-cron")
    try:
        await provision(nc, settings)
        procs = spawn(env, tmp)
        await asyncio.sleep(2.0)  # let the children connect and create their consumers
        schedules = schedule_handler(nc, command_handler(nc, settings), settings)
        sid = new_task_id()
        spec = se.ScheduleSpec(
            cron="* * * * * *",
            timezone="UTC",
            task=se.TaskTemplate(type="demo.echo"),
            overlap=se.OverlapPolicy.ALLOW,
        )
        await schedules.execute(
            TENANT, sc.CreateSchedule(schedule_id=sid, tenant=TENANT, spec=spec, now=datetime.now(UTC))
        )
        await asyncio.sleep(ticks + 1.5)
        await schedules.execute(TENANT, sc.DeleteSchedule(schedule_id=sid))
        await asyncio.sleep(2.0)  # the last tick's task starts
        store = EventStore(nc, timeout=30)
        fired: dict[str, tuple[datetime, datetime]] = {}  # task id -> (tick, stored)
        raw, _ = await store.load_raw(sj.schedule_events_filter(TENANT, sid))
        for r in raw:
            event = se.decode_schedule_event(r.data)
            if isinstance(event, se.ScheduleFired):
                fired[event.task_id] = (event.tick_at, r.stored_at)
        started: dict[str, datetime] = {}
        every, _ = await store.load_filter(f"ordo.evt.{TENANT}.>")
        for e in every:
            if isinstance(e.event, ev.AttemptStarted) and e.task_id not in started:
                started[e.task_id] = e.stored_at
        fire_late = [(stored - tick).total_seconds() * 1000 for tick, stored in fired.values()]
        by_tick = sorted((tick, t) for t, (tick, _) in fired.items() if t in started)
        start_late = [(started[t] - tick).total_seconds() * 1000 for tick, t in by_tick]
        worst = sorted(range(len(start_late)), key=lambda i: -start_late[i])[:5]
        return {
            "bench": "cron_ticks",
            "cron": spec.cron,
            "ticks_fired": len(fired),
            "started": len(start_late),
            "early": sum(1 for x in start_late if x < 0),
            "fire_lateness_ms": summary(fire_late),
            "start_lateness_ms": summary(start_late),
            "worst_starts": [{"tick": i + 1, "ms": round(start_late[i], 2)} for i in worst],
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "loadavg_end": list(os.getloadavg()),
        }
    finally:
        stop(procs)
        await nc.close()
        await asyncio.to_thread(server.stop)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ticks", type=int, default=60)
    a = ap.parse_args(argv)
    start = list(os.getloadavg())
    result = event_loop.run(run(a.ticks))
    print(json.dumps({**result, "loadavg_start": start}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
