"""Timers and worker reports under store faults (audit F11, F17), on a real nats-server.

The event store is the real one; a subclass only delays or refuses an append, or answers a load
with no history, as a slow JetStream or a replica that is behind would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError

from ordo.domain.commands import FailAttempt, StartAttempt, SubmitTask
from ordo.domain.decide import decide
from ordo.domain.events import AttemptStarted, ErrorInfo, Event, LeaseExtended
from ordo.domain.state import initial
from ordo.domain.status import TaskStatus
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.event_store import (
    ConcurrencyError,
    EventStore,
    EventStoreUnavailable,
    Metadata,
    Runnable,
    StoredEvent,
)
from ordo.infra.settings import Settings
from ordo.infra.timers import Timers
from ordo.workers.context import TaskContext
from ordo.workers.handlers import Registry
from ordo.workers.lease import Attempt
from ordo.workers.runtime import Worker
from ordo.workers.scheduler import Scheduler, SchedulerConfig
from tests.helpers import eventually


class _FaultyStore(EventStore):
    """A real event store with injectable faults on the next appends and loads."""

    def __init__(self, nc: NATS) -> None:
        super().__init__(nc)
        self.conflicts = 0  # the next N appends conflict (as if another writer came first)
        self.empty_loads = 0  # the next N loads find no history (a replica behind)
        self.down_until = 0.0  # appends fail until this monotonic time
        self.gate: asyncio.Event | None = None  # appends wait for it

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
        if self.gate is not None:
            await self.gate.wait()
        if time.monotonic() < self.down_until:
            raise EventStoreUnavailable("no reply from JetStream (injected)")
        if self.conflicts > 0:
            self.conflicts -= 1
            raise ConcurrencyError("injected conflict")
        return await super().append(tenant, queue, task_id, events, expected_seq, runnable, meta)

    async def load(self, tenant: str, task_id: str) -> tuple[list[StoredEvent], int]:
        if self.empty_loads > 0:
            self.empty_loads -= 1
            return [], 0
        return await super().load(tenant, task_id)


def _submit(tenant: str, task_type: str = "demo.echo", **changes: Any) -> SubmitTask:
    fields: dict[str, Any] = {"now": datetime.now(UTC), "max_attempts": 3, "timeout_s": 30.0, **changes}
    return SubmitTask(task_id=uuid.uuid4().hex, tenant=tenant, queue="default", task_type=task_type, **fields)


async def _history(store: EventStore, tenant: str, task_id: str) -> list[StoredEvent]:
    history, _ = await store.load(tenant, task_id)
    return history


@contextlib.asynccontextmanager
async def _running(component: Any) -> AsyncIterator[None]:
    task = asyncio.create_task(component.run())
    try:
        yield
    finally:
        await component.shutdown()
        await asyncio.wait_for(task, 30)


# -- F11: a task that is not visible yet ----------------------------------------------------------


async def test_a_timer_whose_task_is_not_visible_yet_comes_back_until_it_is(
    nc: NATS, settings: Settings, handler: CommandHandler
) -> None:
    tenant = settings.tenant
    due = datetime.now(UTC) + timedelta(seconds=1)
    command = _submit(tenant, run_at=due, now=due - timedelta(seconds=1))
    await handler.timers.arm(tenant, command.task_id, due)  # the timer, but no history yet
    scheduler = Scheduler(nc, handler, SchedulerConfig(unknown_delay_s=0.2))
    async with _running(scheduler):
        js = nc.jetstream()

        async def redelivered() -> bool:
            try:
                info = await js.consumer_info(sj.TIMERS_STREAM, sj.SCHEDULER_CONSUMER)
            except NotFoundError:
                return False  # the scheduler has not created its consumer yet
            return (info.num_redelivered or 0) >= 1

        await eventually(redelivered, timeout=30, what="the timer handed back, not acked away")
        # The history shows up (the replica caught up); the timer still enqueues the task.
        events = decide(command, initial(command.task_id))
        await handler.store.append(tenant, "default", command.task_id, events, 0)

        async def queued() -> bool:
            state, _, _ = await handler.load(tenant, command.task_id)
            return state.status is TaskStatus.QUEUED

        await eventually(queued, timeout=30, what="the task enqueued by its timer")


def _registry(store: _FaultyStore, outage_s: float) -> Registry:
    registry = Registry()

    @registry.task("test.stale_report")
    async def stale_report(ctx: TaskContext) -> str:
        store.conflicts, store.empty_loads = 1, 2  # the report conflicts, then reloads from nothing
        return "done"

    @registry.task("test.store_outage")
    async def store_outage(ctx: TaskContext) -> str:
        store.down_until = time.monotonic() + outage_s
        return "done"

    return registry


async def _runs_once(store: EventStore, tenant: str, task_id: str) -> None:
    async def succeeded() -> list[StoredEvent]:
        history = await _history(store, tenant, task_id)
        return history if any(e.name == "succeeded" for e in history) else []

    history = await eventually(succeeded, timeout=60, what="the task succeeded")
    started = [e for e in history if isinstance(e.event, AttemptStarted)]
    assert len(started) == 1, [e.name for e in history]


async def test_a_final_report_that_reloads_from_a_replica_behind_is_retried_not_acked(
    nc: NATS, settings: Settings
) -> None:
    tenant = settings.tenant
    store = _FaultyStore(nc)
    handler = CommandHandler(store, Timers(nc, settings.timer_lead_s))
    worker = Worker(nc, handler, _registry(store, 0.0), settings)
    async with _running(worker):
        command = _submit(tenant, "test.stale_report")
        await handler.execute(tenant, command)
        await _runs_once(store, tenant, command.task_id)


# -- F17: the ticket's deadline never waits on the store ------------------------------------------


async def test_a_completion_stored_after_an_outage_longer_than_the_ack_wait_is_not_run_again(
    nc: NATS, settings: Settings
) -> None:
    tenant = settings.tenant
    store = _FaultyStore(nc)
    handler = CommandHandler(store, Timers(nc, settings.timer_lead_s))
    worker = Worker(nc, handler, _registry(store, 1.5 * settings.ack_wait_s), settings)
    async with _running(worker):
        command = _submit(tenant, "test.store_outage")
        await handler.execute(tenant, command)
        await _runs_once(store, tenant, command.task_id)


async def test_a_lease_extension_sends_in_progress_before_its_append_is_stored(
    nc: NATS, settings: Settings
) -> None:
    tenant = settings.tenant
    store = _FaultyStore(nc)
    handler = CommandHandler(store, Timers(nc, settings.timer_lead_s))
    command = _submit(tenant)
    await handler.execute(tenant, command)
    now = datetime.now(UTC)
    start = StartAttempt(
        task_id=command.task_id, dispatch=1, worker_id="w1", now=now, lease_until=now + timedelta(seconds=30)
    )
    out = await handler.execute(tenant, start)
    assert any(isinstance(e, AttemptStarted) for e in out.events)
    # A real JetStream message stands for the ticket; its ack subject shows what the attempt sends.
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="SCRATCH", subjects=["scratch.ticket"]))
    await js.add_consumer(
        "SCRATCH", ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=30)
    )
    await js.publish("scratch.ticket", b"ticket")
    (msg,) = await (await js.pull_subscribe_bind("c", "SCRATCH")).fetch(1, timeout=5)
    acks = await nc.subscribe(msg.reply)
    attempt = Attempt(
        msg=msg, handler=handler, tenant=tenant, task_id=command.task_id, number=1, worker_id="w1",
        settings=settings, clock=lambda: datetime.now(UTC),
        logger=logging.LoggerAdapter(logging.getLogger("test"), {}), known=(out.state, out.last_seq),
    )  # fmt: skip
    store.gate = asyncio.Event()  # the store answers only when the test says so
    extending = asyncio.create_task(attempt.extend())
    try:
        sent = await acks.next_msg(timeout=10)
        assert sent.data == b"+WPI"
        assert not extending.done(), "the +WPI did not wait for the append"
    finally:
        store.gate.set()
        await asyncio.wait_for(extending, 15)
    history = await _history(store, tenant, command.task_id)
    assert isinstance(history[-1].event, LeaseExtended)


# -- a retry timer due before its failure is stored ------------------------------------------------


async def test_a_retry_timer_due_before_its_failure_is_stored_still_enqueues_the_retry(
    nc: NATS, settings: Settings, handler: CommandHandler
) -> None:
    """The retry's timer is armed before the failure is appended; under load the timer can come due
    while the append is still on its way and find the attempt running. It must come back, not be
    acked away: that stranded the retry for good (the sweep leaves retrying tasks alone)."""
    tenant = settings.tenant
    submit = _submit(tenant)
    await handler.execute(tenant, submit)
    state, _, _ = await handler.load(tenant, submit.task_id)
    now = datetime.now(UTC)
    start = StartAttempt(
        task_id=submit.task_id,
        dispatch=state.dispatch,
        worker_id="w1",
        now=now,
        lease_until=now + timedelta(minutes=5),
    )
    await handler.execute(tenant, start)
    store = _FaultyStore(nc)
    store.gate = asyncio.Event()  # the failure's append waits until the timer has come due
    slow = CommandHandler(store, Timers(nc, settings.timer_lead_s))
    fail = FailAttempt(
        task_id=submit.task_id,
        attempt=1,
        worker_id="w1",
        error=ErrorInfo(kind="Boom"),
        retry_at=datetime.now(UTC) + timedelta(seconds=0.3),
    )
    scheduler = Scheduler(nc, handler, SchedulerConfig(unknown_delay_s=0.5))
    async with _running(scheduler):
        failing = asyncio.create_task(slow.execute(tenant, fail))
        js = nc.jetstream()

        async def came_back() -> bool:
            try:
                info = await js.consumer_info(sj.TIMERS_STREAM, sj.SCHEDULER_CONSUMER)
            except NotFoundError:
                return False
            return (info.num_redelivered or 0) >= 1

        await eventually(came_back, timeout=30, what="the early retry timer handed back, not acked away")
        store.gate.set()
        await asyncio.wait_for(failing, 30)

        async def retried() -> bool:
            s, _, _ = await handler.load(tenant, submit.task_id)
            return s.status is TaskStatus.QUEUED and s.attempt == 1

        await eventually(retried, timeout=30, what="the retry enqueued by its timer")
