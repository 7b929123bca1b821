"""Schedule routes (`/v1/schedules`): thin — parse, build a command, run it through the schedule handler.

Validation happens before anything is appended: a bad body, cron expression, time zone or start/end
is a 422 problem and the log is untouched. Reads come from the `schedules` read model; the next five
fire times are computed here from the stored spec and the current time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from ordo.domain import schedule_commands as sc
from ordo.domain.schedule_decide import (
    InvalidSchedule,
    ScheduleExists,
    ScheduleNotFound,
    upcoming,
    validate_spec,
)
from ordo.domain.schedule_events import ScheduleSpec
from ordo.gateway.auth import Principal, Role, require
from ordo.gateway.body import read_limited
from ordo.gateway.consistency import ReadConsistency
from ordo.gateway.pause_body import pause_reason
from ordo.gateway.problems import Problem
from ordo.gateway.schedule_schemas import CreateScheduleBody, InvalidBody, UpdateScheduleBody, decode_body
from ordo.gateway.services import Services, services, services_of
from ordo.gateway.timeline_pages import TimelinePage
from ordo.infra.ids import new_task_id
from ordo.infra.schedule_handler import ScheduleHandler, ScheduleOutcome
from ordo.projections import schedules

router = APIRouter(prefix="/v1", tags=["schedules"])
Svc = Annotated[Services, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
NEXT_FIRES = 5


async def schedule_handler(request: Request) -> ScheduleHandler:
    """The schedule handler the gateway's lifespan built (gateway/services.py)."""
    return services_of(request).schedules


Handler = Annotated[ScheduleHandler, Depends(schedule_handler)]


def _check_id(schedule_id: str) -> str:
    if not (1 <= len(schedule_id) <= 64) or not all(c.isalnum() or c in "_-" for c in schedule_id):
        raise Problem(404, "schedule-not-found", f"schedule {schedule_id} does not exist")
    return schedule_id


async def _run(handler: ScheduleHandler, who: Principal, command: sc.AnyScheduleCommand) -> ScheduleOutcome:
    try:
        return await handler.execute(who.tenant, command)
    except InvalidSchedule as exc:
        raise Problem(422, "invalid-schedule", str(exc)) from exc
    except ScheduleNotFound as exc:
        raise Problem(404, "schedule-not-found", str(exc)) from exc
    except ScheduleExists as exc:
        raise Problem(409, "schedule-exists", str(exc)) from exc


def _summary(schedule_id: str, outcome: ScheduleOutcome) -> dict[str, Any]:
    s = outcome.state
    return {"id": schedule_id, "status": s.status, "next_fire_at": s.next_at, "seq": outcome.last_seq}


def _validated(spec: ScheduleSpec) -> ScheduleSpec:
    try:
        return validate_spec(spec)
    except InvalidSchedule as exc:
        raise Problem(422, "invalid-schedule", str(exc)) from exc


@router.post("/schedules", status_code=201)
async def create_schedule(request: Request, svc: Svc, handler: Handler, who: Operator) -> JSONResponse:
    """Create a schedule: cron (5 or 6 fields, or an @alias), IANA time zone, task template, policies."""
    body = await read_limited(request, svc.settings.max_body_bytes)
    try:
        req = decode_body(body, CreateScheduleBody)
    except InvalidBody as exc:
        raise Problem(422, "invalid-request", str(exc)) from exc
    if len(req.task.payload) > svc.settings.max_payload_bytes:
        raise Problem(413, "payload-too-large", f"payload exceeds {svc.settings.max_payload_bytes} bytes")
    spec = _validated(req.spec())
    schedule_id = req.id or new_task_id()
    now = datetime.now(UTC)
    outcome = await _run(
        handler, who, sc.CreateSchedule(schedule_id=schedule_id, tenant=who.tenant, spec=spec, now=now)
    )
    return JSONResponse(
        _json(_summary(schedule_id, outcome)),
        status_code=201,
        headers={"Location": f"/v1/schedules/{schedule_id}"},
    )


def _json(value: dict[str, Any]) -> dict[str, Any]:
    """Times as the other schedule answers write them (FastAPI's encoder): UTC with a `Z`."""
    return {k: _utc_text(v) if isinstance(v, datetime) else v for k, v in value.items()}


