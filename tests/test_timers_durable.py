"""Durable timers are never lost (audit F2, F3).

F2: a command that arms a timer and then stores nothing (an idempotent re-submit, a retried batch, an
edit whose append fails, a duplicate submit after an edit) must not take the timer of the due time the
log holds. F3: a pending timer outlives any retention limit of the timer stream (a 400-day delay, a
`@yearly` schedule), shown here with the fired-message retention shrunk to two seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from ordo.domain import schedule_commands as sc
from ordo.domain import schedule_events as se
from ordo.domain.commands import SubmitTask, UpdateTask
from ordo.domain.decide import decide
from ordo.domain.events import AttemptStarted, Event, Queued
from ordo.domain.schedule_cron import normalize
from ordo.domain.state import evolve, initial
from ordo.domain.status import TaskStatus
from ordo.embedded.nats import EmbeddedNats
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import EventStore, EventStoreUnavailable, Metadata, Runnable
from ordo.infra.nats_conn import connect, events_stream_config, provision, timers_stream_config
from ordo.infra.pg import create_pool
from ordo.infra.schedule_handler import ScheduleHandler
from ordo.infra.schedule_timers import ScheduleTimers
from ordo.infra.settings import Settings, SettingsError
from ordo.infra.timers import Due, Timers, schedule_header
from ordo.projections import schedules as schedule_rows
from ordo.projections import tasks
from ordo.projections.runner import ProjectionRunner
from ordo.projections.tasks import scheduled_before
from ordo.workers.scheduler import Scheduler
from ordo.workers.timer_sweep import SweepConfig, TimerSweep
from tests.conftest import System
from tests.helpers import eventually

# Never early; "on time" within what a loaded 2-core test machine can promise.
LATE = timedelta(seconds=15)


async def _started_at(handler: CommandHandler, tenant: str, task_id: str) -> tuple[datetime, datetime] | None:
    """(the stored due time, when the first attempt started) once the task has started."""
    state, history, _ = await handler.load(tenant, task_id)
    started = [e.stored_at for e in history if isinstance(e.event, AttemptStarted)]
    if not started or state.run_at is None:
        return None
    return state.run_at, started[0]


async def _runs_on_time(handler: CommandHandler, tenant: str, task_id: str) -> None:
    async def started() -> tuple[datetime, datetime] | None:
        return await _started_at(handler, tenant, task_id)

    due, at = await eventually(started, timeout=30, what=f"task {task_id} started")
    assert due <= at < due + LATE, (due, at)


# -- F2: no command takes the timer of the stored due time -----------------------------------------


async def test_idempotent_resubmit_of_a_delayed_task_still_runs_at_its_first_due_time(system: System) -> None:
    """Live probe E1 of the audit, with small delays: the repeat answers 200 and the task runs."""
    body = {"type": "demo.echo", "payload": {"probe": "strand"}, "delay": 2, "idempotency_key": "strand-1"}
    first = await system.http.post("/v1/tasks", json=body)
    assert first.status_code == 202, first.text
    task_id = first.json()["id"]
    again = await system.http.post("/v1/tasks", json=body)
    assert again.status_code == 200 and again.json()["id"] == task_id, again.text
    await _runs_on_time(system.handler, system.settings.tenant, task_id)


async def test_a_retried_batch_of_delayed_tasks_runs_every_task(system: System) -> None:
    tasks = [
        {"type": "demo.echo", "payload": {"n": n}, "delay": 2, "idempotency_key": f"batch-{n}"}
        for n in range(3)
    ]
    first = await system.http.post("/v1/tasks:batch", json={"tasks": tasks})
    assert first.status_code == 202, first.text
    again = await system.http.post("/v1/tasks:batch", json={"tasks": tasks})
    assert again.status_code in (200, 202), again.text
    assert [i["created"] for i in again.json()["items"]] == [False] * 3
    for item in first.json()["items"]:
        await _runs_on_time(system.handler, system.settings.tenant, item["id"])


async def test_a_duplicate_submit_after_an_edit_keeps_the_edited_due_time(system: System) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {"type": "demo.echo", "payload": {}, "run_at": later, "idempotency_key": "edited"}
    first = await system.http.post("/v1/tasks", json=body)
    assert first.status_code == 202, first.text
    task_id = first.json()["id"]
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    edited = await system.http.patch(f"/v1/tasks/{task_id}", json={"run_at": soon})
    assert edited.status_code == 202, edited.text
    again = await system.http.post("/v1/tasks", json=body)
    assert again.status_code == 200, again.text
    await _runs_on_time(system.handler, system.settings.tenant, task_id)


class _FailingAppends(EventStore):
    """A real event store whose appends are refused as if JetStream did not answer."""

    async def append(
        self,
        tenant: str,
        queue: str,
        task_id: str,
        events: list[Event],
        expected_seq: int,
        runnable: Runnable | None = None,
        meta: Metadata | None = None,
    ) -> list[int]:
        raise EventStoreUnavailable("no reply from JetStream (injected)")


async def test_an_edit_whose_append_fails_leaves_the_stored_due_time_armed(system: System) -> None:
    tenant = system.settings.tenant
    due = datetime.now(UTC) + timedelta(seconds=2)
    submit = SubmitTask(
        task_id=uuid.uuid4().hex, tenant=tenant, queue="default", task_type="demo.echo",
        now=datetime.now(UTC), run_at=due, max_attempts=3, timeout_s=30.0,
    )  # fmt: skip
    await system.handler.execute(tenant, submit)
    broken = CommandHandler(_FailingAppends(system.nc), system.handler.timers)
    edit = UpdateTask(task_id=submit.task_id, now=datetime.now(UTC), run_at=due + timedelta(hours=1))
    with pytest.raises(EventStoreUnavailable):
        await broken.execute(tenant, edit)
    await _runs_on_time(system.handler, tenant, submit.task_id)


# -- F3: a pending timer never ages out --------------------------------------------------------------


async def _queued_at(store: EventStore, tenant: str, task_id: str) -> tuple[datetime, datetime] | None:
    """(the stored due time, when the task was enqueued) once a timer enqueued it."""
    history, _ = await store.load(tenant, task_id)
    state = initial(task_id)
    queued = None
    due = None
    for stored in history:
        if isinstance(stored.event, Queued) and queued is None:
            due, queued = state.due_at, stored.stored_at
        state = evolve(state, stored.event)
    return (due, queued) if due is not None and queued is not None else None


async def _fired_subjects(nc: NATS, subject: str) -> dict[str, int]:
    info = await nc.jetstream().stream_info(sj.TIMERS_STREAM, subjects_filter=subject)
    return dict(info.state.subjects or {})


async def test_a_timer_pending_longer_than_the_retention_fires_and_an_old_stream_migrates(
    nats_server: EmbeddedNats, settings: Settings
) -> None:
    settings = settings.with_(timer_fired_ttl_s=2.0)
    tenant = settings.tenant
    nc = await connect(settings, name="test-timers")
    scheduler: Scheduler | None = None
    running: asyncio.Task[None] | None = None
    try:
        js = nc.jetstream()
        # ORDO_TIMERS as an older Ordo created it: a max age (30 days there, 4 s here), no TTLs; and
        # one task waiting on a timer armed the old way (one subject per task, no TTL).
        await js.add_stream(events_stream_config(settings))
        await js.add_stream(
            dataclasses.replace(
                timers_stream_config(settings), max_age=4.0, allow_msg_ttl=None, duplicate_window=1.0
            )
        )
        store = EventStore(nc)
        old_due = datetime.now(UTC) + timedelta(seconds=6)
        old = SubmitTask(
            task_id=uuid.uuid4().hex, tenant=tenant, queue="default", task_type="demo.echo",
            now=datetime.now(UTC), run_at=old_due,
        )  # fmt: skip
        await js.publish(
            f"{sj.TIMER_PREFIX}.task.{tenant}.{old.task_id}",
            msgspec.json.encode(Due(tenant=tenant, task_id=old.task_id, due_at=old_due)),
            headers={
                sj.SCHEDULE: schedule_header(old_due - timedelta(seconds=settings.timer_lead_s)),
                sj.SCHEDULE_TARGET: sj.due_subject(tenant, old.task_id),
            },
        )
        await store.append(tenant, "default", old.task_id, decide(old, initial(old.task_id)), 0)

        await provision(nc, settings)  # the upgrade: the stream loses its max age, gains TTLs
        info = await js.stream_info(sj.TIMERS_STREAM)
        assert not info.config.max_age and info.config.allow_msg_ttl

        handler = CommandHandler(
            store, Timers(nc, settings.timer_lead_s, fired_ttl_s=settings.timer_fired_ttl_s)
        )
        new = SubmitTask(
            task_id=uuid.uuid4().hex, tenant=tenant, queue="default", task_type="demo.echo",
            now=datetime.now(UTC), run_at=datetime.now(UTC) + timedelta(seconds=5),
        )  # fmt: skip
        await handler.execute(tenant, new)
        scheduler = Scheduler(nc, handler)
        running = asyncio.create_task(scheduler.run())

        for task_id in (old.task_id, new.task_id):

            async def enqueued(task_id: str = task_id) -> tuple[datetime, datetime] | None:
                return await _queued_at(store, tenant, task_id)

            due, at = await eventually(enqueued, timeout=30, what=f"task {task_id} enqueued by its timer")
            assert due <= at < due + LATE, (due, at)

        # The fired copy of the new timer expires after its TTL (the old one has none).
        async def fired_expired() -> bool:
            return not await _fired_subjects(nc, sj.due_subject(tenant, new.task_id))

        await eventually(fired_expired, timeout=15, what="the fired timer expired")
        assert await _fired_subjects(nc, sj.due_subject(tenant, old.task_id))
    finally:
        if scheduler is not None and running is not None:
            await scheduler.shutdown()
            await asyncio.wait_for(running, 15)
        await nc.close()


async def test_a_schedule_tick_further_apart_than_the_retention_fires(nc: NATS, settings: Settings) -> None:
    """A `@yearly` schedule in miniature: ticks 4 s apart, fired timers kept 2 s."""
    tenant = settings.tenant
    store = EventStore(nc)
    timers = Timers(nc, settings.timer_lead_s, fired_ttl_s=2.0)
    handler = CommandHandler(store, timers)
    schedules = ScheduleHandler(handler, ScheduleTimers(nc, settings.timer_lead_s, fired_ttl_s=2.0))
    spec = se.ScheduleSpec(
        cron=normalize("*/4 * * * * *"), timezone="UTC", task=se.TaskTemplate(type="demo.echo"),
        overlap=se.OverlapPolicy.ALLOW,
    )  # fmt: skip
    await schedules.execute(
        tenant, sc.CreateSchedule(schedule_id="far", tenant=tenant, spec=spec, now=datetime.now(UTC))
    )
    scheduler = Scheduler(nc, handler, schedules=schedules)
    running = asyncio.create_task(scheduler.run())
    try:

        async def fired_twice() -> list[Any]:
            raw, _ = await store.load_raw(sj.schedule_events_filter(tenant, "far"))
            fired = [
                e
                for e in map(se.decode_schedule_event, (r.data for r in raw))
                if isinstance(e, se.ScheduleFired)
            ]
            return fired if len(fired) >= 2 else []

        fired = await eventually(fired_twice, timeout=30, what="two ticks 4 s apart")
        assert fired[1].tick_at - fired[0].tick_at == timedelta(seconds=4)
    finally:
        await schedules.execute(tenant, sc.DeleteSchedule(schedule_id="far"))
        await scheduler.shutdown()
        await asyncio.wait_for(running, 15)


def test_the_fired_timer_retention_is_validated() -> None:
    assert Settings.from_env({"ORDO_TIMER_FIRED_TTL_S": "3600"}).timer_fired_ttl_s == 3600.0
    for bad in (0.5, 2.0):  # under a second; not longer than the lead (2 s)
        with pytest.raises(SettingsError, match="ORDO_TIMER_FIRED_TTL_S"):
            Settings(timer_fired_ttl_s=bad)


async def test_a_worker_waits_for_an_older_timer_stream_to_be_upgraded(
    nats_server: EmbeddedNats, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker (whose NATS user may not change streams) starting beside the first upgraded
    process waits for it to update ORDO_TIMERS instead of failing on the missing TTL flag."""
    nc = await connect(settings, name="test-upgrade")
    try:
        js = nc.jetstream()
        await js.add_stream(events_stream_config(settings))
        await js.add_stream(
            dataclasses.replace(timers_stream_config(settings), max_age=30 * 86400.0, allow_msg_ttl=None)
        )
        caplog.set_level(logging.INFO, logger="ordo.nats")
        worker = asyncio.create_task(provision(nc, settings, manage=False))

        async def waiting() -> bool:
            if worker.done():
                raise AssertionError(f"the worker did not wait: {worker.exception()!r}")
            return "waiting for stream ORDO_TIMERS to be updated" in caplog.text

        await eventually(waiting, timeout=30, what="the worker waiting for the upgrade")
        await provision(nc, settings)  # the gateway or scheduler of the new version
        await asyncio.wait_for(worker, 30)
        assert (await js.stream_info(sj.TIMERS_STREAM)).config.allow_msg_ttl
    finally:
        await nc.close()


