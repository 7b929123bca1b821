"""The schedule decider: `decide(command, state) -> events`, pure (time arrives in commands).

A tick is handled once: a tick whose time is not the schedule's armed `next_at` (nor its buffered
tick) is stale or a duplicate and decides nothing. A tick's task id is derived from (tenant,
schedule id, nominal tick time), so two schedulers that race on one tick submit the same task, and
the optimistic-concurrency check on the schedule lets only one `fired` land.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec

from ordo.domain import schedule_commands as sc
from ordo.domain import schedule_events as se
from ordo.domain.errors import DomainError
from ordo.domain.schedule_cron import InvalidCron, next_after, normalize, ticks_between, zone
from ordo.domain.schedule_state import ScheduleState

_NAMESPACE = uuid.UUID("6f72646f-0000-4000-8000-00000000005c")
# Bounds on one tick's work after a long downtime: ticks counted, and tasks run by run_all.
MAX_COUNTED = 100_000
MAX_RUN_ALL = 100


class ScheduleError(DomainError):
    code = "schedule-error"


class InvalidSchedule(ScheduleError):
    """The schedule's definition is invalid (HTTP 422)."""

    code = "invalid-schedule"


class ScheduleNotFound(ScheduleError):
    code = "schedule-not-found"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id} does not exist")
        self.schedule_id = schedule_id


class ScheduleExists(ScheduleError):
    code = "schedule-exists"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id} already exists (ids are never reused)")
        self.schedule_id = schedule_id


def tick_task_id(tenant: str, schedule_id: str, tick_at: datetime) -> str:
    """The task id of a schedule's run at nominal time `tick_at` (same inputs, same id)."""
    return uuid.uuid5(_NAMESPACE, f"{tenant}\x00{schedule_id}\x00{tick_at.isoformat()}").hex


def validate_spec(spec: se.ScheduleSpec) -> se.ScheduleSpec:
    """The spec with its cron normalised, or InvalidSchedule naming the problem."""
    try:
        cron = normalize(spec.cron)
        zone(spec.timezone)
    except InvalidCron as exc:
        raise InvalidSchedule(str(exc)) from exc
    for name, value in (("start_at", spec.start_at), ("end_at", spec.end_at)):
        if value is not None and value.tzinfo is None:
            raise InvalidSchedule(f"{name} needs a UTC offset")
    if spec.start_at is not None and spec.end_at is not None and spec.end_at <= spec.start_at:
        raise InvalidSchedule("end_at must be after start_at")
    if spec.catchup_window_s <= 0 or spec.misfire_grace_s <= 0:
        raise InvalidSchedule("catchup_window_s and misfire_grace_s must be > 0")
    return msgspec.structs.replace(spec, cron=cron)


# The earliest instant a datetime holds (nothing fires before it).
_FIRST_INSTANT = datetime.min.replace(tzinfo=UTC)


def next_fire(spec: se.ScheduleSpec, after: datetime) -> datetime | None:
    """The schedule's first fire time strictly after `after`, within start/end."""
    base = after
    if spec.start_at is not None and base < spec.start_at:
        base = spec.start_at - timedelta(microseconds=1) if spec.start_at > _FIRST_INSTANT else spec.start_at
    t = next_after(spec.cron, zone(spec.timezone), base)
    if t is None or (spec.end_at is not None and t > spec.end_at):
        return None
    return t


