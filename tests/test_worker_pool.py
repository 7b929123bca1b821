"""The local worker pool behind `POST /v1/workers:scale` and `POST /v1/workers/{id}:kill`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ordo.embedded.processes import read_pidfile
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


@pytest.mark.timeout(120)
async def test_a_scale_down_answers_at_once_while_its_workers_finish(
    gateway_only: System, tmp_path: Path
) -> None:
    """Found by an operator's pass: a scale-down whose workers had tasks running answered 504 (the
    control request's 5 s ran out while the workers used their shutdown grace) though it worked."""
    settings = gateway_only.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
    env.update(settings.to_env(), ORDO_WORKER_HEARTBEAT_S="0.5", ORDO_LOG_LEVEL="WARNING")
    env["ORDO_SHUTDOWN_GRACE_S"] = "8"  # longer than the control request waits

    def spec(n: int) -> ChildSpec:
        return ChildSpec(f"worker-{n}", [sys.executable, "-m", "ordo.cli", "worker"], env)

    pool = WorkerPool(spec, logging.getLogger("test.pool"), pid_dir=tmp_path / "pids", shutdown_grace_s=30)
    await pool.serve(gateway_only.nc)
    http = gateway_only.http
    try:
        assert (await http.post("/v1/workers:scale", json={"count": 1})).status_code == 202
        r = await http.post("/v1/tasks", json={"type": "demo.sleep", "payload": {"seconds": 30}})
        task_id = r.json()["id"]

        async def running() -> bool:
            return bool((await http.get(f"/v1/tasks/{task_id}")).json().get("status") == "running")

        await eventually(running, timeout=60, interval=0.2, what="the long task running")
        stopping = set(pool.pids)
        r = await http.post("/v1/workers:scale", json={"count": 0}, timeout=15)
        assert r.status_code == 202 and r.json() == {"count": 0}, r.text
        # Up again while that worker still finishes: the new one does not take it for a leftover
        # of a killed run (same name, same pid file) and kill it; it hands its task back.
        assert (await http.post("/v1/workers:scale", json={"count": 1})).status_code == 202

        async def handed_back() -> list[str] | None:
            events = (await http.get(f"/v1/tasks/{task_id}/events")).json()["events"]
            kinds = [e["type"] for e in events]
            return kinds if "attempt_released" in kinds else None

        kinds = await eventually(handed_back, timeout=60, interval=0.2, what="the task handed back")
        assert "attempt_timed_out" not in kinds, kinds

        def pid_files() -> set[int]:
            infos = (read_pidfile(f) for f in (tmp_path / "pids").glob("*.pid"))
            return {info.pid for info in infos if info is not None}

        # The stopping worker is gone (its supervisor removes its pid file once it has exited; the
        # pool's own list leaves it out as soon as it is told to stop), the new one still runs.
        async def stopped_alone() -> bool:
            return pool.count == 1 and len(pool.pids) == 1 and not stopping & pid_files()

        await eventually(stopped_alone, timeout=60, interval=0.2, what="the old worker stopped")
        # The running worker's pid file is its own: the stopped one's cleanup did not remove it.
        files = pid_files()
        assert files == set(pool.pids), (files, pool.pids)
    finally:
        await pool.shutdown()
    assert pool.count == 0 and pool.pids == []
