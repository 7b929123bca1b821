"""What the projection runner reads and applies: event families and projections, in order.

A family is one kind of aggregate in the event log (tasks; later schedules, queues), with its subject
filter and decoder. A projection applies the records of one family. Add yours here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from infra import subjects as sj
from infra.event_store import to_stored
from projections import task_events, tasks

# (subject, data, headers, stream sequence, stored_at) -> a record with at least `.seq`.
Decoder = Callable[[str, bytes, dict[str, str], int, datetime], Any]
ApplyFn = Callable[[asyncpg.Connection, list[Any]], Awaitable[None]]


@dataclass(frozen=True)
class Family:
    name: str
    filter: str
    decode: Decoder

    def matches(self, subject: str) -> bool:
        return subject.startswith(self.filter.removesuffix(">"))


@dataclass(frozen=True)
class Projection:
    """A read model: its name (also its checkpoint's), its tables' DDL, the family it reads."""

    name: str
    ddl: str
    apply: ApplyFn
    family: str = "task"


FAMILIES: tuple[Family, ...] = (Family("task", sj.all_events_filter(), to_stored),)

PROJECTIONS: tuple[Projection, ...] = (
    Projection(tasks.NAME, tasks.DDL, tasks.apply),
    Projection(task_events.NAME, task_events.DDL, task_events.apply),
)
