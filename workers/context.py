"""What a handler sees of its task: identity, payload, deadline, and the ways to report back."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class AttemptReporter(Protocol):
    """The executor's side of heartbeat and progress (fenced: a zombie attempt reports nothing)."""

    async def heartbeat(self) -> None: ...

    async def progress(self, pct: float | None, note: str) -> None: ...


@dataclass(frozen=True, eq=False)
class TaskContext:
    """One attempt of one task, as handed to its handler.

    `deadline` is when the handler times out (the task's timeout, independent of the lease).
    `cancelled` is set when someone asked to cancel the task: stop soon, by returning or raising
    `asyncio.CancelledError`; after the cancel grace period the handler is cancelled.
    """

    task_id: str
    tenant: str
    queue: str
    task_type: str
    attempt: int
    deadline: datetime
    payload: Any
    logger: logging.LoggerAdapter[logging.Logger]
    cancelled: asyncio.Event
    _reporter: AttemptReporter = field(repr=False)

    async def heartbeat(self) -> None:
        """Say the attempt is alive; extends the lease now if the last extension is a period old.

        The runtime extends the lease on its own while the handler runs; a heartbeat is for long
        synchronous-looking stretches where the handler wants to prove liveness explicitly.
        """
        await self._reporter.heartbeat()

    async def progress(self, pct: float | None, note: str = "") -> None:
        """Record a `progressed` event (pct in 0..100, or None for a note only)."""
        if pct is not None and not 0.0 <= pct <= 100.0:
            raise ValueError("progress pct must be within 0..100")
        await self._reporter.progress(pct, note)

    @property
    def is_cancelled(self) -> bool:
        return self.cancelled.is_set()
