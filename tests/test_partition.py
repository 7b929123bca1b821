"""A network partition of one node of a 3-node JetStream cluster, with `ip netns` and a veth pair.

Node n3 runs inside its own network namespace (`ip netns exec`), reachable only over a veth pair;
n1 and n2 listen on the root end's address. Under a steady load of submissions (workers and the
scheduler running in this process), the namespace end of the veth goes down: n3 is cut off from the
other nodes and from its clients (the test's connection starts on n3 and must fail over). Then:
no acknowledged submission is lost, no task completes twice, processing continues on the majority;
the link comes back up and n3 catches up (the stream leader reports it current with lag 0).

Needs root and `ip` (iproute2) with network namespaces; otherwise the test is skipped with the reason.
By default the stream leader is the node cut off; under `make chaos` (ORDO_CHAOS_SEED) the role, the
load rate, when the cut happens and how long it lasts, and the ack deadline are drawn at random.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from ordo.domain.commands import SubmitTask
from ordo.embedded.cluster import EmbeddedCluster
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore, EventStoreError, StoredEvent
from ordo.infra.ids import new_task_id
from ordo.infra.nats_conn import provision
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers
from ordo.workers.runtime import Worker
from ordo.workers.scheduler import Scheduler
from tests.chaos import Chaos
from tests.helpers import eventually


def _ip(*args: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", netns, "ip", *args] if netns else ["ip", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@dataclass
class Net:
    """A namespace `ns` joined to the root namespace by veth `root_if` (root_ip) <-> `ns_if` (ns_ip)."""

    ns: str
    root_if: str
    ns_if: str
    root_ip: str
    ns_ip: str

    def cut(self) -> None:
        """Down the namespace end: nothing crosses; the root end keeps its address usable locally."""
        _check(_ip("link", "set", self.ns_if, "down", netns=self.ns))

    def heal(self) -> None:
        _check(_ip("link", "set", self.ns_if, "up", netns=self.ns))


def _check(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(done.args)}: {done.stderr.strip()}")


def _free_subnet() -> int:
    used = _ip("-4", "addr").stdout
    for third in (int(uuid.uuid4().int % 200) + 20 + i for i in range(30)):
        if f"10.254.{third % 250}." not in used:
            return third % 250
    raise RuntimeError("no free 10.254.x.0/24 subnet")


@pytest.fixture
def net() -> Iterator[Net]:
    """The namespace and its veth pair, removed afterwards whatever happened; a skip where the
    machine does not allow them."""
    if shutil.which("ip") is None:
        pytest.skip("`ip` (iproute2) not found: apt-get install iproute2")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    tag = uuid.uuid4().hex[:6]
    third = _free_subnet()
    net = Net(f"ordo-part-{tag}", f"op{tag}r", f"op{tag}n", f"10.254.{third}.1", f"10.254.{third}.2")
    added = _ip("netns", "add", net.ns)
    if added.returncode != 0:
        pytest.skip(f"`ip netns add` is not permitted here: {added.stderr.strip()}")
    try:
        made = _ip("link", "add", net.root_if, "type", "veth", "peer", "name", net.ns_if)
        if made.returncode != 0:
            pytest.skip(f"cannot create a veth pair here: {made.stderr.strip()}")
        _check(_ip("link", "set", net.ns_if, "netns", net.ns))
        _check(_ip("addr", "add", f"{net.root_ip}/24", "dev", net.root_if))
        _check(_ip("link", "set", net.root_if, "up"))
        _check(_ip("addr", "add", f"{net.ns_ip}/24", "dev", net.ns_if, netns=net.ns))
        _check(_ip("link", "set", net.ns_if, "up", netns=net.ns))
        _check(_ip("link", "set", "lo", "up", netns=net.ns))
        yield net
    finally:
        # Anything still running in the namespace was started by this test (its nats-server).
        for pid in _ip("netns", "pids", net.ns).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        _ip("link", "del", net.root_if)  # deletes both ends
        _ip("netns", "del", net.ns)


@pytest.fixture
def cluster(net: Net, tmp_path: Path) -> Iterator[EmbeddedCluster]:
    c = EmbeddedCluster(
        tmp_path / "cluster", 3, hosts=(net.root_ip, net.root_ip, net.ns_ip), netns=(None, None, net.ns)
    )
    try:
        c.start()
        yield c
    finally:
        c.stop()


class Load:
    """Submits demo.echo tasks at a steady rate; remembers which submissions were acknowledged."""

    def __init__(self, handler: CommandHandler, tenant: str) -> None:
        self.handler = handler
        self.tenant = tenant
        self.acked: list[tuple[float, str]] = []
        self.errors: list[float] = []
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
                self.acked.append((time.monotonic(), task_id))
            except (EventStoreError, TimeoutError, nats.errors.Error):
                self.errors.append(time.monotonic())
            await asyncio.sleep(1 / rate)

    def stop(self) -> None:
        self._stop.set()

    def ids(self, since: float = 0.0) -> list[str]:
        return [t for at, t in self.acked if at >= since]

    def longest_pause(self, start: float, end: float) -> float:
        times = [start, *(at for at, _ in self.acked if start <= at <= end)]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


@contextlib.asynccontextmanager
async def workers(settings: Settings, nc: NATS, handler: CommandHandler) -> AsyncIterator[Worker]:
    """A worker (demo handlers) and the timer scheduler in this event loop, on the test's connection."""
    from ordo.workers.demo import registry

    scheduler = Scheduler(nc, handler)
    worker = Worker(nc, handler, registry, settings)
    tasks = [asyncio.create_task(scheduler.run()), asyncio.create_task(worker.run())]
    try:
        yield worker
    finally:
        await scheduler.shutdown()
        await worker.shutdown()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)


