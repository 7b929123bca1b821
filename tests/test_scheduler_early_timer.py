"""A timer that reaches the scheduler before the append it was armed for is stored (a timer is armed
before the append: a submit's with a delay, a failure's with a retry; one due soon is published fired
at once) is read again shortly before its due time: the due moment is one publish, not a load of the
task (a scan of the log)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ordo.domain.commands import FailAttempt, StartAttempt, SubmitTask
from ordo.domain.decide import decide
from ordo.domain.events import ErrorInfo, Event
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


Pending = Callable[[CommandHandler, str, str, str, datetime], Awaitable[tuple[list[Event], int]]]


async def _a_delayed_submit(
    handler: CommandHandler, tenant: str, queue: str, task_id: str, due: datetime
) -> tuple[list[Event], int]:
    """A submit with a delay, not stored yet: its events and the sequence its append expects."""
    submit = SubmitTask(
        task_id=task_id, tenant=tenant, queue=queue, task_type="demo.echo", now=datetime.now(UTC), run_at=due
    )
    events = decide(submit, initial(task_id))
    assert [type(e).__name__ for e in events] == ["Submitted", "Scheduled"]
    return events, 0


async def _a_failure_to_retry(
    handler: CommandHandler, tenant: str, queue: str, task_id: str, due: datetime
) -> tuple[list[Event], int]:
    """A running task's retryable failure, not stored yet (the task is stored and running)."""
    submit = SubmitTask(
        task_id=task_id, tenant=tenant, queue=queue, task_type="demo.echo", now=datetime.now(UTC)
    )
    submitted = await handler.execute(tenant, submit)
    now = datetime.now(UTC)
    start = StartAttempt(
        task_id=task_id,
        dispatch=submitted.state.dispatch,
        worker_id="w",
        now=now,
        lease_until=now + timedelta(seconds=60),
    )
    out = await handler.execute(tenant, start)
    fail = FailAttempt(
        task_id=task_id, attempt=1, worker_id="w", error=ErrorInfo(kind="E", message="x"), retry_at=due
    )
    events = decide(fail, out.state)
    assert [type(e).__name__ for e in events] == ["AttemptFailed", "RetryScheduled"]
    return events, out.last_seq


@pytest.mark.parametrize("pending", [_a_delayed_submit, _a_failure_to_retry], ids=["submit", "retry"])
async def test_a_timer_that_arrives_before_its_append_is_read_again_before_it_is_due(
    nc: NATS, handler: CommandHandler, settings: Settings, pending: Pending
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
            due = datetime.now(UTC) + timedelta(seconds=DUE_IN_S)
            events, expected = await pending(handler, tenant, queue, task_id, due)
            await spy.flush()
            gets.clear()  # (the set-up's own reads)
            # The timer first, fired at once (what `arm` does for a timer due within its lead) ...
            timers = Timers(nc, settings.timer_lead_s)
            (_, due_subject), data = timers.message(tenant, task_id, due)
            await nc.jetstream().publish(due_subject, data, headers={sj.MSG_TTL: timers.fired_ttl})

            async def read_ahead() -> bool:
                await spy.flush()
                return len(gets) >= 1

            # The scheduler read the task while holding its timer: before the append was stored.
            await eventually(read_ahead, timeout=10, interval=0.01, what="the timer's task read ahead")
            read_before_stored = len(gets)
            # ... then the append it was armed for, stored without arming another timer.
            await handler.store.append(tenant, queue, task_id, events, expected)
            await asyncio.wait_for(queued.wait(), DUE_IN_S + 10)
            await spy.flush()
    finally:
        await spy.close()

    late = [(round(t - due.timestamp(), 3), what) for t, what in gets if t >= due.timestamp()]
    assert late == [], f"the task was loaded at its due time: {late}"
    again = [t for t, _ in gets[read_before_stored:] if t < due.timestamp()]
    assert again, "the task was read again before its due time"