async def test_a_starting_scheduler_purges_the_fired_timers_it_has_acked(
    nc: NATS, settings: Settings, handler: CommandHandler
) -> None:
    """Fired timers stored before per-message TTLs (an older version) would stay for good."""
    tenant = settings.tenant
    command = SubmitTask(task_id=uuid.uuid4().hex, tenant=tenant, queue="default", task_type="demo.echo",
                         now=datetime.now(UTC))  # fmt: skip
    await handler.execute(tenant, command)  # queued: a timer for it is acked and ignored
    js = nc.jetstream()
    fired = Due(tenant=tenant, task_id=command.task_id, due_at=datetime.now(UTC))
    ack = await js.publish(sj.due_subject(tenant, command.task_id), msgspec.json.encode(fired))  # no TTL

    async def acked() -> bool:
        try:
            info = await js.consumer_info(sj.TIMERS_STREAM, sj.SCHEDULER_CONSUMER)
        except NotFoundError:
            return False  # the scheduler has not created its consumer yet
        return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= ack.seq

    async def gone() -> bool:
        return not await _fired_subjects(nc, sj.due_subject(tenant, command.task_id))

    for probe in (acked, gone):  # the first run acks it; the next start purges it
        scheduler = Scheduler(nc, handler)
        running = asyncio.create_task(scheduler.run())
        try:
            await eventually(probe, timeout=30, what=probe.__name__)
        finally:
            await scheduler.shutdown()
            await asyncio.wait_for(running, 15)
        if probe is acked:
            assert await _fired_subjects(nc, sj.due_subject(tenant, command.task_id)), "kept by limits"


