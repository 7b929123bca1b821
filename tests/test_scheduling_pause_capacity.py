"""Scheduled work holds no dispatch capacity; pausing a task and a queue, with real servers."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ordo.domain.commands import ResumeTask, SubmitTask
from ordo.domain.status import TaskStatus
from ordo.embedded.nats import EmbeddedNats, NatsServerConfig
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.ids import new_task_id
from ordo.infra.nats_conn import connect, provision
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers
from ordo.workers.demo import registry
from ordo.workers.runtime import Worker
from ordo.workers.scheduler import Scheduler
from tests.conftest import System
from tests.helpers import eventually


async def _status(system: System, task_id: str) -> str:
    """From the event log (the read model of a busy session stream may lag)."""
    state, _, _ = await system.handler.load(system.settings.tenant, task_id)
    return str(state.status) if state.exists else ""


async def _wait_status(system: System, task_id: str, status: str, timeout: float = 90) -> None:
    async def probe() -> bool:
        return await _status(system, task_id) == status

    await eventually(probe, timeout=timeout, what=f"{task_id} {status}")


async def test_10k_tasks_an_hour_ahead_hold_no_work_capacity(tmp_path: Path) -> None:
    """Own nats-server: 10k timers must not slow the session's other tests' projectors."""
    server = EmbeddedNats(NatsServerConfig(data_dir=tmp_path / "nats"))
    await asyncio.to_thread(server.start)
    settings = Settings(nats_url=server.url, database_url="unused", tenant="cap", timer_lead_s=0.5)
    nc = await connect(settings, name="test")
    try:
        await provision(nc, settings)
        handler = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
        worker = Worker(nc, handler, registry, settings)
        scheduler = Scheduler(nc, handler)
        loops = [asyncio.create_task(worker.run()), asyncio.create_task(scheduler.run())]
        run_at = datetime.now(UTC) + timedelta(hours=1)
        sem = asyncio.Semaphore(64)

        async def submit(task_id: str, at: datetime | None) -> None:
            async with sem:
                now = datetime.now(UTC)
                await handler.execute(
                    "cap",
                    SubmitTask(
                        task_id=task_id,
                        tenant="cap",
                        queue="default",
                        task_type="demo.echo",
                        now=now,
                        run_at=at,
                    ),
                )

        now = datetime.now(UTC)
        later = [
            SubmitTask(
                task_id=new_task_id(),
                tenant="cap",
                queue="default",
                task_type="demo.echo",
                now=now,
                run_at=run_at,
            )
            for _ in range(10_000)
        ]
        outcomes = await handler.submit_many("cap", later)  # atomic chunks, a timer per task
        assert {str(o.state.status) for o in outcomes} == {"scheduled"} and len(outcomes) == 10_000
        js = nc.jetstream()
        for band in range(3):
            info = await js.consumer_info(sj.EVENTS_STREAM, sj.work_consumer("default", band))
            assert info.num_ack_pending <= 2 and info.num_pending == 0, info
        sched = await js.consumer_info(sj.TIMERS_STREAM, sj.SCHEDULER_CONSUMER)
        assert sched.num_ack_pending <= 2, sched  # nothing fired: the timers wait in the server
        started = time.monotonic()
        now_id = new_task_id()
        await submit(now_id, None)

        async def done() -> bool:
            state, _, _ = await handler.load("cap", now_id)
            return state.status is TaskStatus.SUCCEEDED

        await eventually(done, timeout=30, what="immediate task ran")
        assert time.monotonic() - started < 5.0, (
            "an immediate task runs without waiting behind scheduled ones"
        )
        await worker.shutdown()
        await scheduler.shutdown()
        await asyncio.wait_for(asyncio.gather(*loops, return_exceptions=True), 30)
    finally:
        await nc.close()
        await asyncio.to_thread(server.stop)


async def test_pause_and_resume_a_scheduled_and_a_queued_task(system: System) -> None:
    r = await system.http.post("/v1/tasks", json={"type": "demo.echo", "delay": 1.0})
    task_id = r.json()["id"]
    assert (await system.http.post(f"/v1/tasks/{task_id}:pause")).status_code == 202
    due = time.monotonic() + 1.0
    # A second delayed task due later proves time passed the first one's due time (no sleep).
    later = (await system.http.post("/v1/tasks", json={"type": "demo.echo", "delay": 2.5})).json()["id"]
    await _wait_status(system, later, "succeeded")
    assert time.monotonic() > due and await _status(system, task_id) == "paused"
    assert (await system.http.post(f"/v1/tasks/{task_id}:resume")).status_code == 202
    await _wait_status(system, task_id, "succeeded")
    types = [e["type"] for e in (await system.http.get(f"/v1/tasks/{task_id}/events")).json()["events"]]
    assert "paused" in types and "resumed" in types


async def _queues(system: System) -> dict[str, Any]:
    return {q["name"]: q for q in (await system.http.get("/v1/queues")).json()["items"]}


async def test_pause_a_queue_lets_running_tasks_finish_and_starts_nothing_until_resumed(
    system: System,
) -> None:
    running = (
        await system.http.post("/v1/tasks", json={"type": "demo.sleep", "payload": {"seconds": 1.5}})
    ).json()["id"]
    await _wait_status(system, running, "running")
    try:
        r = await system.http.post("/v1/queues/default:pause")
        assert r.status_code == 202 and r.json()["paused"] is True and r.json()["changed"] is True
        assert r.json()["consumers"] == []  # the tenant's pause touches no shared consumer
        assert (await system.http.post("/v1/queues/default:pause")).json()["changed"] is False
        waiting = (await system.http.post("/v1/tasks", json={"type": "demo.echo"})).json()["id"]
        await _wait_status(system, running, "succeeded")  # the running task finished
        probe = (await system.http.post("/v1/tasks", json={"type": "demo.echo", "delay": 1.0})).json()["id"]

        async def probe_queued() -> bool:  # its timer fired 1 s later: time has passed
            return await _status(system, probe) == "queued"

        await eventually(probe_queued, timeout=90, what="probe due")
        assert await _status(system, waiting) == "queued", "a paused queue starts nothing"

        async def listed_paused() -> bool:
            return bool((await _queues(system)).get("default", {}).get("paused"))

        await eventually(listed_paused, timeout=90, what="GET /v1/queues shows the pause")
    finally:
        r = await system.http.post("/v1/queues/default:resume")
    assert r.status_code == 202 and r.json()["paused"] is False
    await _wait_status(system, waiting, "succeeded")
    await _wait_status(system, probe, "succeeded")

    async def listed_resumed() -> bool:
        return (await _queues(system)).get("default", {}).get("paused") is False

    await eventually(listed_resumed, timeout=90, what="GET /v1/queues shows the resume")
    assert (await system.http.post("/v1/queues/Bad!:pause")).status_code == 422


class _SlowArm(Timers):
    """Timers whose arm returns late, so the append it is for comes late: a busy host's timing."""

    async def arm(self, tenant: str, task_id: str, due_at: datetime) -> None:
        await super().arm(tenant, task_id, due_at)
        await asyncio.sleep(1.5)  # the fired copy is out; the append waits


async def test_a_resume_whose_timer_comes_before_its_append_still_runs_the_task(system: System) -> None:
    """Resumed past its due time, a task's timer fires at once, before `resumed` is appended. On a
    loaded host (CI, 2026-12-06) the scheduler found the task still paused, acked the timer away,
    and the resumed task waited for ever."""
    r = await system.http.post("/v1/tasks", json={"type": "demo.echo", "delay": 1.0})
    task_id = r.json()["id"]
    assert (await system.http.post(f"/v1/tasks/{task_id}:pause")).status_code == 202
    later = (await system.http.post("/v1/tasks", json={"type": "demo.echo", "delay": 2.5})).json()["id"]
    await _wait_status(system, later, "succeeded")  # past the paused task's due time
    slow = CommandHandler(EventStore(system.nc), _SlowArm(system.nc, system.settings.timer_lead_s))
    await slow.execute(system.settings.tenant, ResumeTask(task_id=task_id))
    await _wait_status(system, task_id, "succeeded", timeout=30)
