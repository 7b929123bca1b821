"""A schedule's next tick is armed before the event that sets it is appended. A tick already due
when armed (a resume, a late tick on a busy host) fires at once, and on a busy host it can find the
schedule before that event: paused still, or armed for an earlier tick. The scheduler acked such a
tick away and the schedule never fired again (seen under load, 2026-12-06: an every-second schedule
stalled for minutes after a late tick, until it was paused and resumed). It now comes back until the
schedule is there."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from ordo.domain.schedule_commands import ResumeSchedule
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.schedule_handler import ScheduleHandler
from ordo.infra.schedule_timers import ScheduleTimers
from ordo.infra.timers import Timers
from tests.conftest import System
from tests.helpers import eventually


class _SlowArm(ScheduleTimers):
    """Schedule timers whose arm returns late, so the append it is for comes late: a busy host."""

    async def arm(self, tenant: str, schedule_id: str, tick_at: datetime) -> None:
        await super().arm(tenant, schedule_id, tick_at)
        await asyncio.sleep(1.5)  # the tick (due within a second) is out; the append waits


async def _decisions(system: System, sid: str) -> list[dict[str, object]]:
    """The schedule's latest decisions, newest first ([] until the read model has the schedule)."""
    r = await system.http.get(f"/v1/schedules/{sid}/events", params={"order": "desc", "limit": 20})
    assert r.status_code in (200, 404), r.text
    return list(r.json()["events"]) if r.status_code == 200 else []


async def test_a_resumed_schedule_whose_tick_comes_before_its_resume_still_fires(system: System) -> None:
    sid = "tick-ahead-resume"
    http = system.http
    created = await http.post(
        "/v1/schedules", json={"id": sid, "cron": "* * * * * *", "task": {"type": "demo.echo"}}
    )
    assert created.status_code == 201, created.text
    try:
        assert (await http.post(f"/v1/schedules/{sid}:pause")).status_code == 202

        async def paused() -> bool:
            return [e["type"] for e in await _decisions(system, sid)][:1] == ["paused"]

        await eventually(paused, timeout=30, what="the schedule paused")
        settings = system.settings
        tasks = CommandHandler(EventStore(system.nc), Timers(system.nc, settings.timer_lead_s))
        slow = ScheduleHandler(tasks, _SlowArm(system.nc, settings.timer_lead_s))
        await slow.execute(settings.tenant, ResumeSchedule(schedule_id=sid, now=datetime.now(UTC)))

        async def fires_again() -> bool:
            kinds = [e["type"] for e in await _decisions(system, sid)]
            return "resumed" in kinds and "fired" in kinds[: kinds.index("resumed")]

        await eventually(fires_again, timeout=30, what="a tick fired after the resume")
    finally:
        await http.delete(f"/v1/schedules/{sid}")
