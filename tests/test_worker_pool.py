"""The local worker pool behind `POST /v1/workers:scale` and `POST /v1/workers/{id}:kill`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ordo.pool import WorkerPool
from ordo.supervisor import ChildSpec
from tests.conftest import System
from tests.helpers import eventually


@pytest.mark.timeout(120)
async def test_scale_kill_and_scale_down_through_the_gateway(gateway_only: System, tmp_path: Path) -> None:
    settings = gateway_only.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
    env.update(settings.to_env(), ORDO_WORKER_HEARTBEAT_S="0.5", ORDO_LOG_LEVEL="WARNING")

    def spec(n: int) -> ChildSpec:
        return ChildSpec(f"worker-{n}", [sys.executable, "-m", "ordo.cli", "worker"], env)

    pool = WorkerPool(spec, logging.getLogger("test.pool"), pid_dir=tmp_path / "pids")
    await pool.serve(gateway_only.nc)
    http = gateway_only.http
    try:

        async def live() -> list[dict[str, Any]]:
            rows = (await http.get("/v1/workers")).json()["items"]
            return [w for w in rows if w["pid"] in pool.pids and w["status"] == "online"]

        r = await http.post("/v1/workers:scale", json={"count": 2})
        assert r.status_code == 202 and r.json() == {"count": 2}
        await eventually(lambda: _len_is(live(), 2), timeout=60, interval=0.2, what="2 workers online")
        victim = (await live())[0]
        r = await http.post(f"/v1/workers/{victim['id']}:kill")
        assert r.status_code == 202 and r.json()["killed"] is True, r.text

        async def victim_lost_and_replaced() -> bool:
            rows = {w["id"]: w for w in (await http.get("/v1/workers")).json()["items"]}
            return rows[victim["id"]]["status"] == "lost" and len(await live()) == 2

        await eventually(victim_lost_and_replaced, timeout=60, interval=0.2, what="kill seen, replaced")
        r = await http.post("/v1/workers:scale", json={"count": 1})
        assert r.status_code == 202 and pool.count == 1
        await eventually(lambda: _len_is(live(), 1), timeout=30, interval=0.2, what="scaled to 1")
        r = await http.post("/v1/workers:scale", json={"count": "two"})
        assert r.status_code == 422
    finally:
        await pool.shutdown()
    assert pool.count == 0 and pool.pids == []


async def _len_is(rows: Any, n: int) -> bool:
    return len(await rows) == n