async def _info(nc: NATS) -> dict[str, object] | None:
    """ORDO_EVENTS stream info as the current leader answers it; None while there is none."""
    try:
        msg = await nc.request(f"$JS.API.STREAM.INFO.{sj.EVENTS_STREAM}", b"", timeout=2)
    except (nats.errors.Error, TimeoutError):
        return None
    info: dict[str, object] = json.loads(msg.data)
    return None if "error" in info else info


def _cluster(info: dict[str, object]) -> dict[str, object]:
    cluster = info.get("cluster")
    return cluster if isinstance(cluster, dict) else {}


async def _leader(nc: NATS) -> str | None:
    info = await _info(nc)
    leader = _cluster(info).get("leader") if info else None
    return str(leader) if leader else None


async def _replica(nc: NATS, name: str) -> dict[str, object] | None:
    """n3 as the leader sees it (current, offline, lag, active); None without a leader."""
    info = await _info(nc)
    if info is None:
        return None
    replicas = _cluster(info).get("replicas")
    for peer in replicas if isinstance(replicas, list) else []:
        if peer.get("name") == name:
            return dict(peer)
    return {"name": name, "missing": True, "leader": _cluster(info).get("leader")}


async def _lead(nc: NATS, node: str, want: bool) -> bool:
    """Ask the stream leader to step down until `node` leads (want) or does not (not want)."""
    leader = await _leader(nc)
    if leader is not None and (leader == node) == want:
        return True
    if leader is not None:
        others = [n for n in ("n1", "n2", "n3") if n != leader and (n == node) == want]
        body = json.dumps({"placement": {"preferred": others[0]}}).encode()
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{sj.EVENTS_STREAM}", body, timeout=5)
    return False


