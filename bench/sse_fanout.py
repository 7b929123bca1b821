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
Exactness: each client's sequences after the start must equal its filtered log (every event once, in
order): `exact_clients`, `inexact_clients`, `duplicates`. Per event, `first_after_commit_ms` is its
first delivery to any global client after the commit (the tail read's part) and `first_to_last_ms`
the time to its last global delivery (the fan-out's part). Reads are stamped on arrival and kept raw
during the load (bench/sse.py); parsing waits until after it.
`processes` includes `clients`, this benchmark's own process (it submits and reads every stream: its
CPU shows when the measuring side itself is short of CPU). `--profile DIR` runs py-spy on the gateway
and on this process and writes DIR/<name>.txt plus a DIR/<name>.summary of each.

    .venv/bin/python -m bench.sse_fanout [--global-clients 100] [--task-clients 1000] [--rate 200]
        [--duration 20] [--drain 30] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
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
from bench.w1_throughput import _start_profilers, _stop_profilers
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
) -> Callable[[], dict[str, Any]]:
    """Run the load; returns the function that computes the figures (called after the CPU sampling
    stops, so that `clients` CPU is the load's, not the arithmetic's)."""
    nc = await nats.connect(nats_url, name="bench-sse-fanout")
    clock = CommitClock()
    await clock.start(dsn)
    parked = await _park(nc, k)
    await asyncio.sleep(2.0)  # parked tasks' `submitted` events projected before the streams open
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    start_seq = int(await pool.fetchval("SELECT coalesce(max(seq), 0) FROM task_events") or 0)

    # Reads: (client index, arrival, the read's SSE text) with events after start_seq, kept raw
    # during the load and parsed afterwards; got[0] per-task and got[1] global events after start_seq.
    reads: list[tuple[int, float, bytes]] = []
    got = [0, 0]

    def on_text(i: int, text: bytes, now: float) -> None:
        fresh = text.count(b"event: task_event")
        if fresh and sse.first_seq(text) <= start_seq:  # a catch-up read: count the new ones
            fresh = sum(int(seq) > start_seq for seq, _ in sse.parse(text))
        if fresh:
            reads.append((i, now, text))
            got[i >= k] += fresh

    counters_before = await _sse_counters(port)
    t_open = time.perf_counter()
    paths = [f"/v1/tasks/{tid}/stream" for tid in parked] + ["/v1/events/stream"] * g
    streams = await sse.open_text_streams(port, paths, on_text, timeout=300)
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
    # Done when both counts are reached and the log has not grown since the previous look (the last
    # tasks are still finishing after the load: their events would otherwise come after the check).
    index = {tid: i for i, tid in enumerate(parked)}
    deadline = time.monotonic() + drain
    seen_rows = -1
    while True:
        rows = await pool.fetch("SELECT seq, task_id FROM task_events WHERE seq > $1 ORDER BY seq", start_seq)
        expected_task = sum(1 for r in rows if r["task_id"] in index)
        expected_global = len(rows) * g
        done = got[0] >= expected_task and got[1] >= expected_global and len(rows) == seen_rows
        if done or time.monotonic() > deadline:
            break
        seen_rows = len(rows)
        await asyncio.sleep(0.5)
    counters_after = await _sse_counters(port)
    commits = sum(1 for seq, _ in clock.commits if seq > start_seq)
    await sse.close_streams(streams)
    await asyncio.sleep(0.5)
    await clock.stop()
    await pool.close()
    await nc.close()

    def figures() -> dict[str, Any]:
        # Each client's sequences must be exactly its filtered log: every event once, in order.
        want_global = [r["seq"] for r in rows]
        want_task: dict[int, list[int]] = {}
        for r in rows:
            if r["task_id"] in index:
                want_task.setdefault(index[r["task_id"]], []).append(r["seq"])
        seen: dict[int, list[int]] = {}
        payloads: dict[int, bytes] = {}
        glob: list[float] = []
        task: list[float] = []
        timed: list[tuple[int, int, float]] = []
        for i, now, text in reads:
            mine = seen.setdefault(i, [])
            for raw_seq, payload in sse.parse(text):
                seq = int(raw_seq)
                if seq > start_seq:
                    mine.append(seq)
                    if seq not in payloads:
                        payloads[seq] = payload
                    timed.append((i, seq, now))
        stored = {seq: sse.decode(p).at_ts() for seq, p in payloads.items()}
        visible = clock.visible_at()
        committed = {seq: v for seq in stored if (v := visible(seq)) is not None}
        glob_gw: list[float] = []
        task_gw: list[float] = []
        ms = 1000.0
        first: dict[int, float] = {}  # per event: the first and last arrival at a global client
        last: dict[int, float] = {}
        for i, seq, now in timed:
            (glob if i >= k else task).append((now - stored[seq]) * ms)
            if seq in committed:
                (glob_gw if i >= k else task_gw).append((now - committed[seq]) * ms)
            if i >= k:
                first[seq] = min(first.get(seq, now), now)
                last[seq] = max(last.get(seq, now), now)
        first_gw = [(first[seq] - committed[seq]) * ms for seq in first if seq in committed]
        spread = [(last[seq] - first[seq]) * ms for seq in first]
        exact = [seen.get(i, []) == (want_global if i >= k else want_task.get(i, [])) for i in range(k + g)]
        dup = sum(len(v) - len(set(v)) for v in seen.values())
        return {
            "streams_open_s": round(open_s, 2),
            "load_s": round(load_s, 2),
            "submitted": n,
            "cancelled": k,
            "request_errors": len(errors),
            "first_error": repr(errors[0]) if errors else None,
            "global": {
                "expected": expected_global,
                "delivered": got[1],
                "exact_clients": sum(exact[k:]),
                "delivery_ms": summary(glob, 50, 99),
                "after_commit_ms": summary(glob_gw, 50, 99),
                # Per event: its first global delivery after the commit (the hub's part), and the
                # time from its first to its last global delivery (the fan-out's part).
                "first_after_commit_ms": summary(first_gw, 50, 99),
                "first_to_last_ms": summary(spread, 50, 99),
            },
            "gateway": {
                "projector_commits": commits,
                "tail_queries": counters_after[_SSE_COUNTERS[0]] - counters_before[_SSE_COUNTERS[0]],
                "catch_up_queries": counters_after[_SSE_COUNTERS[1]] - counters_before[_SSE_COUNTERS[1]],
                "cuts": counters_after[_SSE_COUNTERS[2]] - counters_before[_SSE_COUNTERS[2]],
            },
            "per_task": {
                "expected": expected_task,
                "delivered": got[0],
                "exact_clients": sum(exact[:k]),
                "delivery_ms": summary(task, 50, 99),
                "after_commit_ms": summary(task_gw, 50, 99),
            },
            # Exact: the client got its filtered log after the start, each event once, in order.
            "duplicates": dup,
            "inexact_clients": exact.count(False),
        }

    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--global-clients", type=int, default=100)
    parser.add_argument("--task-clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for stragglers")
    parser.add_argument("--sync-always", action="store_true")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output folder")
    args = parser.parse_args()
    load_start = load_average()
    with servers(sync_always=args.sync_always) as srv:
        comps = Components(srv.env)
        comps.start("projector", "projector")
        comps.start("worker", module="bench.noop_worker")
        profilers: list[subprocess.Popen[bytes]] = []
        try:
            port = comps.start_gateway()
            if args.profile is not None:
                profilers = _start_profilers(
                    args.profile, {"gateway": comps.pids["gateway"], "clients": os.getpid()}
                )
            pids = {**server_pids(srv), **comps.pids, "clients": os.getpid()}
            sampler = ProcSampler(pids, own_only=("clients",)).start()
            figures = asyncio.run(
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
            result = figures()
        finally:
            _stop_profilers(profilers)
            comps.stop()
    if args.profile is not None:
        from bench.profile_summary import summarise

        for name in sorted(args.profile.glob("*.txt")):
            (args.profile / f"{name.stem}.summary").write_text(summarise(name))
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
