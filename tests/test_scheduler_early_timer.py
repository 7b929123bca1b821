"""A timer that reaches the scheduler before its task is stored (a timer is armed before the task's
first append, and a short delay's timer is published fired at once) is read again shortly before its
due time: the due moment is one publish, not a load of the task (a scan of the log)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ordo.domain.commands import SubmitTask
from ordo.domain.decide import decide
from ordo.domain.state import initial
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.ids import new_task_id
from ordo.infra.nats_conn import connect
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers
from ordo.workers.scheduler import Scheduler, SchedulerConfig
from tests.helpers import eventually
from tests.test_worker_points import running

DUE_IN_S = 3.0
READ_AHEAD_S = 1.0


async def test_a_timer_that_arrives_before_its_task_is_read_again_before_it_is_due(
    nc: NATS, handler: CommandHandler, settings: Settings
) -> None:
    tenant, queue, task_id = settings.tenant, "q" + uuid.uuid4().hex[:10], new_task_id()
    gets: list[tuple[float, str]] = []  # (wall clock, what) of each direct get naming the task
    queued = asyncio.Event()

    async def on_get(msg: Msg) -> None:
        body = json.loads(msg.data or b"{}")
        what = str(body.get("next_by_subj") or body.get("last_by_subj") or "")
        if task_id in what:
            gets.append((time.time(), what))

    async def on_event(msg: Msg) -> None:
        if msg.subject.endswith(".queued"):
            queued.set()

    spy = await connect(settings, name="direct-get-spy")
    scheduler = Scheduler(nc, handler, SchedulerConfig(read_ahead_s=READ_AHEAD_S))
    try:
        await spy.subscribe(f"{sj.DIRECT_GET_API}.>", cb=on_get)
        await spy.subscribe(sj.task_events_filter(tenant, task_id), cb=on_event)
        await spy.flush()
        async with running(scheduler):
            now = datetime.now(UTC)
            due = now + timedelta(seconds=DUE_IN_S)
            # The timer first, fired at once (what `arm` does for a timer due within its lead) ...
            timers = Timers(nc, settings.timer_lead_s)
            (_, due_subject), data = timers.message(tenant, task_id, due)
            await nc.jetstream().publish(due_subject, data, headers={sj.MSG_TTL: timers.fired_ttl})

            async def held() -> bool:
                info = await nc.jetstream().consumer_info(sj.TIMERS_STREAM, sj.SCHEDULER_CONSUMER)
                return int(info.num_ack_pending or 0) >= 1

            await eventually(held, timeout=10, interval=0.01, what="the scheduler holds the timer")
            await spy.flush()
            read_before_stored = len(gets)
            # ... then the task, stored without arming another timer.
            submit = SubmitTask(
                task_id=task_id, tenant=tenant, queue=queue, task_type="demo.echo", now=now, run_at=due
            )
            events = decide(submit, initial(task_id))
            assert [type(e).__name__ for e in events] == ["Submitted", "Scheduled"]
            await handler.store.append(tenant, queue, task_id, events, 0)
            await asyncio.wait_for(queued.wait(), DUE_IN_S + 10)
            await spy.flush()
    finally:
        await spy.close()

    assert read_before_stored >= 1, "the timer was read ahead while held"
    late = [(round(t - due.timestamp(), 3), what) for t, what in gets if t >= due.timestamp()]
    assert late == [], f"the task was loaded at its due time: {late}"
    again = [t for t, _ in gets[read_before_stored:] if t < due.timestamp()]
    assert again, "the task was read again before its due time"
