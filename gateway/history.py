"""A task as it was at a past log sequence: its events folded by the domain's own `evolve`.

The read model only holds the present; `GET /v1/tasks/{id}?as_of_seq=N` reads the task's events
from the log up to N and folds them, giving the same resource shape the read model serves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from ordo.domain import events as ev
from ordo.domain.state import evolve, initial
from ordo.infra import subjects as sj
from ordo.infra.event_store import EventStore


def _raw(value: msgspec.Raw | None) -> Any:
    return None if value is None else msgspec.json.decode(bytes(value))


async def task_as_of(store: EventStore, tenant: str, task_id: str, seq: int) -> dict[str, Any] | None:
    """The task resource after the last of its events with sequence <= `seq`; None before it existed."""
    history, _ = await store.load_filter(sj.task_events_filter(tenant, task_id), up_to_seq=seq)
    state = initial(task_id)
    created: datetime | None = None
    updated: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    last_seq = 0
    for stored in history:
        event = stored.event
        state = evolve(state, event)
        updated, last_seq = stored.stored_at, stored.seq
        if isinstance(event, ev.Submitted):
            created = stored.stored_at
        elif isinstance(event, ev.AttemptStarted):
            started, finished = stored.stored_at, None
        elif isinstance(event, (ev.Succeeded, ev.Failed, ev.Cancelled)):
            finished = stored.stored_at
        elif isinstance(event, ev.Replayed):
            finished = None
    if not state.exists:
        return None
    return {
        "id": state.task_id,
        "type": state.task_type,
        "queue": state.queue,
        "priority": state.priority,
        "status": str(state.status),
        "attempts": state.attempt,
        "max_attempts": state.max_attempts,
        "timeout": state.timeout_s,
        "payload": _raw(state.payload),
        "result": _raw(state.result),
        "error": None if state.error is None else msgspec.to_builtins(state.error),
        "tags": list(state.tags),
        "run_at": state.run_at,
        "worker_id": state.worker_id,
        "lease_until": state.lease_until,
        "progress": state.progress,
        "archived": state.archived,
        "created_at": created,
        "updated_at": updated,
        "started_at": started,
        "finished_at": finished,
        "last_seq": last_seq,
    }
