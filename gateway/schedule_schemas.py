"""Schedule request bodies, validated by msgspec (unknown fields, wrong types, naive times: rejected).

As for tasks (gateway/json_bounds.py): the template's payload must decode and nest at most 64 deep
(a `\u0000` escape in it is kept); no other string (description, cron, tags...) may hold NUL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec

from ordo.domain.priority import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY
from ordo.domain.schedule_events import CatchupPolicy, OverlapPolicy, ScheduleSpec, TaskTemplate
from ordo.gateway.json_bounds import (
    MAX_DEPTH,
    UnsafeJson,
    check_instants,
    check_text,
    decoded,
    why_undecodable,
)
from ordo.gateway.schemas import Name, TaskType

Priority = Annotated[int, msgspec.Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Cron = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Zone = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=366 * 86400)]


class TaskTemplateBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    type: TaskType
    payload: msgspec.Raw = msgspec.Raw(b"null")
    queue: Name = "default"
    priority: Priority = DEFAULT_PRIORITY
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)] | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=19)] = []

    def template(self) -> TaskTemplate:
        return TaskTemplate(
            type=self.type,
            payload=self.payload,
            queue=self.queue,
            priority=self.priority,
            max_attempts=self.max_attempts,
            timeout=self.timeout,
            tags=tuple(self.tags),
        )


class CreateScheduleBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    cron: Cron
    task: TaskTemplateBody
    id: Name | None = None
    timezone: Zone = "UTC"
    start_at: AwareDatetime | None = None
    end_at: AwareDatetime | None = None
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    catchup: CatchupPolicy = CatchupPolicy.SKIP
    catchup_window_s: Seconds = 3600.0
    misfire_grace_s: Seconds = 60.0
    description: Annotated[str, msgspec.Meta(max_length=500)] = ""

    def __post_init__(self) -> None:
        check_instants(start_at=self.start_at, end_at=self.end_at)

    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(
            cron=self.cron,
            timezone=self.timezone,
            task=self.task.template(),
            start_at=self.start_at,
            end_at=self.end_at,
            overlap=self.overlap,
            catchup=self.catchup,
            catchup_window_s=self.catchup_window_s,
            misfire_grace_s=self.misfire_grace_s,
            description=self.description,
        )


class UpdateScheduleBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A partial update: the fields given replace the schedule's; `null` clears start/end."""

    cron: Cron | msgspec.UnsetType = msgspec.UNSET
    task: TaskTemplateBody | msgspec.UnsetType = msgspec.UNSET
    timezone: Zone | msgspec.UnsetType = msgspec.UNSET
    start_at: AwareDatetime | None | msgspec.UnsetType = msgspec.UNSET
    end_at: AwareDatetime | None | msgspec.UnsetType = msgspec.UNSET
    overlap: OverlapPolicy | msgspec.UnsetType = msgspec.UNSET
    catchup: CatchupPolicy | msgspec.UnsetType = msgspec.UNSET
    catchup_window_s: Seconds | msgspec.UnsetType = msgspec.UNSET
    misfire_grace_s: Seconds | msgspec.UnsetType = msgspec.UNSET
    description: Annotated[str, msgspec.Meta(max_length=500)] | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if all(getattr(self, f) is msgspec.UNSET for f in self.__struct_fields__):
            raise ValueError("give at least one field to change")  # as a task's update
        check_instants(start_at=self.start_at, end_at=self.end_at)

    def merged(self, spec: ScheduleSpec) -> ScheduleSpec:
        changes: dict[str, Any] = {}
        for field in self.__struct_fields__:
            value = getattr(self, field)
            if value is msgspec.UNSET:
                continue
            changes[field] = value.template() if isinstance(value, TaskTemplateBody) else value
        return msgspec.structs.replace(spec, **changes)


class InvalidBody(ValueError):
    """Not JSON, or not matching the schema."""


T = TypeVar("T")


def decode_body(body: bytes, kind: type[T]) -> T:
    try:
        value = msgspec.json.decode(body, type=kind)
        check_text(value)
        task = getattr(value, "task", None)
        if isinstance(task, TaskTemplateBody):
            decoded(task.payload, "task.payload")
    except msgspec.ValidationError as exc:
        raise InvalidBody(str(exc)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidBody(why_undecodable(body, exc)) from exc
    except RecursionError as exc:
        raise InvalidBody(f"JSON nests deeper than {MAX_DEPTH} levels") from exc
    except UnsafeJson as exc:
        raise InvalidBody(str(exc)) from exc
    return value