def upcoming(spec: se.ScheduleSpec, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times after `after` (for display)."""
    out: list[datetime] = []
    t: datetime | None = after
    while len(out) < count and t is not None:
        t = next_fire(spec, t)
        if t is not None:
            out.append(t)
    return out


def decide(command: sc.AnyScheduleCommand, state: ScheduleState) -> list[se.ScheduleEvent]:
    match command:
        case sc.CreateSchedule():
            if state.exists or state.deleted:
                raise ScheduleExists(command.schedule_id)
            spec = validate_spec(command.spec)
            first = next_fire(spec, command.now)
            if first is None:
                raise InvalidSchedule("the schedule never fires (past its end, or an impossible date)")
            return [se.ScheduleCreated(spec=spec, next_at=first)]
        case sc.UpdateSchedule():
            before = _must_exist(command.schedule_id, state)
            spec = validate_spec(command.spec)
            first = next_fire(spec, command.now)
            # As at its creation, a change that leaves a schedule unable to fire is refused; a schedule
            # already past its end may still be edited (its description, say).
            if first is None and next_fire(before, command.now) is not None:
                raise InvalidSchedule("the schedule would never fire (past its end, or an impossible date)")
            updated = se.ScheduleUpdated(spec=spec, next_at=None if state.paused else first)
            return [*_drop_buffered(state, "updated"), updated]
        case sc.PauseSchedule():
            _must_exist(command.schedule_id, state)
            if state.paused:
                return []
            return [*_drop_buffered(state, "paused"), se.SchedulePaused(reason=command.reason)]
        case sc.ResumeSchedule():
            spec = _must_exist(command.schedule_id, state)
            return [se.ScheduleResumed(next_at=next_fire(spec, command.now))] if state.paused else []
        case sc.DeleteSchedule():
            if state.deleted:
                return []
            _must_exist(command.schedule_id, state)
            return [*_drop_buffered(state, "deleted"), se.ScheduleDeleted()]
        case sc.TriggerSchedule():
            _must_exist(command.schedule_id, state)
            return [se.ScheduleTriggered(at=command.now, task_id=command.task_id)]
        case sc.Tick():
            return _tick(command, state)
    raise AssertionError(f"unknown command {command!r}")


def _drop_buffered(state: ScheduleState, reason: str) -> list[se.ScheduleEvent]:
    """A tick buffered behind a running task that a pause, an edit or a delete drops: recorded as
    skipped with that reason, so no tick goes without an outcome (it vanished before)."""
    if state.buffered_at is None:
        return []
    running = state.last_task_id or ""
    return [
        se.ScheduleSkipped(
            tick_at=state.buffered_at, running_task_id=running, next_at=state.next_at, reason=reason
        )
    ]


def _must_exist(schedule_id: str, state: ScheduleState) -> se.ScheduleSpec:
    if not state.exists or state.spec is None:
        raise ScheduleNotFound(schedule_id)
    return state.spec


def _tick(c: sc.Tick, s: ScheduleState) -> list[se.ScheduleEvent]:
    if not s.active or s.spec is None:
        return []
    spec = s.spec
    prev_active = c.previous is not None and c.previous.active
    if s.buffered_at is not None and c.tick_at == s.buffered_at:
        # A buffered tick coming back: start it once the running task has ended.
        if prev_active:
            return []
        task_id = tick_task_id(c.tenant, c.schedule_id, c.tick_at)
        return [se.ScheduleFired(tick_at=c.tick_at, task_id=task_id, next_at=s.next_at, buffered=True)]
    if c.tick_at != s.next_at:
        return []  # stale (re-armed since) or a duplicate delivery
    until = c.now if spec.end_at is None else min(c.now, spec.end_at)
    later = ticks_between(spec.cron, zone(spec.timezone), c.tick_at, until, MAX_COUNTED)
    due = [c.tick_at, *later]
    nxt = next_fire(spec, max(due[-1], c.now))
    truncated = len(later) >= MAX_COUNTED
    # The latest due tick is on time if it is within the grace; every earlier one was superseded.
    on_time = due[-1] if (c.now - due[-1]).total_seconds() <= spec.misfire_grace_s else None
    missed = due[:-1] if on_time is not None else due
    runs: list[tuple[datetime, bool]] = []  # (tick, is catch-up)
    events: list[se.ScheduleEvent] = []
    if missed:
        run: list[datetime] = []
        if spec.catchup is se.CatchupPolicy.RUN_ONCE:
            run = missed[-1:]
        elif spec.catchup is se.CatchupPolicy.RUN_ALL:
            window = timedelta(seconds=spec.catchup_window_s)
            run = [t for t in missed if c.now - t <= window][-MAX_RUN_ALL:]
        not_run = [t for t in missed if t not in run]
        if not_run:
            events.append(
                se.ScheduleMissed(
                    count=len(not_run),
                    first_at=not_run[0],
                    last_at=not_run[-1],
                    next_at=nxt,
                    truncated=truncated,
                )
            )
        runs += [(t, True) for t in run]
    if on_time is not None:
        runs.append((on_time, False))
    active = c.previous.task_id if c.previous is not None and prev_active else None
    buffered = s.buffered_at
    if buffered is not None and active is None:
        # The running task ended before its buffered tick came back: start the buffered run first.
        active = tick_task_id(c.tenant, c.schedule_id, buffered)
        events.append(se.ScheduleFired(tick_at=buffered, task_id=active, next_at=nxt, buffered=True))
        buffered = None
    # The runs of one decision (a catch-up's and the latest tick's) start together, as the catch-up
    # policy asks: `overlap` weighs them against a run from before (still going, or the buffered one
    # started just now), never against one another.
    for tick, catch_up in runs:
        task_id = tick_task_id(c.tenant, c.schedule_id, tick)
        cancelled: str | None = None
        if active is not None and spec.overlap is not se.OverlapPolicy.ALLOW:
            if spec.overlap is se.OverlapPolicy.SKIP:
                events.append(se.ScheduleSkipped(tick_at=tick, running_task_id=active, next_at=nxt))
                continue
            if spec.overlap is se.OverlapPolicy.BUFFER_ONE:
                if buffered is None and not catch_up:
                    buffered = tick
                    events.append(se.ScheduleBuffered(tick_at=tick, running_task_id=active, next_at=nxt))
                else:
                    events.append(
                        se.ScheduleSkipped(
                            tick_at=tick, running_task_id=active, next_at=nxt, reason="buffer_full"
                        )
                    )
                continue
            # cancel_previous: the latest tick's run cancels it (a caught_up event names no task).
            if not catch_up:
                cancelled, active = active, None
        if catch_up:
            events.append(se.ScheduleCaughtUp(tick_at=tick, task_id=task_id, next_at=nxt, missed=len(missed)))
        else:
            events.append(
                se.ScheduleFired(tick_at=tick, task_id=task_id, next_at=nxt, cancelled_task_id=cancelled)
            )
    return events
