"""Point 7: idempotent submit across two gateway processes, beyond a 1 s NATS duplicate window."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ordo.embedded.nats import EmbeddedNats, NatsServerConfig
from ordo.embedded.processes import free_port
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.ids import task_id_for_key
from ordo.infra.nats_conn import connect
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers
from tests.helpers import eventually


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A private nats-server: this test shrinks the duplicate window, which is a stream setting."""
    server = EmbeddedNats(NatsServerConfig(data_dir=tmp_path / "nats"))
    server.start()
    yield server
    server.stop()


def _gateway(port: int, env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    with open(log_dir / f"gw{port}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ordo.cli", "gateway", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.timeout(120)
async def test_fifty_concurrent_submits_one_key_two_gateways(
    own_nats: EmbeddedNats, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.with_(nats_url=own_nats.url, duplicate_window_s=1.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
    env.update(settings.to_env(), ORDO_LOG_LEVEL="WARNING")
    ports = [free_port(), free_port()]
    procs = [_gateway(port, env, tmp_path) for port in ports]
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            bases = [f"http://127.0.0.1:{p}" for p in ports]

            async def up() -> bool:
                try:
                    codes = [(await http.get(f"{b}/healthz")).status_code for b in bases]
                    return codes == [200, 200]
                except httpx.HTTPError:
                    return False

            await eventually(up, timeout=60, interval=0.2, what="two gateways up")
            body = {"type": "demo.echo", "payload": {"n": 1}, "idempotency_key": "order-42"}
            replies = await asyncio.gather(
                *(http.post(f"{bases[i % 2]}/v1/tasks", json=body) for i in range(50))
            )
            codes = sorted(r.status_code for r in replies)
            ids = {r.json()["id"] for r in replies}
            assert len(ids) == 1 and set(codes) <= {200, 202} and codes.count(202) == 1, codes
            task_id = ids.pop()
            # Beyond the 1 s duplicate window, the key still returns the original task.
            started = time.monotonic()
            await asyncio.sleep(1.5)  # let the NATS duplicate window pass (time, not synchronisation)
            again = await http.post(f"{bases[1]}/v1/tasks", json=body)
            assert again.status_code == 200 and again.json()["id"] == task_id
            other = await http.post(f"{bases[0]}/v1/tasks", json={**body, "payload": {"n": 2}})
            assert other.status_code == 409, other.text
            assert other.headers["content-type"].startswith("application/problem+json")
            assert time.monotonic() - started >= 1.0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=20)
    nc = await connect(settings, name="idem-check")
    try:
        info = await nc.jetstream().stream_info(sj.EVENTS_STREAM)
        assert info.config.duplicate_window == 1.0
        handler = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
        _, history, _ = await handler.load(settings.tenant, task_id)
        assert [e.name for e in history] == ["submitted"]  # exactly one task, nothing appended after
        assert task_id == task_id_for_key(settings.tenant, "order-42")
    finally:
        await nc.close()