async def test_the_sweep_rearms_a_scheduled_task_left_without_a_timer(
    nc: NATS, settings: Settings, handler: CommandHandler
) -> None:
    """A task stranded by an older version (its due time passed, no timer) runs after a sweep."""
    tenant = settings.tenant
    now = datetime.now(UTC)
    stranded = SubmitTask(task_id=uuid.uuid4().hex, tenant=tenant, queue="default", task_type="demo.echo",
                          now=now - timedelta(seconds=10), run_at=now - timedelta(seconds=5))  # fmt: skip
    waiting = SubmitTask(task_id=uuid.uuid4().hex, tenant=tenant, queue="default", task_type="demo.echo",
                         now=now, run_at=now + timedelta(hours=1))  # fmt: skip
    for command in (stranded, waiting):  # stored without arming anything
        await handler.store.append(
            tenant, "default", command.task_id, decide(command, initial(command.task_id)), 0
        )
    projector = ProjectionRunner(nc, settings.database_url)
    scheduler = Scheduler(nc, handler)
    running = [asyncio.create_task(projector.run()), asyncio.create_task(scheduler.run())]
    pool = await create_pool(settings.database_url)
    try:

        async def projected() -> bool:
            try:
                return await tasks.get_task(pool, tenant, waiting.task_id) is not None
            except asyncpg.UndefinedTableError:
                return False  # the projector has not created its tables yet

        await eventually(projected, timeout=60, what="the read model caught up")
        sweep = TimerSweep(
            lambda: create_pool(settings.database_url),
            handler,
            SweepConfig(grace_s=1.0),
            overdue=scheduled_before,
        )
        assert await sweep.sweep_once() == 1

        async def enqueued() -> tuple[datetime, datetime] | None:
            return await _queued_at(handler.store, tenant, stranded.task_id)

        await eventually(enqueued, timeout=30, what="the stranded task enqueued")
        state, _, _ = await handler.load(tenant, waiting.task_id)
        assert state.status is TaskStatus.SCHEDULED
    finally:
        await projector.shutdown()
        await scheduler.shutdown()
        await asyncio.wait_for(asyncio.gather(*running), 30)
        await pool.close()


