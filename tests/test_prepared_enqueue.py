"""A due timer's enqueue decided and encoded while the timer is held (CommandHandler.prepare): at the
due time it is one publish; a task that changed meanwhile is decided again on its log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ordo.domain import events as ev
from ordo.domain.commands import CancelTask, EnqueueDue, SubmitTask
from ordo.domain.state import TaskState
from ordo.domain.status import TaskStatus
from ordo.infra.command_handler import CommandHandler
from ordo.infra.ids import new_task_id

TENANT = "t-prep"


async def _read_ahead(handler: CommandHandler) -> tuple[EnqueueDue, tuple[TaskState, int]]:
    """A task scheduled an hour ahead, its due timer's command, and the task as read ahead."""
    now = datetime.now(UTC)
    due = now + timedelta(hours=1)
    task_id = new_task_id()
    cmd = SubmitTask(task_id=task_id, tenant=TENANT, queue="default", task_type="x", now=now, run_at=due)
    await handler.execute(TENANT, cmd)
    state, _, last_seq = await handler.load(TENANT, task_id)
    return EnqueueDue(task_id=task_id, due_at=due), (state, last_seq)


async def test_a_prepared_enqueue_is_the_append_decided_ahead(handler: CommandHandler) -> None:
    command, known = await _read_ahead(handler)
    prepared = handler.prepare(TENANT, command, known)
    assert prepared is not None and [type(e) for e in prepared.events] == [ev.Queued]

    out = await handler.execute(TENANT, command, known=known, prepared=prepared)

    assert out.state.status is TaskStatus.QUEUED and len(out.seqs) == 1
    history, last = await handler.store.load(TENANT, command.task_id)
    assert sum(isinstance(e.event, ev.Queued) for e in history) == 1
    assert isinstance(history[-1].event, ev.Queued) and history[-1].seq == out.seqs[0] == last


async def test_a_task_cancelled_after_its_enqueue_was_prepared_is_not_enqueued(
    handler: CommandHandler,
) -> None:
    command, known = await _read_ahead(handler)
    prepared = handler.prepare(TENANT, command, known)
    assert prepared is not None

    await handler.execute(TENANT, CancelTask(task_id=command.task_id, reason="changed my mind"))
    out = await handler.execute(TENANT, command, known=known, prepared=prepared)

    assert out.events == [] and out.state.status is TaskStatus.CANCELLED
    history, _ = await handler.store.load(TENANT, command.task_id)
    assert not any(isinstance(e.event, ev.Queued) for e in history)


async def test_nothing_is_prepared_for_a_command_that_would_be_refused_or_do_nothing(
    handler: CommandHandler,
) -> None:
    command, known = await _read_ahead(handler)
    # Another due time than the task's: the decider ignores it.
    other = EnqueueDue(task_id=command.task_id, due_at=command.due_at + timedelta(1))
    assert handler.prepare(TENANT, other, known) is None
