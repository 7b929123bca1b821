"""A schedule's catch-up after its scheduler was down, on a real nats-server (no PostgreSQL).

With overlap `buffer_one` and a run from before the downtime still going, the catch-up buffers the
latest tick. The tick delivered then is an older one (the schedule's armed `next_at`), so the
buffered tick had no message of its own to recheck: it started only with the next regular tick, up
to a whole period after the run before it ended. It now gets a timer of its own and starts within a
recheck (`buffer_recheck_s`) of that run's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client as NATS

from ordo.domain import schedule_commands as sc
from ordo.domain import schedule_events as se
from ordo.domain.commands import CancelTask
from ordo.domain.schedule_cron import normalize
from ordo.embedded.nats import EmbeddedNats
from ordo.infra.command_handler import CommandHandler
from ordo.infra.schedule_handler import ScheduleHandler
from ordo.infra.schedule_timers import ScheduleTimers
from ordo.infra.settings import Settings
from ordo.workers.scheduler import Scheduler
from tests.helpers import eventually

PERIOD_S = 6


@pytest.fixture
def settings(nats_server: EmbeddedNats) -> Settings:
    """Short timers; no PostgreSQL needed (overrides the conftest fixture for this module)."""
    return Settings(nats_url=nats_server.url, tenant="t" + uuid.uuid4().hex[:10], timer_lead_s=0.5)


@contextlib.asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[None]:
    task = asyncio.create_task(scheduler.run())
    try:
        yield
    finally:
        await scheduler.shutdown()
        await asyncio.wait_for(task, 30)


async def _until(instant: datetime) -> None:
    """Let the wall clock pass `instant` (the downtime under test is a span of time)."""
    await asyncio.sleep(max(0.0, (instant - datetime.now(UTC)).total_seconds()))


async def test_a_tick_buffered_by_a_catch_up_starts_when_the_run_before_it_ends(
    nc: NATS, handler: CommandHandler, settings: Settings
) -> None:
    tenant, sid = settings.tenant, "buffered-" + uuid.uuid4().hex[:8]
    schedules = ScheduleHandler(handler, ScheduleTimers(nc, settings.timer_lead_s))
    spec = se.ScheduleSpec(
        cron=normalize(f"*/{PERIOD_S} * * * * *"),
        timezone="UTC",
        task=se.TaskTemplate(type="nobody.runs.it", queue="q" + uuid.uuid4().hex[:8]),
        overlap=se.OverlapPolicy.BUFFER_ONE,
    )
    now = datetime.now(UTC)
    await schedules.execute(tenant, sc.CreateSchedule(schedule_id=sid, tenant=tenant, spec=spec, now=now))

    async def decisions() -> list[se.ScheduleEvent]:
        _, history, _ = await schedules.load(tenant, sid)
        return [se.decode_schedule_event(raw.data) for raw in history]

    async def first_run() -> se.ScheduleFired | None:
        return next((e for e in await decisions() if isinstance(e, se.ScheduleFired)), None)

    async with running(Scheduler(nc, handler, schedules=schedules)):
        first = await eventually(first_run, timeout=PERIOD_S + 10, what="the first tick fired")
    # Its task stays queued (no worker): a run still going. Two more ticks pass with no scheduler.
    await _until(first.tick_at + timedelta(seconds=2 * PERIOD_S, milliseconds=300))

    async def buffered() -> se.ScheduleBuffered | None:
        return next((e for e in await decisions() if isinstance(e, se.ScheduleBuffered)), None)

    async with running(Scheduler(nc, handler, schedules=schedules)):
        held = await eventually(buffered, timeout=10, what="the catch-up buffering the latest tick")
        assert held.tick_at == first.tick_at + timedelta(seconds=2 * PERIOD_S)
        await handler.execute(tenant, CancelTask(task_id=first.task_id, reason="the run before ends"))
        ended = asyncio.get_running_loop().time()

        async def buffered_fired() -> se.ScheduleFired | None:
            return next(
                (e for e in await decisions() if isinstance(e, se.ScheduleFired) and e.buffered),
                None,
            )

        started = await eventually(buffered_fired, timeout=2 * PERIOD_S, what="the buffered tick fired")
        waited = asyncio.get_running_loop().time() - ended
    assert started.tick_at == held.tick_at
    # Within a recheck or two of the end (0.5 s each), not at the next regular tick (up to 6 s).
    assert waited < 2.5, f"the buffered tick started {waited:.1f} s after the run before it ended"
