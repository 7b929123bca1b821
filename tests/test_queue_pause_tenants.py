"""Queue pause is per tenant (audit F7): tenant B pausing its queue `default` holds B's tickets and
leaves tenant A's dispatch on the same queue name alone; B's resume puts its tickets back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from ordo.workers.demo import registry
from ordo.workers.runtime import Worker
from tests.helpers import eventually
from tests.test_auth_support import Tenants, auth_system


@pytest.fixture
async def tenants(settings: Settings, nc: NATS, handler: CommandHandler) -> AsyncIterator[Tenants]:
    async with auth_system(settings, nc, handler) as t:
        yield t


@contextlib.asynccontextmanager
async def _worker(t: Tenants) -> AsyncIterator[Worker]:
    worker = Worker(t.system.nc, t.system.handler, registry, t.system.settings, pause_refresh_s=0.2)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        await worker.shutdown()
        await asyncio.wait_for(task, 30)


async def _submit(t: Tenants, who: str) -> str:
    r = await t.system.http.post("/v1/tasks", json={"type": "demo.echo"}, headers=t.auth(who))
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def _status(t: Tenants, tenant: str, task_id: str) -> str:
    """Folded from the log (the read model may lag)."""
    state, _, _ = await t.system.handler.load(tenant, task_id)
    return str(state.status)


async def _wait(t: Tenants, tenant: str, task_id: str, status: str) -> None:
    async def probe() -> bool:
        return await _status(t, tenant, task_id) == status

    await eventually(probe, timeout=60, what=f"{task_id} {status}")


async def _queue(t: Tenants, who: str, name: str = "default") -> dict[str, Any]:
    items = (await t.system.http.get("/v1/queues", headers=t.auth(who))).json()["items"]
    return next((q for q in items if q["name"] == name), {})


async def _held(t: Tenants, tenant: str) -> bool:
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await t.system.nc.jetstream().get_last_msg(sj.EVENTS_STREAM, sj.held_work_subject(tenant, "default"))
        return True
    return False


async def test_tenant_b_pausing_default_does_not_stop_tenant_a(tenants: Tenants) -> None:
    t = tenants
    async with _worker(t) as worker:
        r = await t.system.http.post("/v1/queues/default:pause", headers=t.auth("b:operator"))
        assert r.status_code == 202 and r.json()["paused"] is True, r.text
        await eventually(lambda: _true(worker.queue_paused(t.b, "default")), timeout=30, what="seen")
        assert not worker.queue_paused(t.a, "default")

        b_task = await _submit(t, "b:submitter")
        await eventually(lambda: _held(t, t.b), timeout=60, what="B's ticket held")
        a_task = await _submit(t, "a:submitter")
        await _wait(t, t.a, a_task, "succeeded")  # A's dispatch on `default` goes on
        assert await _status(t, t.b, b_task) == "queued", "B's paused queue started nothing"

        async def listed() -> bool:
            a, b = await _queue(t, "a:viewer"), await _queue(t, "b:viewer")
            return a.get("paused") is False and b.get("paused") is True

        await eventually(listed, timeout=60, what="each tenant sees its own queue state")
        r = await t.system.http.post("/v1/queues/default:resume", headers=t.auth("b:operator"))
        assert r.status_code == 202 and r.json()["paused"] is False, r.text
        await _wait(t, t.b, b_task, "succeeded")  # the held ticket was put back and ran


async def test_a_ticket_held_across_pause_resume_pause_is_released_once_resumed(tenants: Tenants) -> None:
    t = tenants
    async with _worker(t) as worker:
        pause, resume = "/v1/queues/default:pause", "/v1/queues/default:resume"
        assert (await t.system.http.post(pause, headers=t.auth("b:operator"))).status_code == 202
        await eventually(lambda: _true(worker.queue_paused(t.b, "default")), timeout=30, what="seen")
        first = await _submit(t, "b:submitter")
        await eventually(lambda: _held(t, t.b), timeout=60, what="held")
        # Resume and pause again at once: whatever was released is held again, nothing is lost.
        assert (await t.system.http.post(resume, headers=t.auth("b:operator"))).status_code == 202
        assert (await t.system.http.post(pause, headers=t.auth("b:operator"))).status_code == 202
        second = await _submit(t, "b:submitter")
        await eventually(lambda: _true(worker.queue_paused(t.b, "default")), timeout=30, what="seen")
        assert (await t.system.http.post(resume, headers=t.auth("b:operator"))).status_code == 202
        for task_id in (first, second):
            await _wait(t, t.b, task_id, "succeeded")


async def _true(value: bool) -> bool:
    return value


async def test_a_message_that_is_no_queue_event_stops_no_worker_and_no_pause(tenants: Tenants) -> None:
    """A security pass (2026-12-06): one message that is not a queue event on one tenant's queue
    subject (nats-server stores a JetStream API answer on whatever reply subject a request names)
    made every worker of that queue name, of every tenant, crash at its start, and that tenant's
    pause and resume answer 500, for good: the log keeps it. The readers leave it out now."""
    t = tenants
    junk = sj.queue_event_subject(t.b, "default", "paused")
    await t.system.nc.jetstream().publish(junk, b'{"type":"io.nats.jetstream.api.v1.account_info_response"}')
    async with _worker(t):
        task_a = await _submit(t, "a:submitter")
        await _wait(t, t.a, task_a, "succeeded")
        r = await t.system.http.post("/v1/queues/default:pause", headers=t.auth("b:operator"))
        assert r.status_code == 202, r.text
        task_b = await _submit(t, "b:submitter")
        r = await t.system.http.post("/v1/queues/default:resume", headers=t.auth("b:operator"))
        assert r.status_code == 202, r.text
        await _wait(t, t.b, task_b, "succeeded")
