"""The workers view with a worker that stops beating: it is marked late before the registry calls it
lost, and one killed from the page shows as killed, without its buttons, until then. The worker is a
heartbeat published to the real registry; `ordo up`'s pool, which answers a kill, is a responder on
its real NATS subject. Real Chromium, real system."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from nats.aio.msg import Msg

from ordo.infra import subjects as sj
from ordo.infra.heartbeats import Heartbeat, encode_heartbeat
from tests.conftest import System
from tests.test_ui import Page, browser, ui
from tests.test_ui_operations import _confirm

__all__ = ["browser", "ui"]

EVERY_S = 6.0  # late after 9 s without a heartbeat, lost after 18 s: the page re-reads every 5 s


async def _beat(system: System, worker_id: str, state: str = "online") -> None:
    now = datetime.now(UTC)
    beat = Heartbeat(
        worker_id=worker_id,
        host="ui-test",
        pid=999_999,
        queues=("ui-late",),
        handlers=("demo.echo",),
        concurrency=1,
        state=state,
        started_at=now,
        sent_at=now,
        every_s=EVERY_S,
    )
    await system.nc.jetstream().publish(sj.worker_heartbeat_subject(worker_id), encode_heartbeat(beat))


async def test_a_silent_worker_is_marked_late_and_a_killed_one_loses_its_buttons(
    ui: Page, system: System
) -> None:
    worker_id = "ui-late-worker"
    kills: list[dict[str, object]] = []

    async def pool(msg: Msg) -> None:  # what `ordo up`'s pool answers
        kills.append(json.loads(msg.data))
        await msg.respond(json.dumps({"ok": True, "killed": True}).encode())

    sub = await system.nc.subscribe(sj.LOCAL_CONTROL, cb=pool)
    await _beat(system, worker_id)
    try:
        page = ui.page
        row = page.locator(f'#workers-table tr[data-id="{worker_id}"]')
        await ui.open("/workers")
        await row.locator('button[data-action="kill"]').click()
        assert "Kill worker" in await _confirm(page)
        await row.locator('.badge[data-status="killed"]').wait_for()
        assert await row.locator("button").count() == 0  # no Kill… or Drain… for a worker already killed
        assert kills == [{"op": "kill", "pid": 999_999}]
        await row.locator("[data-late]").wait_for(timeout=30_000)  # its heartbeat is overdue
        assert await row.locator('.badge[data-status="killed"]').count() == 1
    finally:
        await sub.unsubscribe()
        await _beat(system, worker_id, state="offline")  # gone for the tests after this one