class Reads:
    """Log reads by the test itself; `unavailable` counts those that timed out."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.unavailable = 0

    async def histories(self, tenant: str) -> dict[str, list[StoredEvent]] | None:
        """Every event of the tenant by task; None when the read timed out. While the cut node's
        routes are not yet declared dead, a direct get can be handed to it and time out."""
        try:
            return await _histories(self.store, tenant)
        except EventStoreError:
            self.unavailable += 1
            return None


async def _histories(store: EventStore, tenant: str) -> dict[str, list[StoredEvent]]:
    events, _ = await store.load_filter(f"ordo.evt.{tenant}.>")
    out: dict[str, list[StoredEvent]] = {}
    for e in events:
        out.setdefault(e.task_id, []).append(e)
    return out


@pytest.mark.timeout(300)
async def test_partition_of_one_node_loses_nothing_and_it_catches_up(
    net: Net, cluster: EmbeddedCluster, database_url: str
) -> None:
    chaos = Chaos("partition")
    role = chaos.choice("cut_node_role", "leader", ["leader", "follower"])
    rate = chaos.uniform("rate_per_s", 25.0, 10.0, 40.0)
    warmup = chaos.randint("acks_before_cut", 20, 5, 60)
    hold = chaos.randint("acks_during_cut", 50, 20, 150)
    victim = "n3"  # the node in the namespace
    settings = Settings(
        nats_url=cluster.url,
        database_url=database_url,
        tenant="p" + uuid.uuid4().hex[:10],
        replicas=3,
        ack_wait_s=3.0,
        lease_extend_every_s=1.0,
        timer_lead_s=0.5,
    )
    settings = chaos.timers(settings, (2.0, 5.0))
    # The test's connection starts on n3 (no shuffling), so the cut takes it away from its clients
    # too; fast pings make the client notice a silent peer in ~2 s and reconnect to n1 or n2.
    urls = [cluster.node(victim).url, *(n.url for n in cluster.nodes if n.config.server_name != victim)]
    nc = await nats.connect(
        servers=urls,
        name="partition-test",
        dont_randomize=True,
        ping_interval=1,
        max_outstanding_pings=2,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
    )
    try:
        await provision(nc, settings)
        await eventually(lambda: _lead(nc, victim, role == "leader"), timeout=60, interval=1.0, what="roles")
        handler = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
        reads = Reads(EventStore(nc))
        load = Load(handler, settings.tenant)
        async with workers(settings, nc, handler) as worker:
            runner = asyncio.create_task(load.run(rate=rate))
            await eventually(lambda: _acks(load, warmup), timeout=60, what="steady load")
            leader_before = await _leader(nc)
            on_victim = nc.connected_url is not None and nc.connected_url.port == cluster.node(victim).port

            t_cut = time.monotonic()
            net.cut()

            async def cut_seen() -> bool:
                peer = await _replica(nc, victim)
                return peer is not None and (bool(peer.get("offline")) or not peer.get("current", True))

            await eventually(
                cut_seen, timeout=60, interval=0.2, what=f"{victim} seen cut off by the majority"
            )
            detected_s = time.monotonic() - t_cut
            leader_during = await _leader(nc)
            assert leader_during != victim

            # Processing continues on the majority: new submissions are acknowledged and completed.
            async def progressing() -> bool:
                after = load.ids(since=t_cut)
                if len(after) < hold:
                    return False
                h = await reads.histories(settings.tenant)
                return (
                    h is not None
                    and sum(1 for t in after if "succeeded" in _names(h.get(t, []))) >= hold // 2
                )

            await eventually(progressing, timeout=120, interval=0.5, what="processing during the partition")
            assert (await _replica(nc, victim) or {}).get("current") is not True, (
                "the partition healed itself"
            )
            acked_during = len(load.ids(since=t_cut))

            t_heal = time.monotonic()
            net.heal()

            async def caught_up() -> bool:
                peer = await _replica(nc, victim)
                return bool(peer and peer.get("current") and not peer.get("offline") and not peer.get("lag"))

            await eventually(caught_up, timeout=120, interval=0.2, what=f"{victim} caught up after the heal")
            catch_up_s = time.monotonic() - t_heal
            before = len(load.acked)
            await eventually(lambda: _acks(load, before + 20), timeout=60, what="load after the heal")
            load.stop()
            await runner

            stuck: dict[str, list[str]] = {}

            async def all_done() -> dict[str, list[StoredEvent]] | None:
                h = await reads.histories(settings.tenant)
                if h is None:
                    return None
                stuck.clear()
                stuck.update(
                    {t: _names(h.get(t, [])) for t in load.ids() if "succeeded" not in _names(h.get(t, []))}
                )
                return None if stuck else h

            try:
                final = await eventually(
                    all_done, timeout=120, interval=0.5, what="every acknowledged task succeeded"
                )
            except AssertionError as exc:
                sample = dict(list(stuck.items())[:5])
                raise AssertionError(
                    f"{len(stuck)} acknowledged tasks never succeeded, e.g. {sample}; tickets the worker "
                    f"terminated as poison (e.g. 'ticket of unknown task'): {worker.stats.poison}"
                ) from exc
            assert final is not None
            info = await _info(nc)
            assert info is not None
            last = int(info["state"]["last_seq"])  # type: ignore[index]
            await eventually(caught_up, timeout=60, what=f"{victim} current at the end")

        lost = [t for t in load.ids() if t not in final]
        dup = sum(max(0, _names(final[t]).count("succeeded") - 1) for t in load.ids() if t in final)
        unfinished = [t for t in load.ids() if "succeeded" not in _names(final.get(t, []))]
        submit_pause = load.longest_pause(t_cut, t_heal)
        succeeded_at = sorted(
            e.stored_at.timestamp() for t in load.ids() for e in final.get(t, []) if e.name == "succeeded"
        )
        completion_gap = max(
            (b - a for a, b in zip(succeeded_at, succeeded_at[1:], strict=False)), default=0.0
        )
        errors_during = sum(1 for at in load.errors if t_cut <= at <= t_heal + catch_up_s)
        print(
            f"\npartition: cut {victim} ({role}; stream leader before={leader_before} "
            f"during={leader_during}; test client on {victim} at the cut={on_victim}) "
            f"acknowledged={len(load.acked)} "
            f"acknowledged_during_cut={acked_during} lost={len(lost)} duplicate_succeeded={dup} "
            f"submit_errors_during_cut={errors_during} cut_seen_after_s={detected_s:.2f} "
            f"submit_pause_s={submit_pause:.2f} longest_gap_between_completions_s={completion_gap:.2f} "
            f"partition_s={t_heal - t_cut:.2f} catch_up_after_heal_s={catch_up_s:.2f} last_seq={last} "
            f"test_log_reads_timed_out={reads.unavailable} poison_tickets={worker.stats.poison} "
            f"{chaos.describe()}"
        )
        assert lost == [] and unfinished == [] and dup == 0
        assert acked_during >= hold
    finally:
        await nc.close()


async def _acks(load: Load, n: int) -> bool:
    return len(load.acked) >= n


def _names(history: list[StoredEvent]) -> list[str]:
    return [e.name for e in history]
