"""SSE fan-out under W2: G global clients (`GET /v1/events/stream`) and K per-task clients
(`GET /v1/tasks/{id}/stream`) on one gateway while W2's load runs (bench.noop tasks submitted through
the NATS API at a fixed rate, one per request).

The K per-task clients follow K tasks parked on a queue no worker serves; during the load those
tasks are cancelled at an even pace (K over the load's duration), so each per-task client receives
its task's new events while the global clients receive every event of the tenant. Delivery latency
per (client, event) = arrival time at the client minus the event's stored time in the log (the
`at` field); also reported minus the projector's commit of that event (the gateway's own part).
After the load the clients get `--drain` seconds to catch up; what has not arrived then is counted
as missing (a 2-core machine may not keep up: lower --global-clients / --task-clients and say so).
`gateway` reports the gateway's own read-model work from its /metrics over the same span: tail
queries (one per projector commit at most, whatever the number of streams), catch-up pages, cuts.

    .venv/bin/python -m bench.sse_fanout [--global-clients 100] [--task-clients 1000] [--rate 200]
        [--duration 20] [--drain 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
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
from bench.noop_worker import TASK_TYPE
from ordo.infra import subjects as sj

TENANT = "default"
PARKED_QUEUE = "parked"
BODY = json.dumps({"type": TASK_TYPE, "payload": None}).encode()


async def _request(nc: NATS, verb: str, body: bytes) -> dict[str, Any]:
    msg = await nc.request(sj.cmd_subject(TENANT, verb), body, timeout=30)
    status = (msg.headers or {}).get(sj.REPLY_STATUS, "")
    if status not in ("200", "202"):
        raise RuntimeError(f"{verb}: status {status}: {msg.data[:300]!r}")
    result: dict[str, Any] = json.loads(msg.data)
    return result


async def _park(nc: NATS, k: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, k, 1000):
        items = [{"type": TASK_TYPE, "queue": PARKED_QUEUE} for _ in range(start, min(k, start + 1000))]
        reply = await _request(nc, "batch", json.dumps({"tasks": items}).encode())
        ids += [item["id"] for item in reply["items"]]
    return ids


_SSE_COUNTERS = ("ordo_sse_tail_queries_total", "ordo_sse_catch_up_queries_total", "ordo_sse_cuts_total")


async def _sse_counters(port: int) -> dict[str, float]:
    """The gateway's SSE counters from /metrics (auth is off in the benchmarks)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    body = (await reader.read()).decode()
    writer.close()
    out = dict.fromkeys(_SSE_COUNTERS, 0.0)
    for line in body.splitlines():
        name, _, value = line.partition(" ")
        if name in out:
            out[name] = float(value)
    return out


