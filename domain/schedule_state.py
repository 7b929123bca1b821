"""A schedule's state, folded from its events by `evolve` (total: unknown combinations are kept)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ordo.domain import schedule_events as se


class ScheduleState(msgspec.Struct, frozen=True, kw_only=True):
    """The decider's view of one schedule. `exists` is False before `created` and after `deleted`."""

    schedule_id: str
    exists: bool = False
    deleted: bool = False
    paused: bool = False
    # The reason the latest pause gave ('' when none was given, or when the schedule is not paused).
    paused_reason: str = ""
    spec: se.ScheduleSpec | None = None
    # The armed tick (the one the durable timer fires for); None when nothing is left to fire.
    next_at: datetime | None = None
    # The latest tick handled (fired, skipped, buffered, missed or caught up).
    last_tick_at: datetime | None = None
    # The task of the latest run (fired, caught_up, triggered): the overlap check loads it.
    last_task_id: str | None = None
    # buffer_one: the tick waiting for the running task to end.
    buffered_at: datetime | None = None
    fired: int = 0
    skipped: int = 0
    missed: int = 0
    version: int = 0

    @property
    def active(self) -> bool:
        return self.exists and not self.paused

    @property
    def status(self) -> str:
        """`deleted`, `paused`, `ended` (active, but nothing is left to fire: past its `end_at`) or
        `active`."""
        if self.deleted:
            return "deleted"
        if self.paused:
            return "paused"
        return "ended" if self.next_at is None and self.buffered_at is None else "active"


def initial(schedule_id: str) -> ScheduleState:
    return ScheduleState(schedule_id=schedule_id)


def evolve(state: ScheduleState, event: se.ScheduleEvent) -> ScheduleState:  # noqa: C901 - flat match
    s = msgspec.structs.replace(state, version=state.version + 1)
    r = msgspec.structs.replace
    match event:
        case se.ScheduleCreated():
            return r(s, exists=True, deleted=False, spec=event.spec, next_at=event.next_at)
        case se.ScheduleUpdated():
            return r(s, spec=event.spec, next_at=event.next_at, buffered_at=None)
        case se.SchedulePaused():
            return r(s, paused=True, paused_reason=event.reason, next_at=None, buffered_at=None)
        case se.ScheduleResumed():
            return r(s, paused=False, paused_reason="", next_at=event.next_at)
        case se.ScheduleDeleted():
            return r(s, exists=False, deleted=True, next_at=None, buffered_at=None)
        case se.ScheduleFired():
            buffered = None if event.buffered or s.buffered_at == event.tick_at else s.buffered_at
            return r(
                s,
                next_at=event.next_at,
                last_tick_at=_latest(s.last_tick_at, event.tick_at),
                last_task_id=event.task_id,
                buffered_at=buffered,
                fired=s.fired + 1,
            )
        case se.ScheduleSkipped():
            buffered = None if s.buffered_at == event.tick_at else s.buffered_at
            return r(
                s,
                next_at=event.next_at,
                last_tick_at=_latest(s.last_tick_at, event.tick_at),
                buffered_at=buffered,
                skipped=s.skipped + 1,
            )
        case se.ScheduleBuffered():
            return r(
                s,
                next_at=event.next_at,
                last_tick_at=_latest(s.last_tick_at, event.tick_at),
                buffered_at=event.tick_at,
            )
        case se.ScheduleMissed():
            return r(
                s,
                next_at=event.next_at,
                last_tick_at=_latest(s.last_tick_at, event.last_at),
                missed=s.missed + event.count,
            )
        case se.ScheduleCaughtUp():
            return r(
                s,
                next_at=event.next_at,
                last_tick_at=_latest(s.last_tick_at, event.tick_at),
                last_task_id=event.task_id,
                fired=s.fired + 1,
            )
        case se.ScheduleTriggered():
            return r(s, last_task_id=event.task_id)
    return s


def _latest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a
