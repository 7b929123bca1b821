"""W2 latency: submit at a fixed rate (default 200 tasks/s for 20 s), one task per request, first
through the NATS command API (`ordo.cmd.<tenant>.submit`, request/reply) and then through HTTP
(`POST /v1/tasks`). A no-op handler (`bench.noop`, bench/noop_worker.py) records the wall-clock time
it started. Reports, per path, submit->start p50/p95/p99, submit->reply, submit->visible in the read
model (the projector's commit NOTIFY covering the task's `submitted` sequence) and submit->visible on
an SSE stream (`GET /v1/events/stream`, one global client) p50/p99; and, for 200 tasks per path read
back from the log afterwards, submit->start cut into its hops (`hops_ms`).

Processes: nats-server, postgres, projector, one worker, one gateway (auth off), and this client.

    .venv/bin/python -m bench.w2_latency [--rate 200] [--duration 20] [--via nats,http] [--sync-always]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import nats
from nats.aio.client import Client as NATS

from bench import sse
from bench.common import (
    CommitClock,
    Components,
    ProcSampler,
    emit,
    load_average,
    server_pids,
    servers,
    sleep_until,
    summary,
)
from bench.httpclient import HttpPool
from bench.noop_worker import TASK_TYPE
from ordo import event_loop
from ordo.infra import subjects as sj
from ordo.infra.event_store import EventStore

HOPS_SAMPLE = 200  # tasks per path whose events are read back for the per-hop figures

TENANT = "default"  # the gateway's tenant with auth off
BODY = json.dumps({"type": TASK_TYPE, "payload": None}).encode()


@dataclass
class Sent:
    t_send: float
    t_reply: float = 0.0
    task_id: str = ""
    seq: int = 0
    error: str = ""


async def _submit_nats(nc: NATS, rec: Sent) -> None:
    rec.t_send = time.time()
    try:
        msg = await nc.request(sj.cmd_subject(TENANT, "submit"), BODY, timeout=10)
    except Exception as exc:  # noqa: BLE001 - counted and reported
        rec.error = repr(exc)
        return
    rec.t_reply = time.time()
    status = (msg.headers or {}).get(sj.REPLY_STATUS, "")
    if status != "202":
        rec.error = f"status {status}: {msg.data[:200]!r}"
        return
    body = json.loads(msg.data)
    rec.task_id, rec.seq = body["id"], int(body["seq"])


async def _submit_http(client: HttpPool, rec: Sent) -> None:
    rec.t_send = time.time()  # before waiting for a free connection: queueing counts
    try:
        status, data = await client.post("/v1/tasks", BODY)
    except Exception as exc:  # noqa: BLE001 - counted and reported
        rec.error = repr(exc)
        return
    rec.t_reply = time.time()
    if status != 202:
        rec.error = f"status {status}: {data[:200]!r}"
        return
    body = json.loads(data)
    rec.task_id, rec.seq = body["id"], int(body["seq"])


async def _wait_succeeded(pool: asyncpg.Pool, ids: list[str], timeout: float) -> dict[str, float]:
    """Wait until every task succeeded in the read model; {task id: handler start time}."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await pool.fetch(
            "SELECT id, result FROM tasks WHERE tenant=$1 AND id = ANY($2::text[]) AND status='succeeded'",
            TENANT,
            ids,
        )
        if len(rows) >= len(ids) or time.monotonic() > deadline:
            return {r["id"]: float(json.loads(r["result"])["started"]) for r in rows}
        await asyncio.sleep(0.25)


