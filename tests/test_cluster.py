"""A 3-node JetStream cluster under steady submissions: kill the stream leader, restart it, then kill a
non-leader. No acknowledged submission is lost, no task completes twice, processing continues.

Under `make chaos` (ORDO_CHAOS_SEED, tests/chaos.py) the load rate, when each node is killed, how
long the old leader stays down, which follower dies and the ack deadline are drawn from safe ranges.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS

from ordo.domain.commands import SubmitTask
from ordo.embedded.cluster import EmbeddedCluster
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore, EventStoreError
from ordo.infra.ids import new_task_id
from ordo.infra.nats_conn import connect, provision
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers
from tests.chaos import Chaos
from tests.conftest import run_system
from tests.helpers import eventually


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmbeddedCluster]:
    c = EmbeddedCluster(tmp_path / "cluster", 3)
    c.start()
    yield c
    c.stop()


class Load:
    """Submits demo.echo tasks at a steady rate; remembers which submissions were acknowledged."""

    def __init__(self, handler: CommandHandler, tenant: str) -> None:
        self.handler = handler
        self.tenant = tenant
        self.acked: list[str] = []
        self.ack_times: list[float] = []
        self.errors = 0
        self._stop = asyncio.Event()

    async def run(self, rate: float) -> None:
        while not self._stop.is_set():
            task_id = new_task_id()
            cmd = SubmitTask(
                task_id=task_id,
                tenant=self.tenant,
                queue="default",
                task_type="demo.echo",
                now=datetime.now(UTC),
                payload=msgspec.Raw(b"1"),
            )
            try:
                await asyncio.wait_for(self.handler.execute(self.tenant, cmd), 10)
                self.acked.append(task_id)
                self.ack_times.append(time.monotonic())
            except (EventStoreError, TimeoutError):
                self.errors += 1
            await asyncio.sleep(1 / rate)

    def stop(self) -> None:
        self._stop.set()

    def longest_pause(self, since: float) -> float:
        times = [t for t in self.ack_times if t >= since]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


async def _leader(nc: NATS) -> str:
    info = await nc.jetstream(timeout=5).stream_info(sj.EVENTS_STREAM)
    assert info.cluster is not None and info.cluster.leader
    return str(info.cluster.leader)


async def test_cluster_survives_losing_the_leader_and_a_follower(
    cluster: EmbeddedCluster, database_url: str
) -> None:
    chaos = Chaos("cluster")
    settings = Settings(
        nats_url=cluster.url,
        database_url=database_url,
        tenant="c" + uuid.uuid4().hex[:10],
        replicas=3,
        ack_wait_s=3.0,
        lease_extend_every_s=1.0,
        timer_lead_s=0.5,
    )
    settings = chaos.timers(settings, (2.0, 5.0))
    rate = chaos.uniform("rate_per_s", 25.0, 10.0, 40.0)
    warmup = chaos.randint("acks_before_leader_kill", 20, 5, 80)
    down_for = chaos.randint("acks_while_leader_down", 25, 10, 80)
    nc = await connect(settings, name="cluster-test")
    await provision(nc, settings)
    handler = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
    async with run_system(settings, nc, handler) as system:
        load = Load(handler, settings.tenant)
        runner = asyncio.create_task(load.run(rate=rate))
        await eventually(lambda: _n(load, warmup), timeout=60, what="steady load")

        leader = await _leader(nc)
        t_kill = time.monotonic()
        cluster.node(leader).process.kill()  # type: ignore[union-attr]
        before = len(load.acked)
        await eventually(lambda: _n(load, before + down_for), timeout=60, what="submissions resume")
        pause_leader = load.longest_pause(t_kill - 0.5)
        new_leader = await eventually(lambda: _new_leader(nc, leader), timeout=30, what="new leader")

        cluster.node(leader).start()  # the old leader rejoins as a follower
        before = len(load.acked)
        await eventually(lambda: _n(load, before + 25), timeout=60, what="load after rejoin")

        followers = [str(n.config.server_name) for n in cluster.nodes if n.config.server_name != new_leader]
        follower = chaos.choice("follower_killed", followers[0], followers)
        t_kill2 = time.monotonic()
        cluster.node(str(follower)).process.kill()  # type: ignore[union-attr]
        before = len(load.acked)
        await eventually(lambda: _n(load, before + 25), timeout=60, what="load after follower loss")
        pause_follower = load.longest_pause(t_kill2 - 0.5)
        load.stop()
        await runner

        store = EventStore(nc)

        async def all_done() -> bool:
            r = await system.http.get("/v1/tasks", params={"status": "succeeded", "limit": 1})
            return r.status_code == 200 and await _all_succeeded(store, settings.tenant, load.acked)

        await eventually(all_done, timeout=120, interval=0.5, what="every acknowledged task succeeded")
        dup = 0
        for task_id in load.acked:
            history, _ = await store.load(settings.tenant, task_id)
            dup += max(0, sum(1 for e in history if e.name == "succeeded") - 1)
        print(
            f"\ncluster: acknowledged={len(load.acked)} lost=0 duplicate_succeeded={dup} "
            f"submit_errors_during_faults={load.errors} "
            f"pause_after_leader_kill_s={pause_leader:.2f} pause_after_follower_kill_s={pause_follower:.2f} "
            f"ack_deadline={settings.ack_wait_s}s {chaos.describe()}"
        )
        assert dup == 0
    await nc.close()


async def _n(load: Load, n: int) -> bool:
    return len(load.acked) >= n


async def _new_leader(nc: NATS, old: str) -> str | None:
    try:
        leader = await _leader(nc)
    except Exception:  # noqa: BLE001 - no leader yet
        return None
    return leader if leader != old else None


async def _all_succeeded(store: EventStore, tenant: str, ids: list[str]) -> bool:
    for task_id in ids:
        history, _ = await store.load(tenant, task_id)
        if not any(e.name == "succeeded" for e in history):
            return False
    return True
