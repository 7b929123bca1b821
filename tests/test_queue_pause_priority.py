"""A queue's held tickets keep their priority after a resume (reported 2026-12-06).

While a tenant's queue is paused, its workers hold every dispatch; on resume the held tickets went
back to one copy subject read in arrival order, so urgent tasks that arrived late in the pause ran
after every earlier task, even priority 9 ones. They go back per band now and are fetched with
their band's weight (docs/decisions.md 57). One worker with one slot, as in the report, makes the
start order the order in which tickets are taken."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client as NATS

from ordo.domain.commands import SubmitTask
from ordo.domain.queue_control import PauseQueue, ResumeQueue
from ordo.domain.status import TaskStatus
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.ids import new_task_id
from ordo.infra.queue_control import QueueController
from ordo.infra.settings import Settings
from ordo.workers import consumer
from ordo.workers.demo import registry
from ordo.workers.queue_pause import held_consumer_config
from ordo.workers.runtime import Worker
from ordo.workers.scheduler import Scheduler
from tests.helpers import eventually

QUEUE = "qprio"
EARLY = (9, 5, 0) * 20  # the first batch of the report
URGENT = 5  # then this many priority 0 tasks
DELAY_S = 0.5  # the urgent tasks of the delayed case become due this long after their submit
PAUSE_REFRESH_S = 0.2
WAIT_S = 90.0  # the bound of every wait on a condition


@contextlib.asynccontextmanager
async def _running(nc: NATS, handler: CommandHandler, settings: Settings) -> AsyncIterator[Worker]:
    """One worker of QUEUE with one slot (`ordo worker --queues qprio --concurrency 1`), and the
    scheduler for the delayed tasks."""
    worker = Worker(
        nc,
        handler,
        registry,
        replace(settings, worker_concurrency=1),
        queues=(QUEUE,),
        pause_refresh_s=PAUSE_REFRESH_S,
    )
    scheduler = Scheduler(nc, handler)
    loops = [asyncio.create_task(worker.run()), asyncio.create_task(scheduler.run())]
    try:
        yield worker
    finally:
        await worker.shutdown()
        await scheduler.shutdown()
        await asyncio.wait_for(asyncio.gather(*loops, return_exceptions=True), 30)


def _submit(settings: Settings, priority: int, run_at: datetime | None = None) -> SubmitTask:
    return SubmitTask(
        task_id=new_task_id(),
        tenant=settings.tenant,
        queue=QUEUE,
        task_type="demo.echo",
        now=datetime.now(UTC),
        priority=priority,
        run_at=run_at,
    )


async def _held(handler: CommandHandler, settings: Settings, count: int) -> None:
    """Wait until `count` tickets were held (the held subject keeps every one it was given)."""

    async def probe() -> bool:
        history, _ = await handler.store.load_raw(sj.held_work_subject(settings.tenant, QUEUE))
        return len(history) >= count

    await eventually(probe, timeout=WAIT_S, what=f"{count} tickets held")


async def _started(handler: CommandHandler, settings: Settings, count: int) -> list[str]:
    """The ids of the tasks started in QUEUE, in start order, once `count` have started."""
    started = sj.event_subject(settings.tenant, QUEUE, "*", "attempt_started")

    async def probe() -> list[str] | None:
        history, _ = await handler.store.load_raw(started)
        ids = [sj.parse_event_subject(raw.subject)[2] for raw in history]
        return ids if len(ids) >= count else None

    return await eventually(probe, timeout=WAIT_S, what=f"{count} tasks started")


async def _succeeded(handler: CommandHandler, settings: Settings, task_ids: list[str]) -> None:
    async def probe() -> bool:
        for task_id in task_ids:
            state, _, _ = await handler.load(settings.tenant, task_id)
            if state.status is not TaskStatus.SUCCEEDED:
                return False
        return True

    await eventually(probe, timeout=WAIT_S, what="every task succeeded")


@pytest.mark.parametrize("late", ["submitted", "due"])
async def test_urgent_tasks_held_after_earlier_ones_run_ahead_of_low_priorities(
    settings: Settings, nc: NATS, handler: CommandHandler, late: str
) -> None:
    queues = QueueController(nc, handler.store, settings)
    await queues.execute(settings.tenant, PauseQueue(queue=QUEUE))
    async with _running(nc, handler, settings) as worker:
        await eventually(lambda: _true(worker.queue_paused(settings.tenant, QUEUE)), WAIT_S, what="seen")
        early = [_submit(settings, priority) for priority in EARLY]
        await handler.submit_many(settings.tenant, early)
        await _held(handler, settings, len(early))

        run_at = datetime.now(UTC) + timedelta(seconds=DELAY_S) if late == "due" else None
        urgent = [_submit(settings, 0, run_at) for _ in range(URGENT)]
        await handler.submit_many(settings.tenant, urgent)
        await _held(handler, settings, len(early) + len(urgent))  # the delayed ones: once due

        await queues.execute(settings.tenant, ResumeQueue(queue=QUEUE))
        order = await _started(handler, settings, len(early) + len(urgent))

    every = [c.task_id for c in (*early, *urgent)]
    assert sorted(order) == sorted(every), "each task started once"
    await _succeeded(handler, settings, every)
    urgent_ids = {c.task_id for c in urgent}
    nines = {c.task_id for c in early if c.priority == 9}
    last_urgent = max(i for i, task_id in enumerate(order) if task_id in urgent_ids)
    nines_first = sum(1 for task_id in order[:last_urgent] if task_id in nines)
    # Band 0's copies are fetched with weight 6 of 10: its 25 tickets all start well before band
    # 2's 20 are half through. Before the fix the urgent ones started after all 20.
    labels = {c.task_id: f"{'U' if c.task_id in urgent_ids else ''}{c.priority}" for c in (*early, *urgent)}
    assert nines_first <= len(nines) // 2, (
        f"{nines_first} priority 9 tasks started before the last urgent one: {[labels[t] for t in order]}"
    )


async def test_tickets_an_older_version_held_or_moved_back_still_run(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """An upgrade with a paused queue: a ticket held for the one copy subject of every band goes
    back to its band's copies, and one already moved back there is still read."""
    queues = QueueController(nc, handler.store, settings)
    await queues.execute(settings.tenant, PauseQueue(queue=QUEUE))
    tasks = [_submit(settings, 0), _submit(settings, 9)]
    async with _running(nc, handler, settings):
        await handler.submit_many(settings.tenant, tasks)
        await _held(handler, settings, len(tasks))
    # What an older version would have left: the first ticket held for `….copy`, the second on it.
    js = nc.jetstream()
    legacy = sj.legacy_copy_work_subject(settings.tenant, QUEUE)
    pull = await consumer.open_consumer(nc, held_consumer_config(settings.tenant, QUEUE, settings))
    try:
        msgs = await consumer.fetch(pull, len(tasks), WAIT_S)
        assert len(msgs) == len(tasks)
        band = sj.dispatch_band((msgs[0].headers or {})[sj.DISPATCH_SUBJECT])
        assert band is not None
        for msg, (subject, held_from) in zip(
            msgs, [(sj.held_work_subject(settings.tenant, QUEUE), legacy), (legacy, None)], strict=True
        ):
            headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
            headers.pop(sj.HELD_FROM)
            if held_from is not None:
                headers[sj.HELD_FROM] = held_from
            await js.publish(subject, msg.data, headers=headers)
            await consumer.ack(msg)
    finally:
        await consumer.close(pull)
    await queues.execute(settings.tenant, ResumeQueue(queue=QUEUE))
    async with _running(nc, handler, settings):
        await _succeeded(handler, settings, [c.task_id for c in tasks])
    moved, _ = await handler.store.load_raw(sj.copy_work_subject(settings.tenant, QUEUE, band))
    assert len(moved) == 1, "the ticket held for the old subject went back to its band's copies"


async def _true(value: bool) -> bool:
    return value
