"""Schedule commands. Times (`now`) and new task ids are set at the edge; the decider stays pure."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ordo.domain.schedule_events import ScheduleSpec


class ScheduleCommand(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every schedule command."""

    schedule_id: str


class CreateSchedule(ScheduleCommand, frozen=True, kw_only=True):
    tenant: str
    spec: ScheduleSpec
    now: datetime


class UpdateSchedule(ScheduleCommand, frozen=True, kw_only=True):
    spec: ScheduleSpec
    now: datetime


class PauseSchedule(ScheduleCommand, frozen=True, kw_only=True):
    reason: str = ""


class ResumeSchedule(ScheduleCommand, frozen=True, kw_only=True):
    now: datetime


class DeleteSchedule(ScheduleCommand, frozen=True, kw_only=True):
    pass


class TriggerSchedule(ScheduleCommand, frozen=True, kw_only=True):
    """Run the schedule's task now, outside its cron (the task id is chosen at the edge)."""

    now: datetime
    task_id: str


class PreviousRun(msgspec.Struct, frozen=True, kw_only=True):
    """The task of the schedule's latest run, as read from the event log by the handler."""

    task_id: str
    active: bool  # not yet succeeded, failed or cancelled


class Tick(ScheduleCommand, frozen=True, kw_only=True):
    """The schedule's durable timer fired for nominal time `tick_at`; it is now `now`."""

    tenant: str
    tick_at: datetime
    now: datetime
    previous: PreviousRun | None = None


AnyScheduleCommand = (
    CreateSchedule | UpdateSchedule | PauseSchedule | ResumeSchedule | DeleteSchedule | TriggerSchedule | Tick
)
