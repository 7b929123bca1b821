"""Concurrent single submits: how many `POST /v1/tasks` (or `ordo.cmd.<tenant>.submit` requests) one
gateway takes when many callers submit at once, and how its appends reach nats-server.

`--clients` callers each send one submit after another (one task per request, no batch endpoint)
until `--n` tasks are accepted. Reports submits/s, submit->reply p50/p99, and the gateway's socket
writes per submit (from /proc/<pid>/io, every write the process made: the HTTP responses and the
NATS connection's): concurrent submits' appends leave the gateway together in one write of the NATS
connection, so the writes per submit fall below 2 as callers are added (group commit, decision 39).
nats-server, PostgreSQL, the projector (the gateway is ready once the read model is) and the gateway
run; no worker.

    .venv/bin/python -m bench.submit_burst [--n 5000] [--clients 1,8,64] [--via http,nats]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import nats
from nats.aio.client import Client as NATS

from bench.common import Components, ProcSampler, emit, load_average, server_pids, servers, summary, writes
from bench.httpclient import HttpPool
from ordo import event_loop
from ordo.infra import subjects as sj

TENANT = "default"  # the gateway's tenant with auth off
BODY = json.dumps({"type": "bench.noop", "payload": None}).encode()


async def _caller(submit: Any, left: list[int], latencies: list[float], errors: list[str]) -> None:
    while left[0] > 0:
        left[0] -= 1
        t = time.perf_counter()
        error = await submit()
        if error:
            errors.append(error)
        else:
            latencies.append((time.perf_counter() - t) * 1000)


async def _phase(via: str, clients: int, n: int, port: int, nc: NATS, gateway_pid: int) -> dict[str, Any]:
    pool = HttpPool("127.0.0.1", port, size=clients)

    async def http() -> str:
        status, data = await pool.post("/v1/tasks", BODY)
        return "" if status == 202 else f"{status}: {data[:200]!r}"

    async def over_nats() -> str:
        msg = await nc.request(sj.cmd_subject(TENANT, "submit"), BODY, timeout=10)
        status = (msg.headers or {}).get(sj.REPLY_STATUS, "")
        return "" if status == "202" else f"{status}: {msg.data[:200]!r}"

    submit = http if via == "http" else over_nats
    for _ in range(clients):  # warm-up: every connection open, not measured
        await submit()
    latencies: list[float] = []
    errors: list[str] = []
    left = [n]
    written = writes(gateway_pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(_caller(submit, left, latencies, errors) for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    written = writes(gateway_pid) - written
    await pool.close()
    return {
        "via": via,
        "clients": clients,
        "accepted": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "submits_per_s": round(len(latencies) / elapsed, 1),
        "submit_to_reply_ms": summary(latencies, 50, 99),
        "gateway_writes_per_submit": round(written / max(1, len(latencies)), 3),
    }


async def run(
    nats_url: str, port: int, gateway_pid: int, n: int, clients: list[int], vias: list[str]
) -> list[Any]:
    nc = await nats.connect(nats_url, name="bench-submit-burst")
    out = []
    for via in vias:
        for k in clients:
            out.append(await _phase(via, k, n, port, nc, gateway_pid))
    await nc.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000, help="submits per phase")
    parser.add_argument("--clients", default="1,8,64", help="comma-separated caller counts")
    parser.add_argument("--via", default="http,nats", help="comma-separated: http, nats")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",") if c]
    vias = [v for v in args.via.split(",") if v]
    load_start = load_average()
    with servers() as srv:
        comps = Components(srv.env)
        comps.start("projector", "projector")
        try:
            port = comps.start_gateway()
            sampler = ProcSampler({**server_pids(srv), **comps.pids}).start()
            phases = event_loop.run(run(srv.nats.url, port, comps.pids["gateway"], args.n, clients, vias))
            usage = sampler.stop()
        finally:
            comps.stop()
    emit(
        {
            "bench": "submit_burst",
            "n": args.n,
            "phases": phases,
            "processes": usage,
            "loadavg_start": load_start,
        }
    )


if __name__ == "__main__":
    main()
