"""A due timer's enqueue decided and encoded while the timer is held (CommandHandler.prepare): at the
due time it is one publish; a task that changed meanwhile is decided again on its log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ordo.domain import events as ev
from ordo.domain.commands import CancelTask, EnqueueDue, SubmitTask
from ordo.domain.status import TaskStatus
from ordo.infra.command_handler import CommandHandler
from ordo.infra.ids import new_task_id


async def _scheduled(handler: CommandHandler, tenant: str) -> tuple[str, datetime]:
    now = datetime.now(UTC)
    due = now + timedelta(hours=1)
    task_id = new_task_id()
    cmd = SubmitTask(task_id=task_id, tenant=tenant, queue="default", task_type="x", now=now, run_at=due)
    await handler.execute(tenant, cmd)
    return task_id, due


async def test_a_prepared_enqueue_is_the_append_decided_ahead(handler: CommandHandler) -> None:
    tenant = "t-prep"
    task_id, due = await _scheduled(handler, tenant)
    state, _, last_seq = await handler.load(tenant, task_id)
    command = EnqueueDue(task_id=task_id, due_at=due)
    prepared = handler.prepare(tenant, command, (state, last_seq))
    assert prepared is not None and [type(e) for e in prepared.events] == [ev.Queued]

    out = await handler.execute(tenant, command, known=(state, last_seq), prepared=prepared)

    assert out.state.status is TaskStatus.QUEUED and len(out.seqs) == 1
    history, last = await handler.store.load(tenant, task_id)
    assert sum(isinstance(e.event, ev.Queued) for e in history) == 1
    assert isinstance(history[-1].event, ev.Queued) and history[-1].seq == out.seqs[0] == last


async def test_a_task_cancelled_after_its_enqueue_was_prepared_is_not_enqueued(
    handler: CommandHandler,
) -> None:
    tenant = "t-prep"
    task_id, due = await _scheduled(handler, tenant)
    state, _, last_seq = await handler.load(tenant, task_id)
    command = EnqueueDue(task_id=task_id, due_at=due)
    prepared = handler.prepare(tenant, command, (state, last_seq))
    assert prepared is not None

    await handler.execute(tenant, CancelTask(task_id=task_id, reason="changed my mind"))
    out = await handler.execute(tenant, command, known=(state, last_seq), prepared=prepared)

    assert out.events == [] and out.state.status is TaskStatus.CANCELLED
    history, _ = await handler.store.load(tenant, task_id)
    assert not any(isinstance(e.event, ev.Queued) for e in history)


async def test_nothing_is_prepared_for_a_command_that_would_be_refused_or_do_nothing(
    handler: CommandHandler,
) -> None:
    tenant = "t-prep"
    task_id, due = await _scheduled(handler, tenant)
    state, _, last_seq = await handler.load(tenant, task_id)
    # Another due time than the task's: the decider ignores it.
    assert (
        handler.prepare(tenant, EnqueueDue(task_id=task_id, due_at=due + timedelta(1)), (state, last_seq))
        is None
    )