async def run(
    nats_url: str, dsn: str, port: int, g: int, k: int, rate: float, duration: float, drain: float
) -> dict[str, Any]:
    nc = await nats.connect(nats_url, name="bench-sse-fanout")
    clock = CommitClock()
    await clock.start(dsn)
    parked = await _park(nc, k)
    await asyncio.sleep(2.0)  # parked tasks' `submitted` events projected before the streams open
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    start_seq = int(await pool.fetchval("SELECT coalesce(max(seq), 0) FROM task_events") or 0)

    # Arrivals: one (client index, seq, arrival) per event after start_seq; decoded once per seq.
    arrivals: list[tuple[int, int, float]] = []
    entries: dict[int, bytes] = {}

    def on_event(i: int, seq: int, payload: bytes, now: float) -> None:
        if seq > start_seq:
            arrivals.append((i, seq, now))
            entries.setdefault(seq, payload)

    counters_before = await _sse_counters(port)
    t_open = time.perf_counter()
    paths = [f"/v1/tasks/{tid}/stream" for tid in parked] + ["/v1/events/stream"] * g
    streams = await sse.open_streams(port, paths, on_event, timeout=300)
    open_s = time.perf_counter() - t_open

    # The load: W2 submits, plus the parked tasks' cancels spread over the same time.
    inflight: list[asyncio.Task[dict[str, Any]]] = []
    n = int(rate * duration)
    cancel_every = duration / k if k else 0.0
    t0 = time.perf_counter()
    next_submit, next_cancel, cancelled = 0, 0, 0
    while next_submit < n or cancelled < k:
        t_sub = t0 + next_submit / rate if next_submit < n else float("inf")
        t_can = t0 + next_cancel * cancel_every if cancelled < k else float("inf")
        await sleep_until(min(t_sub, t_can))
        if t_sub <= t_can:
            inflight.append(asyncio.create_task(_request(nc, "submit", BODY)))
            next_submit += 1
        else:
            body = json.dumps({"id": parked[cancelled]}).encode()
            inflight.append(asyncio.create_task(_request(nc, "cancel", body)))
            cancelled += 1
            next_cancel += 1
    results = await asyncio.gather(*inflight, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    load_s = time.perf_counter() - t0

    # Expected deliveries: every task event after start_seq to each global client; each parked
    # task's events after start_seq to its own client. Wait (bounded) until they have arrived.
    deadline = time.monotonic() + drain
    while True:
        rows = await pool.fetch("SELECT seq, task_id FROM task_events WHERE seq > $1", start_seq)
        index = {tid: i for i, tid in enumerate(parked)}
        expected_task = sum(1 for r in rows if r["task_id"] in index)
        expected_global = len(rows) * g
        got_task = sum(1 for i, _, _ in arrivals if i < k)
        got_global = len(arrivals) - got_task
        done = got_task >= expected_task and got_global >= expected_global
        if done or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    counters_after = await _sse_counters(port)
    commits = sum(1 for seq, _ in clock.commits if seq > start_seq)
    await sse.close_streams(streams)
    await asyncio.sleep(0.5)
    await clock.stop()
    await pool.close()
    await nc.close()

    stored: dict[int, float] = {seq: sse.decode(p).at_ts() for seq, p in entries.items()}
    visible = clock.visible_at()
    committed: dict[int, float] = {seq: v for seq in stored if (v := visible(seq)) is not None}
    ms = 1000.0
    glob = [(now - stored[seq]) * ms for i, seq, now in arrivals if i >= k]
    task = [(now - stored[seq]) * ms for i, seq, now in arrivals if i < k]
    glob_gw = [(now - committed[seq]) * ms for i, seq, now in arrivals if i >= k and seq in committed]
    task_gw = [(now - committed[seq]) * ms for i, seq, now in arrivals if i < k and seq in committed]
    return {
        "streams_open_s": round(open_s, 2),
        "load_s": round(load_s, 2),
        "submitted": n,
        "cancelled": k,
        "request_errors": len(errors),
        "first_error": repr(errors[0]) if errors else None,
        "global": {
            "expected": expected_global,
            "delivered": got_global,
            "delivery_ms": summary(glob, 50, 99),
            "after_commit_ms": summary(glob_gw, 50, 99),
        },
        "gateway": {
            "projector_commits": commits,
            "tail_queries": counters_after[_SSE_COUNTERS[0]] - counters_before[_SSE_COUNTERS[0]],
            "catch_up_queries": counters_after[_SSE_COUNTERS[1]] - counters_before[_SSE_COUNTERS[1]],
            "cuts": counters_after[_SSE_COUNTERS[2]] - counters_before[_SSE_COUNTERS[2]],
        },
        "per_task": {
            "expected": expected_task,
            "delivered": got_task,
            "delivery_ms": summary(task, 50, 99),
            "after_commit_ms": summary(task_gw, 50, 99),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--global-clients", type=int, default=100)
    parser.add_argument("--task-clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for stragglers")
    parser.add_argument("--sync-always", action="store_true")
    args = parser.parse_args()
    load_start = load_average()
    with servers(sync_always=args.sync_always) as srv:
        comps = Components(srv.env)
        comps.start("projector", "projector")
        comps.start("worker", module="bench.noop_worker")
        try:
            port = comps.start_gateway()
            sampler = ProcSampler({**server_pids(srv), **comps.pids}).start()
            result = asyncio.run(
                run(
                    srv.nats.url,
                    srv.postgres.url,
                    port,
                    args.global_clients,
                    args.task_clients,
                    args.rate,
                    args.duration,
                    args.drain,
                )
            )
            usage = sampler.stop()
        finally:
            comps.stop()
    emit(
        {
            "bench": "sse_fanout",
            "global_clients": args.global_clients,
            "task_clients": args.task_clients,
            "rate": args.rate,
            "duration_s": args.duration,
            **result,
            "processes": usage,
            "loadavg_start": load_start,
        }
    )


if __name__ == "__main__":
    main()
