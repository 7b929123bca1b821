"""nats-server with 1M tasks in the log: RSS, and the time a restart takes until JetStream answers.

Starts an embedded nats-server on a temp dir (deleted afterwards), provisions the product's streams
(`infra.nats_conn.provision`), and publishes N `submitted` events, one per task, on the product's
subject layout `ordo.evt.<tenant>.<queue>.b1.<task_id>.submitted` (N distinct subjects; a submit is
its own dispatch ticket, docs/decisions.md 27) with the headers the event store writes
(Ordo-Event-Id, Ordo-Schema-Version), using batched async publishes. Then: RSS, stop (SIGTERM),
start on the same data dir and port, and time until (a) the port accepts, (b) JetStream answers
`account_info`, (c) `stream_info(ORDO_EVENTS)` shows all messages. Also times the product's per-task
load (`EventStore.load`: a batched direct get with the task's wildcard filter
`ordo.evt.<tenant>.*.*.<task_id>.*`) for sampled tasks on the loaded stream, one at a time, as a
cold-path command on a task does it (the worker's fast path loads nothing).

    .venv/bin/python -m bench.nats_1m [--events 1000000] [--sync-always]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import nats

from bench.common import emit, load_average, percentile, proc_usage
from ordo.domain.events import SCHEMA_VERSION, Submitted, encode_event
from ordo.domain.priority import DEFAULT_PRIORITY, band_for
from ordo.embedded.nats import EmbeddedNats, NatsServerConfig
from ordo.infra import subjects as sj
from ordo.infra.event_store import EventStore
from ordo.infra.nats_conn import provision
from ordo.infra.settings import Settings

TENANT = "bench"
QUEUE = "default"


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _dir_mb(path: Path) -> float:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return round(total / 2**20, 1)


async def _time_loads(url: str, task_ids: list[str]) -> dict[str, float]:
    """Latency of the product's task load (ms) for each sampled task, one after another."""
    nc = await nats.connect(url, name="bench-nats-1m-load")
    store = EventStore(nc, timeout=30)
    times: list[float] = []
    for task_id in task_ids:
        t0 = time.perf_counter()
        events, _ = await store.load(TENANT, task_id)
        times.append((time.perf_counter() - t0) * 1000)
        assert len(events) == 1, f"{task_id}: {len(events)} events"
    await nc.close()
    return {"p50": round(percentile(times, 50), 2), "p99": round(percentile(times, 99), 2), "n": len(times)}


async def publish_tasks(
    url: str, n: int, window: int, sample: list[str], tenant: str = TENANT, queue: str = QUEUE
) -> dict[str, Any]:
    """N submitted tasks of `tenant` on `queue`, one runnable event each (W1's --preload too)."""
    nc = await nats.connect(url, name="bench-nats-1m")
    await provision(nc, Settings(nats_url=url, tenant=tenant))
    js = nc.jetstream(publish_async_max_pending=window * 2)
    body = encode_event(
        Submitted(task_type="demo.echo", queue=queue, tenant=tenant, payload=msgspec.Raw(b'{"x":1}'))
    )
    every = max(1, n // 50)  # 50 tasks spread over the log for the load timing
    t0 = time.perf_counter()
    for start in range(0, n, window):
        futures = []
        for i in range(start, min(n, start + window)):
            task_id = uuid.uuid4().hex
            if i % every == 0:
                sample.append(task_id)
            headers = {sj.EVENT_ID: uuid.uuid4().hex, sj.SCHEMA_VERSION: str(SCHEMA_VERSION)}
            subject = sj.event_subject(tenant, queue, task_id, "submitted", band_for(DEFAULT_PRIORITY))
            futures.append(await js.publish_async(subject, body, headers=headers))
        await asyncio.gather(*futures)
    elapsed = time.perf_counter() - t0
    info = await js.stream_info(sj.EVENTS_STREAM)
    await nc.close()
    return {
        "publish_s": round(elapsed, 1),
        "publish_msgs_per_s": round(info.state.messages / elapsed),
        "messages": info.state.messages,
        "stream_mb": round(info.state.bytes / 2**20, 1),
    }


async def _until_ready(url: str, expected: int, t0: float, timeout: float = 300) -> dict[str, float]:
    """Seconds from t0 until JetStream answers and until the stream info shows every message."""
    out: dict[str, float] = {}
    deadline = time.perf_counter() + timeout
    nc = None
    while nc is None:
        try:
            nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0)
        except Exception:  # noqa: BLE001 - not accepting yet
            if time.perf_counter() > deadline:
                raise
            await asyncio.sleep(0.01)
    js = nc.jetstream(timeout=2)
    while "jetstream_s" not in out:
        try:
            await js.account_info()
            out["jetstream_s"] = round(time.perf_counter() - t0, 3)
        except Exception:  # noqa: BLE001 - JetStream still recovering
            if time.perf_counter() > deadline:
                raise
            await asyncio.sleep(0.01)
    while "stream_info_s" not in out:
        try:
            info = await js.stream_info(sj.EVENTS_STREAM)
            if info.state.messages >= expected:
                out["stream_info_s"] = round(time.perf_counter() - t0, 3)
                break
        except Exception:  # noqa: BLE001 - stream not recovered yet
            if time.perf_counter() > deadline:
                raise
        await asyncio.sleep(0.01)
    await nc.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000, help="tasks (one submitted event each)")
    parser.add_argument("--window", type=int, default=2000, help="async publishes in flight")
    parser.add_argument("--sync-always", action="store_true")
    args = parser.parse_args()
    load_start = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="ordo-nats1m-"))
    try:
        os.chmod(tmp, 0o755)
        config = NatsServerConfig(data_dir=tmp / "nats", sync_always=args.sync_always)
        server = EmbeddedNats(config)
        server.start()
        try:
            sample: list[str] = []
            published = asyncio.run(publish_tasks(server.url, args.events, args.window, sample))
            load_ms = asyncio.run(_time_loads(server.url, sample))
            assert server.pid is not None
            rss_loaded = _rss_mb(server.pid)
            hwm_loaded = round(proc_usage(server.pid)[1] / 2**20, 1)
            t_stop = time.perf_counter()
        finally:
            server.stop(timeout=120)
        stop_s = round(time.perf_counter() - t_stop, 2)
        disk_mb = _dir_mb(tmp / "nats")
        # Same data dir, same port: a restart as an operator would do it.
        restarted = EmbeddedNats(
            NatsServerConfig(data_dir=tmp / "nats", port=server.port, sync_always=args.sync_always)
        )
        t0 = time.perf_counter()
        restarted.start()
        try:
            port_s = round(time.perf_counter() - t0, 3)
            ready = asyncio.run(_until_ready(restarted.url, published["messages"], t0))
            assert restarted.pid is not None
            rss_restarted = _rss_mb(restarted.pid)
        finally:
            restarted.stop(timeout=120)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(
        {
            "bench": "nats_1m",
            "tasks": args.events,
            "sync_always": args.sync_always,
            **published,
            "disk_mb": disk_mb,
            "rss_loaded_mb": rss_loaded,
            "peak_rss_mb": hwm_loaded,
            "stop_s": stop_s,
            "restart_port_s": port_s,
            "restart_jetstream_s": ready["jetstream_s"],
            "restart_stream_info_s": ready["stream_info_s"],
            "rss_after_restart_mb": rss_restarted,
            "task_load_ms": load_ms,
            "loadavg_start": load_start,
        }
    )


if __name__ == "__main__":
    main()