def _utc_text(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@router.get("/schedules")
async def list_schedules(
    svc: Svc,
    who: Viewer,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    """Schedules, newest first, with an opaque cursor to the next page."""
    try:
        items, next_cursor = await schedules.list_schedules(svc.pool, who.tenant, limit, cursor)
    except ValueError as exc:
        raise Problem(400, "invalid-cursor", str(exc)) from exc
    return {"items": items, "next_cursor": next_cursor}


@router.get("/schedules/{schedule_id}")
async def get_schedule(schedule_id: str, svc: Svc, who: Viewer, rc: ReadConsistency) -> dict[str, Any]:
    """One schedule with its next five fire times (none while paused or deleted). `consistency=wait`
    or `min_seq` (as for a task) waits until the read model holds the write just made."""
    sid = _check_id(schedule_id)
    await rc.ensure(svc, who.tenant, schedule_id=sid)
    row = await schedules.get_schedule(svc.pool, who.tenant, sid)
    if row is None:
        raise Problem(404, "schedule-not-found", f"schedule {schedule_id} does not exist")
    fires: list[datetime] = []
    if row["status"] == "active":
        parsed = msgspec.json.decode(msgspec.json.encode(row["spec"]), type=ScheduleSpec)
        first: datetime | None = row["next_fire_at"]
        if first is not None:
            fires = [first, *upcoming(parsed, max(datetime.now(UTC), first), NEXT_FIRES - 1)]
            fires = sorted(set(fires))[:NEXT_FIRES]
    row["next_fire_times"] = fires
    return row


@router.patch("/schedules/{schedule_id}")
async def update_schedule(
    schedule_id: str, request: Request, svc: Svc, handler: Handler, who: Operator
) -> dict[str, Any]:
    """Change some fields of a schedule; its next fire time is recomputed from now."""
    sid = _check_id(schedule_id)
    body = await read_limited(request, svc.settings.max_body_bytes)
    try:
        req = decode_body(body, UpdateScheduleBody)
    except InvalidBody as exc:
        raise Problem(422, "invalid-request", str(exc)) from exc
    state, _, _ = await handler.load(who.tenant, sid)
    if not state.exists or state.spec is None:
        raise Problem(404, "schedule-not-found", f"schedule {schedule_id} does not exist")
    spec = _validated(req.merged(state.spec))
    outcome = await _run(handler, who, sc.UpdateSchedule(schedule_id=sid, spec=spec, now=datetime.now(UTC)))
    return _summary(sid, outcome)


@router.post("/schedules/{schedule_id}:pause", status_code=202)
async def pause_schedule(
    schedule_id: str, request: Request, handler: Handler, who: Operator
) -> dict[str, Any]:
    """Pause (the timer is disarmed). An optional body `{"reason": "..."}` is kept in the `paused`
    event and shown as the schedule's `paused_reason`; any other body is a 422 and pauses nothing."""
    sid = _check_id(schedule_id)
    reason = await pause_reason(request)
    outcome = await _run(handler, who, sc.PauseSchedule(schedule_id=sid, reason=reason))
    return _summary(sid, outcome)


@router.post("/schedules/{schedule_id}:resume", status_code=202)
async def resume_schedule(schedule_id: str, handler: Handler, who: Operator) -> dict[str, Any]:
    """Resume from now: ticks that fell in the pause are not caught up."""
    sid = _check_id(schedule_id)
    outcome = await _run(handler, who, sc.ResumeSchedule(schedule_id=sid, now=datetime.now(UTC)))
    return _summary(sid, outcome)


@router.post("/schedules/{schedule_id}:trigger", status_code=202)
async def trigger_schedule(schedule_id: str, handler: Handler, who: Operator) -> dict[str, Any]:
    """Run the schedule's task now (also while paused); its cron is unaffected."""
    sid = _check_id(schedule_id)
    task_id = new_task_id()
    outcome = await _run(
        handler, who, sc.TriggerSchedule(schedule_id=sid, now=datetime.now(UTC), task_id=task_id)
    )
    return {**_summary(sid, outcome), "task_id": task_id}


@router.delete("/schedules/{schedule_id}", status_code=202)
async def delete_schedule(schedule_id: str, handler: Handler, who: Operator) -> dict[str, Any]:
    """Delete: no more ticks (tasks already started run on). The id is never reused."""
    outcome = await _run(handler, who, sc.DeleteSchedule(schedule_id=_check_id(schedule_id)))
    return _summary(schedule_id, outcome)


@router.get("/schedules/{schedule_id}/events")
async def schedule_timeline(schedule_id: str, svc: Svc, who: Viewer, page: TimelinePage) -> dict[str, Any]:
    """The schedule's events in sequence order: created, fired (task id), skipped, missed, ...;
    a page at a time, as a task's (`after`, `limit`, `order`, `next_after`): a schedule that fires
    every second has 86,400 of them a day."""
    schedule_id = _check_id(schedule_id)

    async def read(limit: int, after: int | None, newest_first: bool) -> list[dict[str, Any]]:
        return await schedules.timeline(svc.pool, who.tenant, schedule_id, limit, after, newest_first)

    return await page.read(read, Problem(404, "schedule-not-found", f"schedule {schedule_id} does not exist"))
