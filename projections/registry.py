"""What the projection runner reads and applies: event families and projections, in order.

A family is one kind of aggregate in the event log (tasks; later schedules, queues), with its subject
filter and decoder. A projection applies the records of one family. Add yours here.

Rules every projection keeps (so `ordo rebuild` can replay it into a shadow schema): its DDL and SQL
name tables without a schema (the connection's search_path picks live or shadow), its apply writes
only its own tables and reads only those and the tables of the projections it `needs` (rebuilt with
it, and listed before it here: a batch is applied in this order), and nothing in it reads the clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ordo.infra import subjects as sj
from ordo.infra.event_store import to_stored
from ordo.projections import (
    attempts,
    queues_state,
    rollups,
    schedules,
    task_events,
    tasks,
)
from ordo.projections.batch_statement import Write
from ordo.projections.memory import Memory

# (subject, data, headers, stream sequence, stored_at) -> a record with at least `.seq`.
Decoder = Callable[[str, bytes, dict[str, str], int, datetime], Any]
ApplyFn = Callable[[asyncpg.Connection, list[Any]], Awaitable[None]]
# A batch's writes, planned with the per-key memory the elected runner keeps between batches
# (projections/memory.py), for the runner to join into one statement (projections/batch_statement.py).
PlanFn = Callable[[asyncpg.Connection, list[Any], Memory | None], Awaitable[Write | None]]


@dataclass(frozen=True)
class Family:
    name: str
    filter: str
    decode: Decoder

    def matches(self, subject: str) -> bool:
        return subject.startswith(self.filter.removesuffix(">"))


@dataclass(frozen=True)
class Projection:
    """A read model: its name (also its checkpoint's), its tables' DDL, the family it reads.

    `plan`, when given, does what `apply` does as a `Write` joined into the batch's one statement, and
    takes its per-key states from a `Memory` and leaves them there; `apply` alone reads them from the
    tables and runs its own statement (the bisection of a failing batch, tests). `needs` names the
    projections whose tables it reads: they hold at least what it applied (see projections/rollups.py)."""

    name: str
    ddl: str
    apply: ApplyFn
    family: str = "task"
    plan: PlanFn | None = None
    needs: tuple[str, ...] = ()


FAMILIES: tuple[Family, ...] = (
    Family("task", sj.all_events_filter(), to_stored),
    Family("schedule", sj.all_schedule_events_filter(), schedules.decode),
    Family("queue", sj.all_queue_events_filter(), queues_state.decode),
)

PROJECTIONS: tuple[Projection, ...] = (
    Projection(tasks.NAME, tasks.DDL, tasks.apply, plan=tasks.plan),
    Projection(task_events.NAME, task_events.DDL, task_events.apply, plan=task_events.plan),
    Projection(attempts.NAME, attempts.DDL, attempts.apply, plan=attempts.plan),
    Projection(rollups.NAME, rollups.DDL, rollups.apply, plan=rollups.plan, needs=rollups.NEEDS),
    Projection(schedules.NAME, schedules.DDL, schedules.apply, family="schedule"),
    Projection(queues_state.NAME, queues_state.DDL, queues_state.apply, family="queue"),
)
