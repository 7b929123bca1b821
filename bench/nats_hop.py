"""The floor under every latency figure: one NATS request/reply between two processes, no JetStream.

    .venv/bin/python -m bench.nats_hop [--rate 20] [--n 300]

A responder process answers each request on a core NATS subject; this process sends `--n` requests
at `--rate` per second (one at a time) and reports the round trip p50/p99 in ms, and the same for a
JetStream publish (a store and its PubAck). A submit that starts a task crosses three such hops
(client -> gateway, gateway -> nats-server store -> PubAck, nats-server -> worker), so on a machine
whose idle round trip is 1.3 ms a submit -> start of 2 ms is out of reach whatever Ordo does.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import nats

from bench.common import emit, load_average, servers, summary

_RESPONDER = """
import asyncio, sys
import nats

async def main() -> None:
    nc = await nats.connect(sys.argv[1])

    async def answer(msg) -> None:
        await nc.publish(msg.reply, b"ok")

    await nc.subscribe("bench.hop", cb=answer)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent goes

asyncio.run(main())
"""


async def main(rate: float, n: int) -> None:
    start_load = load_average()
    with servers() as srv:
        responder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _RESPONDER, srv.nats.url, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            assert responder.stdout is not None and (await responder.stdout.readline()).strip() == b"ready"
            nc = await nats.connect(srv.nats.url)
            js = nc.jetstream()
            await js.add_stream(name="HOP", subjects=["bench.store.>"])
            hops: list[float] = []
            stores: list[float] = []
            for i in range(n):
                t0 = time.perf_counter()
                await nc.request("bench.hop", b"x", timeout=5)
                t1 = time.perf_counter()
                await js.publish(f"bench.store.{i}", b"x")
                t2 = time.perf_counter()
                hops.append((t1 - t0) * 1000)
                stores.append((t2 - t1) * 1000)
                await asyncio.sleep(1 / rate)
            await nc.close()
        finally:
            responder.kill()
            await responder.wait()
    emit(
        {
            "bench": "nats_hop",
            "rate": rate,
            "request_reply_ms": summary(hops, 50, 99),
            "jetstream_publish_ms": summary(stores, 50, 99),
            "loadavg_start": start_load,
        }
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second, one at a time")
    ap.add_argument("--n", type=int, default=300)
    a = ap.parse_args()
    asyncio.run(main(a.rate, a.n))
