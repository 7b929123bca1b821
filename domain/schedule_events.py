"""Schedule events: the audited record of every schedule decision (the wire contract).

Stored on `ordo.sched.<tenant>.<schedule_id>.<event>` in the event log. Same schema rules as task
events: a new field gets a default, nothing is retyped or renamed. Every event that moves the
schedule's next fire time carries `next_at` (None: nothing left to fire), so `evolve` never runs the
cron library and a replay gives the same state whatever the time-zone database says later.
"""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec

from ordo.domain.codec import Codec


class OverlapPolicy(enum.StrEnum):
    """What a tick does while the task of the previous tick has not finished."""

    SKIP = "skip"  # record `skipped` (with the running task id); start nothing
    ALLOW = "allow"  # start the new task anyway: runs may overlap
    BUFFER_ONE = "buffer_one"  # record `buffered`; start it when the running one ends; more: skipped
    CANCEL_PREVIOUS = "cancel_previous"  # cancel the running task, start the new one


class CatchupPolicy(enum.StrEnum):
    """What happens to ticks missed while no scheduler ran (downtime)."""

    SKIP = "skip"  # record one `missed` event; start nothing for them
    RUN_ONCE = "run_once"  # one `caught_up` task for the latest missed tick; the rest `missed`
    RUN_ALL = "run_all"  # a `caught_up` task per missed tick within the window; older ones `missed`


class TaskTemplate(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """The task each tick submits."""

    type: str
    payload: msgspec.Raw = msgspec.Raw(b"null")
    queue: str = "default"
    priority: int = 5
    max_attempts: int | None = None
    timeout: float | None = None
    tags: tuple[str, ...] = ()


class ScheduleSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a schedule is. `cron` is stored normalised (6 fields, second first)."""

    cron: str
    timezone: str
    task: TaskTemplate
    start_at: datetime | None = None
    end_at: datetime | None = None
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    catchup: CatchupPolicy = CatchupPolicy.SKIP
    # run_all: missed ticks older than this are not run; grace: a tick processed later than this
    # after its time, or superseded by a later due tick, counts as missed.
    catchup_window_s: float = 3600.0
    misfire_grace_s: float = 60.0
    description: str = ""


class ScheduleEvent(msgspec.Struct, frozen=True, tag_field="event", omit_defaults=False):
    """Base of every schedule event; the tag is the snake_case event name."""


class ScheduleCreated(ScheduleEvent, frozen=True, tag="created"):
    spec: ScheduleSpec
    next_at: datetime | None


class ScheduleUpdated(ScheduleEvent, frozen=True, tag="updated"):
    spec: ScheduleSpec
    next_at: datetime | None


class SchedulePaused(ScheduleEvent, frozen=True, tag="paused"):
    reason: str = ""


class ScheduleResumed(ScheduleEvent, frozen=True, tag="resumed"):
    next_at: datetime | None


class ScheduleDeleted(ScheduleEvent, frozen=True, tag="deleted"):
    pass


class ScheduleFired(ScheduleEvent, frozen=True, tag="fired"):
    tick_at: datetime
    task_id: str
    next_at: datetime | None
    cancelled_task_id: str | None = None
    buffered: bool = False


class ScheduleSkipped(ScheduleEvent, frozen=True, tag="skipped"):
    tick_at: datetime
    running_task_id: str
    next_at: datetime | None
    reason: str = "overlap"


class ScheduleBuffered(ScheduleEvent, frozen=True, tag="buffered"):
    tick_at: datetime
    running_task_id: str
    next_at: datetime | None


class ScheduleMissed(ScheduleEvent, frozen=True, tag="missed"):
    count: int
    first_at: datetime
    last_at: datetime
    next_at: datetime | None
    truncated: bool = False


class ScheduleCaughtUp(ScheduleEvent, frozen=True, tag="caught_up"):
    tick_at: datetime
    task_id: str
    next_at: datetime | None
    missed: int = 1


class ScheduleTriggered(ScheduleEvent, frozen=True, tag="triggered"):
    at: datetime
    task_id: str


AnyScheduleEvent = (
    ScheduleCreated
    | ScheduleUpdated
    | SchedulePaused
    | ScheduleResumed
    | ScheduleDeleted
    | ScheduleFired
    | ScheduleSkipped
    | ScheduleBuffered
    | ScheduleMissed
    | ScheduleCaughtUp
    | ScheduleTriggered
)
# Events that end a tick's processing and move `next_at`.
TICK_EVENTS = (ScheduleFired, ScheduleSkipped, ScheduleBuffered, ScheduleMissed, ScheduleCaughtUp)

_codec: Codec[AnyScheduleEvent] = Codec(AnyScheduleEvent)


def schedule_event_name(event: ScheduleEvent) -> str:
    return _codec.name(event)


def encode_schedule_event(event: ScheduleEvent) -> bytes:
    return _codec.encode(event)


def decode_schedule_event(data: bytes) -> AnyScheduleEvent:
    return _codec.decode(data)
