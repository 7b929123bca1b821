"""The bare JetStream loop, this machine's ceiling: publish -> worker -> completion event -> observer,
three processes, no event history and no read model. W1 results state their ratio to it.

    .venv/bin/python -m bench.bare_loop [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

N_DEFAULT = 20_000


async def _setup(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="BARE_WORK", subjects=["bare.work"]))
    await js.add_stream(StreamConfig(name="BARE_DONE", subjects=["bare.done"]))
    await js.add_consumer(
        "BARE_WORK", ConsumerConfig(durable_name="w", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=20_000)
    )
    await js.add_consumer("BARE_DONE", ConsumerConfig(durable_name="o", ack_policy=AckPolicy.NONE))
    await nc.close()


async def _publisher(url: str, n: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    nc = await nats.connect(url)
    js = nc.jetstream()
    out.put(("start", time.perf_counter()))  # CLOCK_MONOTONIC: comparable across processes
    for start in range(0, n, 500):
        futures = [await js.publish_async("bare.work", b"task") for _ in range(start, min(n, start + 500))]
        await asyncio.gather(*futures)
    await nc.close()


async def _worker(url: str, n: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind("w", "BARE_WORK")
    done = 0
    while done < n:
        try:
            msgs = await sub.fetch(500, timeout=1)
        except nats.errors.TimeoutError:
            continue
        futures = [await js.publish_async("bare.done", m.data) for m in msgs]
        await asyncio.gather(*futures)
        for m in msgs:
            await m.ack()
        done += len(msgs)
    await nc.flush()
    await nc.close()


async def _observer(url: str, n: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind("o", "BARE_DONE")
    seen = 0
    first = None
    while seen < n:
        try:
            msgs = await sub.fetch(1000, timeout=1)
        except nats.errors.TimeoutError:
            continue
        first = first or time.perf_counter()
        seen += len(msgs)
    out.put(("end", time.perf_counter()))
    await nc.close()


def _run(target: str, url: str, n: int, out: mp.Queue | None = None) -> None:  # type: ignore[type-arg]
    if target == "pub":
        assert out is not None
        asyncio.run(_publisher(url, n, out))
    elif target == "work":
        asyncio.run(_worker(url, n))
    else:
        assert out is not None
        asyncio.run(_observer(url, n, out))


def bare_loop(url: str, n: int) -> float:
    """Tasks per second of the bare loop against the server at `url`."""
    asyncio.run(_setup(url))
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    observer = ctx.Process(target=_run, args=("obs", url, n, out))
    worker = ctx.Process(target=_run, args=("work", url, n))
    observer.start()
    worker.start()
    time.sleep(0.5)  # let both bind before the publisher starts (setup, not synchronisation)
    publisher = ctx.Process(target=_run, args=("pub", url, n, out))
    publisher.start()
    # The clock starts when the publisher is connected (not at process spawn: Python's start-up
    # would dominate small runs) and stops when the observer has seen the n-th completion.
    marks: dict[str, float] = dict(out.get(timeout=300) for _ in range(2))
    for p in (publisher, worker, observer):
        p.join(timeout=30)
    return float(n / (marks["end"] - marks["start"]))


def main() -> None:
    from bench.common import emit, servers

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=N_DEFAULT)
    args = parser.parse_args()
    with servers() as srv:
        rate = bare_loop(srv.nats.url, args.n)
    emit({"bench": "bare_loop", "n": args.n, "tasks_per_s": round(rate)})


if __name__ == "__main__":
    main()
