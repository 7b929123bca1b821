"""The timer sweep: a backstop that re-arms the timer of a scheduled task long past its due time.

Timers are armed before the event that needs them, one per due time (infra/timers.py), so a waiting
task has its timer; the sweep covers what lies outside that rule: a task stranded by an older
version (audit F2), fired timers that expired while every scheduler was down for longer than their
TTL, a timer dropped after the scheduler's `unknown_tries`. Candidates come from the read model
(scheduled, `run_at` older than `grace_s`); the decision comes from the log: a task that is still
scheduled with that old due time gets a timer for exactly that due time, which fires at once. A task
that moved on meanwhile gets at worst a stale timer, which the decider ignores. Retrying tasks are
left out: their due time is not in the read model, and no known path strands them.

Schedules likewise: an active schedule whose next tick is long past (its timer lost: expired while
every scheduler was down, or replaced on its subject by a stored message, docs/decisions.md 58)
gets a timer for that tick again, which fires at once and runs the tick's catch-up decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ordo.domain.status import TaskStatus
from ordo.infra.command_handler import CommandHandler
from ordo.infra.pg import Pool, ReadModelUnavailable
from ordo.infra.schedule_handler import ScheduleHandler


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SweepConfig:
    every_s: float = 60.0
    # Far beyond a timer's normal lateness (the lead, the server's 250 ms tick, the scheduler's hold).
    grace_s: float = 60.0
    batch: int = 500

    def __post_init__(self) -> None:
        if self.every_s <= 0 or self.grace_s <= 0 or self.batch < 1:
            raise ValueError("invalid sweep config: every_s > 0, grace_s > 0, batch >= 1")


Overdue = Callable[[Pool, datetime, int], Awaitable[list[tuple[str, str]]]]


class TimerSweep:
    def __init__(
        self,
        pool: Callable[[], Awaitable[Pool]],
        handler: CommandHandler,
        config: SweepConfig | None = None,
        logger: logging.Logger | None = None,
        clock: Callable[[], datetime] = utc_now,
        *,
        overdue: Overdue,
        schedules: ScheduleHandler | None = None,
        overdue_schedules: Overdue | None = None,
    ) -> None:
        """`pool` opens the read model's pool on first use (PostgreSQL may be down at start);
        `overdue(pool, before, limit)` lists (tenant, task id) of scheduled tasks due before then
        (the read model's query, ordo.projections.tasks.scheduled_before, given by the wiring), and
        `overdue_schedules` (tenant, schedule id) of active schedules whose next tick is
        (ordo.projections.schedules.overdue), re-armed through `schedules`."""
        self._overdue = overdue
        self._schedules = schedules
        self._overdue_schedules = overdue_schedules
        self._open_pool = pool
        self._pool: Pool | None = None
        self._handler = handler
        self._config = config or SweepConfig()
        self._log = logger or logging.getLogger("ordo.timer_sweep")
        self._clock = clock
        self._stop = asyncio.Event()

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.sweep_once()
            except ReadModelUnavailable as exc:
                self._log.warning("timer sweep skipped: %s", exc)
            except Exception as exc:  # noqa: BLE001 - e.g. no read model yet on a fresh install: next round
                self._log.warning(
                    "timer sweep failed (%s: %s); next round in %gs",
                    type(exc).__name__,
                    exc,
                    self._config.every_s,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._config.every_s)

    async def shutdown(self) -> None:
        self._stop.set()

    async def sweep_once(self) -> int:
        """Re-arm every overdue scheduled task found in one batch; how many were re-armed."""
        if self._pool is None:
            self._pool = await self._open_pool()
        cutoff = self._clock() - timedelta(seconds=self._config.grace_s)
        rearmed = 0
        for tenant, task_id in await self._overdue(self._pool, cutoff, self._config.batch):
            try:
                state, _, _ = await self._handler.load(tenant, task_id)
                due = state.due_at
                if state.status is not TaskStatus.SCHEDULED or due is None or due >= cutoff:
                    continue  # the read model was behind: the task moved on
                await self._handler.timers.arm(tenant, task_id, due)
            except Exception as exc:  # noqa: BLE001 - a backstop must not stop on one task
                self._log.warning("timer of %s/%s not re-armed (next sweep): %s", tenant, task_id, exc)
                continue
            self._log.warning("task %s/%s was due at %s without a timer: re-armed", tenant, task_id, due)
            rearmed += 1
        return rearmed + await self._sweep_schedules(cutoff)

    async def _sweep_schedules(self, cutoff: datetime) -> int:
        if self._schedules is None or self._overdue_schedules is None or self._pool is None:
            return 0
        rearmed = 0
        for tenant, schedule_id in await self._overdue_schedules(self._pool, cutoff, self._config.batch):
            try:
                state, _, _ = await self._schedules.load(tenant, schedule_id)
                tick = state.next_at
                if not state.active or tick is None or tick >= cutoff:
                    continue  # the read model was behind: the schedule moved on
                await self._schedules.timers.arm(tenant, schedule_id, tick)
            except Exception as exc:  # noqa: BLE001 - a backstop must not stop on one schedule
                self._log.warning(
                    "timer of schedule %s/%s not re-armed (next sweep): %s", tenant, schedule_id, exc
                )
                continue
            self._log.warning(
                "schedule %s/%s was due at %s without a timer: re-armed", tenant, schedule_id, tick
            )
            rearmed += 1
        return rearmed