async def _phase(
    via: str,
    rate: float,
    duration: float,
    nc: NATS,
    client: HttpPool,
    pool: asyncpg.Pool,
    clock: CommitClock,
    sse_seen: dict[str, float],
) -> dict[str, Any]:
    n = int(rate * duration)
    sent = [Sent(0.0) for _ in range(n)]
    inflight: list[asyncio.Task[None]] = []
    t0 = time.perf_counter()
    for i, rec in enumerate(sent):
        await sleep_until(t0 + i / rate)
        coro = _submit_nats(nc, rec) if via == "nats" else _submit_http(client, rec)
        inflight.append(asyncio.create_task(coro))
    send_span = time.perf_counter() - t0
    # Bounded: whatever has not been answered 30 s after the last send counts as an error.
    _, late = await asyncio.wait(inflight, timeout=30)
    for task in late:
        task.cancel()
    await asyncio.gather(*inflight, return_exceptions=True)
    for rec in sent:
        if not rec.error and not rec.task_id:
            rec.error = "no reply within 30 s of the last send"
    ok = [r for r in sent if not r.error]
    started = await _wait_succeeded(pool, [r.task_id for r in ok], timeout=60 + duration)
    await asyncio.sleep(1.0)  # let the SSE client and the NOTIFY listener catch the tail
    visible = clock.visible_at()
    ms = 1000.0
    to_start = [(started[r.task_id] - r.t_send) * ms for r in ok if r.task_id in started]
    to_reply = [(r.t_reply - r.t_send) * ms for r in ok]
    to_rm = [(v - r.t_send) * ms for r in ok if (v := visible(r.seq)) is not None]
    to_sse = [(sse_seen[r.task_id] - r.t_send) * ms for r in ok if r.task_id in sse_seen]
    errors = [r.error for r in sent if r.error]
    hops = await _hops(nc, [r for r in ok if r.task_id in started][:HOPS_SAMPLE], started)
    return {
        "submitted": n,
        "achieved_rate": round(n / send_span, 1) if send_span else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "not_succeeded": len(ok) - len(started),
        "submit_to_start_ms": summary(to_start, 50, 95, 99),
        "submit_to_reply_ms": summary(to_reply, 50, 95, 99),
        "submit_to_read_model_ms": summary(to_rm, 50, 99),
        "submit_to_sse_ms": summary(to_sse, 50, 99),
        "hops_ms": hops,
    }


async def _hops(nc: NATS, sample: list[Sent], started: dict[str, float]) -> dict[str, Any]:
    """Where submit->start goes, from the log's stored times of the sampled tasks' events (read back
    after the phase): client send -> `submitted` stored, `submitted` stored -> `attempt_started`
    stored (the ticket reaches the worker, which appends the start), `attempt_started` stored ->
    handler running (the start's PubAck reaches the worker)."""
    store = EventStore(nc)
    parts: dict[str, list[float]] = {
        "send_to_stored": [],
        "stored_to_start_stored": [],
        "start_stored_to_handler": [],
    }
    for rec in sample:
        history, _ = await store.load(TENANT, rec.task_id)
        at = {e.name: e.stored_at.timestamp() for e in reversed(history)}  # the first of each name
        if "submitted" not in at or "attempt_started" not in at:
            continue
        parts["send_to_stored"].append((at["submitted"] - rec.t_send) * 1000)
        parts["stored_to_start_stored"].append((at["attempt_started"] - at["submitted"]) * 1000)
        parts["start_stored_to_handler"].append((started[rec.task_id] - at["attempt_started"]) * 1000)
    return {name: summary(values, 50, 99) for name, values in parts.items()}


async def run(
    nats_url: str, dsn: str, port: int, rate: float, duration: float, vias: list[str]
) -> dict[str, Any]:
    nc = await nats.connect(nats_url, name="bench-w2")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    clock = CommitClock()
    await clock.start(dsn)
    sse_seen: dict[str, float] = {}

    def on_event(_i: int, _seq: int, payload: bytes, now: float) -> None:
        entry = sse.decode(payload)
        if entry.type == "submitted":
            sse_seen.setdefault(entry.task_id, now)

    streams = await sse.open_streams(port, ["/v1/events/stream"], on_event)
    out: dict[str, Any] = {}
    client = HttpPool("127.0.0.1", port, size=32)
    # Warm-up: connections, caches, the worker's first fetch (not measured).
    await _submit_nats(nc, Sent(0.0))
    await client.post("/v1/tasks", BODY)
    await asyncio.sleep(1.0)
    for via in vias:
        out[via] = await _phase(via, rate, duration, nc, client, pool, clock, sse_seen)
        await asyncio.sleep(2.0)  # let the system settle between the two paths
    await client.close()
    await sse.close_streams(streams)
    await clock.stop()
    await pool.close()
    await nc.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200.0, help="submits per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per path")
    parser.add_argument("--via", default="nats,http", help="comma-separated: nats, http")
    parser.add_argument("--sync-always", action="store_true", help="nats-server sync_interval: always")
    args = parser.parse_args()
    vias = [v for v in args.via.split(",") if v]
    load_start = load_average()
    with servers(sync_always=args.sync_always) as srv:
        comps = Components(srv.env)
        comps.start("projector", "projector")
        comps.start("worker", module="bench.noop_worker")
        try:
            port = comps.start_gateway()
            sampler = ProcSampler({**server_pids(srv), **comps.pids}).start()
            result = event_loop.run(run(srv.nats.url, srv.postgres.url, port, args.rate, args.duration, vias))
            usage = sampler.stop()
        finally:
            comps.stop()
    emit(
        {
            "bench": "w2_latency",
            "rate": args.rate,
            "duration_s": args.duration,
            "sync_always": args.sync_always,
            **result,
            "processes": usage,
            "loadavg_start": load_start,
        }
    )


if __name__ == "__main__":
    main()