async def test_the_sweep_rearms_a_schedule_whose_timer_was_lost(
    nc: NATS, settings: Settings, handler: CommandHandler
) -> None:
    """A schedule whose pending timer is gone (expired while every scheduler was down, or replaced
    on its subject by a stored message: a security pass, 2026-12-06) never fired again, silently,
    until it was paused and resumed. The sweep gives its overdue tick a timer again."""
    tenant, sid = settings.tenant, "lost-" + uuid.uuid4().hex[:8]
    schedules = ScheduleHandler(handler, ScheduleTimers(nc, settings.timer_lead_s))
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    spec = se.ScheduleSpec(
        cron=normalize("* * * * * *"), timezone="UTC", task=se.TaskTemplate(type="demo.echo"), start_at=start
    )
    created = await schedules.execute(
        tenant, sc.CreateSchedule(schedule_id=sid, tenant=tenant, spec=spec, now=datetime.now(UTC))
    )
    first = created.state.next_at
    assert first is not None
    await schedules.timers.disarm(tenant, sid, first)  # the timer is lost before it fires
    projector = ProjectionRunner(nc, settings.database_url)
    scheduler = Scheduler(nc, handler, schedules=schedules)
    running = [asyncio.create_task(projector.run()), asyncio.create_task(scheduler.run())]
    pool = await create_pool(settings.database_url)

    async def fired() -> bool:
        _, history, _ = await schedules.load(tenant, sid)
        return any(isinstance(se.decode_schedule_event(r.data), se.ScheduleFired) for r in history)

    try:

        async def overdue() -> bool:
            past = datetime.now(UTC) > first + timedelta(seconds=1.5)
            return past and bool(await schedule_rows.overdue(pool, first + timedelta(seconds=1), 10))

        await eventually(overdue, timeout=60, what="the schedule overdue in the read model")
        assert not await fired()
        sweep = TimerSweep(
            lambda: create_pool(settings.database_url),
            handler,
            SweepConfig(grace_s=1.0),
            overdue=scheduled_before,
            schedules=schedules,
            overdue_schedules=schedule_rows.overdue,
        )
        assert await sweep.sweep_once() == 1
        await eventually(fired, timeout=30, what="the schedule firing again")
    finally:
        await schedules.execute(tenant, sc.DeleteSchedule(schedule_id=sid))
        await projector.shutdown()
        await scheduler.shutdown()
        await asyncio.wait_for(asyncio.gather(*running), 30)
        await pool.close()


async def test_a_sweep_before_the_projector_created_its_tables_finds_nothing_quietly(
    settings: Settings, handler: CommandHandler
) -> None:
    """A fresh install starts the scheduler's sweep before the projector has made the read model:
    that round finds nothing to re-arm and is not reported as a failure."""
    pools: list[asyncpg.Pool] = []

    async def open_pool() -> asyncpg.Pool:
        pools.append(await create_pool(settings.database_url))
        return pools[-1]

    sweep = TimerSweep(open_pool, handler, overdue=scheduled_before)
    try:
        assert await sweep.sweep_once() == 0  # not UndefinedTableError
        assert await pools[0].fetchval("SELECT to_regclass('tasks')") is None  # no read model yet
    finally:
        for pool in pools:
            await pool.close()
