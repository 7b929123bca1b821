"""A tick decided on the schedule read ahead (while the scheduler held the tick) is decided on the
log's truth: a change to the schedule since is seen before the tick's task is submitted, and a
previous run that was still active is read again at the tick."""

from __future__ import annotations

from datetime import UTC, datetime

from nats.aio.client import Client as NATS

from ordo.domain import schedule_commands as sc
from ordo.domain import schedule_events as se
from ordo.domain.commands import CancelTask
from ordo.domain.schedule_cron import normalize
from ordo.domain.schedule_decide import tick_task_id
from ordo.domain.schedule_events import OverlapPolicy
from ordo.domain.status import TaskStatus
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore
from ordo.infra.schedule_handler import ScheduleHandler
from ordo.infra.schedule_timers import ScheduleTimers
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers


def _handlers(nc: NATS, settings: Settings) -> tuple[CommandHandler, ScheduleHandler]:
    tasks = CommandHandler(EventStore(nc), Timers(nc, settings.timer_lead_s))
    return tasks, ScheduleHandler(tasks, ScheduleTimers(nc, settings.timer_lead_s))


async def _create(schedules: ScheduleHandler, tenant: str, sid: str, overlap: OverlapPolicy) -> None:
    spec = se.ScheduleSpec(
        cron=normalize("0 0 1 1 *"), timezone="UTC", task=se.TaskTemplate(type="demo.echo"), overlap=overlap
    )
    await schedules.execute(
        tenant, sc.CreateSchedule(schedule_id=sid, tenant=tenant, spec=spec, now=datetime.now(UTC))
    )


def _tick(tenant: str, sid: str, at: datetime) -> sc.Tick:
    return sc.Tick(schedule_id=sid, tenant=tenant, tick_at=at, now=at)


def _fired(events: list[se.ScheduleEvent]) -> list[se.ScheduleFired]:
    return [e for e in events if isinstance(e, se.ScheduleFired)]


async def test_a_tick_read_ahead_with_no_change_since_fires_its_task(nc: NATS, settings: Settings) -> None:
    tasks, schedules = _handlers(nc, settings)
    tenant = settings.tenant
    await _create(schedules, tenant, "calm", OverlapPolicy.SKIP)
    ahead = await schedules.read_ahead(tenant, "calm")
    at = ahead.state.next_at
    assert at is not None
    out = await schedules.execute(tenant, _tick(tenant, "calm", at), known=ahead)
    assert [e.task_id for e in _fired(out.events)] == [tick_task_id(tenant, "calm", at)]
    task, _, _ = await tasks.load(tenant, tick_task_id(tenant, "calm", at))
    assert task.exists and task.status is TaskStatus.QUEUED


async def test_a_schedule_paused_after_the_read_ahead_submits_no_task(nc: NATS, settings: Settings) -> None:
    tasks, schedules = _handlers(nc, settings)
    tenant = settings.tenant
    await _create(schedules, tenant, "hushed", OverlapPolicy.ALLOW)
    ahead = await schedules.read_ahead(tenant, "hushed")
    at = ahead.state.next_at
    assert at is not None
    await schedules.execute(tenant, sc.PauseSchedule(schedule_id="hushed"))
    out = await schedules.execute(tenant, _tick(tenant, "hushed", at), known=ahead)
    assert not _fired(out.events)
    task, _, _ = await tasks.load(tenant, tick_task_id(tenant, "hushed", at))
    assert not task.exists  # the stale read-ahead never reached the submit


async def test_a_previous_run_active_at_the_read_ahead_is_read_again_at_the_tick(
    nc: NATS, settings: Settings
) -> None:
    tasks, schedules = _handlers(nc, settings)
    tenant = settings.tenant
    await _create(schedules, tenant, "busy", OverlapPolicy.SKIP)
    now = datetime.now(UTC)
    await schedules.execute(
        tenant, sc.TriggerSchedule(schedule_id="busy", now=now, task_id="busy-manual-run")
    )
    ahead = await schedules.read_ahead(tenant, "busy")
    assert ahead.previous is None  # still queued: not trusted until the tick
    at = ahead.state.next_at
    assert at is not None
    await tasks.execute(tenant, CancelTask(task_id="busy-manual-run"))  # it ends meanwhile
    out = await schedules.execute(tenant, _tick(tenant, "busy", at), known=ahead)
    assert [e.task_id for e in _fired(out.events)] == [tick_task_id(tenant, "busy", at)]


async def test_a_previous_run_still_active_at_the_tick_skips_it(nc: NATS, settings: Settings) -> None:
    _, schedules = _handlers(nc, settings)
    tenant = settings.tenant
    await _create(schedules, tenant, "long", OverlapPolicy.SKIP)
    now = datetime.now(UTC)
    await schedules.execute(tenant, sc.TriggerSchedule(schedule_id="long", now=now, task_id="long-run"))
    ahead = await schedules.read_ahead(tenant, "long")
    at = ahead.state.next_at
    assert at is not None
    out = await schedules.execute(tenant, _tick(tenant, "long", at), known=ahead)
    assert not _fired(out.events)
    assert any(isinstance(e, se.ScheduleSkipped) for e in out.events)
