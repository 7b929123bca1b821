"""The one command handler: load -> fold -> decide -> append with the expected sequence.

The gateway, the NATS command API, the workers and the scheduler all change tasks through it; nothing
else appends task events. A dispatch ticket is written in the same atomic batch as the event that made
the task runnable; a durable timer is armed before the event that needs it (a stale timer is harmless).
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.commands import SubmitTask, TaskCommand
from domain.decide import decide
from domain.events import Event
from domain.state import TaskState, evolve, initial
from domain.status import TaskStatus
from infra.event_store import ConcurrencyError, EventStore, Metadata, StoredEvent, Ticket
from infra.timers import Timers


@dataclass(frozen=True)
class Outcome:
    """What a command did: the state after it, the events it appended and their sequences."""

    state: TaskState
    events: list[Event]
    seqs: list[int]
    last_seq: int


class CommandHandler:
    def __init__(self, store: EventStore, timers: Timers, max_retries: int = 8) -> None:
        self.store = store
        self.timers = timers
        self._max_retries = max_retries

    async def load(self, tenant: str, task_id: str) -> tuple[TaskState, list[StoredEvent], int]:
        history, last_seq = await self.store.load(tenant, task_id)
        state = initial(task_id)
        for stored in history:
            state = evolve(state, stored.event)
        return state, history, last_seq

    async def execute(self, tenant: str, command: TaskCommand, meta: Metadata | None = None) -> Outcome:
        """Run one command; on a concurrent append, reload and decide again (bounded)."""
        for _ in range(self._max_retries):
            if isinstance(command, SubmitTask):
                # The first try assumes a new task: no round trip for the common case.
                state, last_seq = initial(command.task_id), 0
            else:
                state, _, last_seq = await self.load(tenant, command.task_id)
            try:
                return await self._apply(tenant, command, state, last_seq, meta)
            except ConcurrencyError:
                if isinstance(command, SubmitTask):
                    state, _, last_seq = await self.load(tenant, command.task_id)
                    try:
                        return await self._apply(tenant, command, state, last_seq, meta)
                    except ConcurrencyError:
                        continue
                continue
        raise ConcurrencyError(f"task {command.task_id}: too many concurrent changes")

    async def _apply(
        self,
        tenant: str,
        command: TaskCommand,
        state: TaskState,
        last_seq: int,
        meta: Metadata | None,
    ) -> Outcome:
        events = decide(command, state)
        if not events:
            return Outcome(state, [], [], last_seq)
        new = state
        for event in events:
            new = evolve(new, event)
        waits = new.status in (TaskStatus.SCHEDULED, TaskStatus.RETRYING)
        # (Re-)arm when the due time changes or the task comes back to waiting (resume): a timer
        # that fired while the task was paused was ignored.
        rearm = new.due_at != state.due_at or new.status is not state.status
        if waits and new.due_at is not None and rearm:
            await self.timers.arm(tenant, new.task_id, new.due_at)
        ticket = None
        if new.status is TaskStatus.QUEUED and new.dispatch != state.dispatch:
            ticket = Ticket(
                tenant=tenant,
                queue=new.queue,
                task_id=new.task_id,
                dispatch=new.dispatch,
                priority=new.priority,
            )
        seqs = await self.store.append(
            tenant, new.queue, new.task_id, events, last_seq, ticket=ticket, meta=meta
        )
        if state.due_at is not None and new.due_at is None:
            await self.timers.disarm(tenant, new.task_id)
        return Outcome(new, events, seqs, seqs[-1])
