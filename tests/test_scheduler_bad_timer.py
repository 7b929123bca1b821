"""A timer the scheduler cannot act on is said, with its reason, and comes back later; the other
timers go on. Before, a schedule stored with a queue name no subject can hold (one accepted before
names were checked to their end) raised in a task nobody awaited: "Task exception was never
retrieved" every ack wait, for ever, and the reason went unseen."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from ordo.domain import schedule_commands as sc
from ordo.domain import schedule_events as se
from ordo.domain.schedule_cron import normalize
from ordo.infra.schedule_handler import ScheduleHandler
from ordo.infra.schedule_timers import ScheduleTimers
from tests.conftest import System
from tests.helpers import eventually


async def test_a_timer_that_fails_is_logged_and_the_others_still_fire(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    settings, handler = system.settings, system.handler
    schedules = ScheduleHandler(handler, ScheduleTimers(system.nc, settings.timer_lead_s))
    every_second = normalize("* * * * * *")

    def spec(queue: str) -> se.ScheduleSpec:
        return se.ScheduleSpec(
            cron=every_second, timezone="UTC", task=se.TaskTemplate(type="demo.echo", queue=queue)
        )

    now = datetime.now(UTC)
    caplog.set_level(logging.ERROR, logger="ordo.scheduler")
    try:
        for sid, queue in (("bad-queue", "default\n"), ("good-queue", "default")):
            create = sc.CreateSchedule(schedule_id=sid, tenant=settings.tenant, spec=spec(queue), now=now)
            await schedules.execute(settings.tenant, create)

        async def good_fired() -> bool:
            r = await system.http.get("/v1/schedules/good-queue/events", params={"order": "desc"})
            return r.status_code == 200 and any(e["type"] == "fired" for e in r.json()["events"])

        await eventually(good_fired, timeout=60, what="the good schedule firing")

        async def said() -> bool:
            return any("bad-queue" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)

        await eventually(said, timeout=60, what="the bad timer's failure logged")
        assert not any("never retrieved" in r.getMessage() for r in caplog.records)
    finally:
        for sid in ("bad-queue", "good-queue"):
            await schedules.execute(settings.tenant, sc.DeleteSchedule(schedule_id=sid))
