"""The projections the runner applies, in order. Add a projection here (one module each)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from infra.event_store import StoredEvent
from projections import task_events, tasks

ApplyFn = Callable[[asyncpg.Connection, list[StoredEvent]], Awaitable[None]]


@dataclass(frozen=True)
class Projection:
    """A read model: its name (also its checkpoint's), its tables' DDL, and how to apply events."""

    name: str
    ddl: str
    apply: ApplyFn


PROJECTIONS: tuple[Projection, ...] = (
    Projection(tasks.NAME, tasks.DDL, tasks.apply),
    Projection(task_events.NAME, task_events.DDL, task_events.apply),
)
