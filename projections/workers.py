"""The `workers` read model: every worker's last heartbeat, with its status derived at read time.

Not a projection of the event log: workers announce themselves on the ORDO_WORKERS stream, which
keeps the last heartbeat per worker (see workers.registry). A read is one batched direct get of the
last message of every `ordo.worker.hb.*` subject, served by any replica. Status:
`offline` (stopped cleanly), `lost` (no heartbeat for 3 of its periods: killed, hung, partitioned),
`draining` (takes no new work, or shutting down), else `online`. Ages use the stream's own
timestamps against the reader's clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS

from ordo.infra.heartbeats import LOST_AFTER_PERIODS, Heartbeat, read_heartbeats


def status_of(hb: Heartbeat, stored_at: datetime, now: datetime) -> str:
    if hb.state == "offline":
        return "offline"
    if (now - stored_at).total_seconds() > LOST_AFTER_PERIODS * hb.every_s:
        return "lost"
    if hb.state in ("draining", "stopping"):
        return "draining"
    return "online"


def view(hb: Heartbeat, stored_at: datetime, now: datetime, tenant: str) -> dict[str, Any]:
    """The API shape of one worker. In-flight task ids are shown for the caller's tenant only."""
    status = status_of(hb, stored_at, now)
    live = status not in ("offline", "lost")
    return {
        "id": hb.worker_id,
        "status": status,
        "host": hb.host,
        "pid": hb.pid,
        "queues": list(hb.queues),
        "handlers": list(hb.handlers),
        "concurrency": hb.concurrency,
        "type_limits": hb.type_limits,
        "last_heartbeat": stored_at.isoformat(),
        "heartbeat_every_s": hb.every_s,
        "in_flight": hb.in_flight if live else 0,
        "tasks": [
            {"task_id": task_id, "attempt": attempt}
            for (t, task_id, attempt) in hb.tasks
            if t == tenant and live
        ],
        "processed": hb.processed,
        "succeeded": hb.succeeded,
        "failed": hb.failed,
        "cancelled": hb.cancelled,
        "released": hb.released,
        "poison": hb.poison,
        "paced_waits": hb.paced_waits,
        "paced_s": hb.paced_s,
        "cpu_pct": hb.cpu_pct,
        "rss_bytes": hb.rss_bytes,
        "started_at": hb.started_at.isoformat(),
    }


async def list_workers(nc: NATS, tenant: str, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or datetime.now(UTC)
    rows = [view(hb, at, now, tenant) for hb, at in await read_heartbeats(nc)]
    order = {"online": 0, "draining": 1, "lost": 2, "offline": 3}
    return sorted(rows, key=lambda r: (order[r["status"]], r["id"]))


async def get_worker(nc: NATS, tenant: str, worker_id: str) -> dict[str, Any] | None:
    return next((w for w in await list_workers(nc, tenant) if w["id"] == worker_id), None)
