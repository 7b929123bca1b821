"""Task routes: thin — parse, build a command or call a query, map errors in one place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from domain.commands import CancelTask, PauseTask, ReplayTask, ResumeTask, SubmitTask
from domain.errors import TaskNotFound
from gateway.auth import Principal, Role, require
from gateway.body import read_limited
from gateway.problems import Problem
from gateway.schemas import InvalidBody, decode_submit, submit_schema
from gateway.services import Services, services
from infra.ids import new_task_id, task_id_for_key
from projections import task_events, tasks

router = APIRouter(prefix="/v1", tags=["tasks"])
Svc = Annotated[Services, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Submitter = Annotated[Principal, Depends(require(Role.SUBMITTER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]


def _check_id(task_id: str) -> str:
    if not (1 <= len(task_id) <= 64) or not all(c.isalnum() or c in "_-" for c in task_id):
        raise TaskNotFound(task_id)
    return task_id


@router.post(
    "/tasks",
    status_code=202,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": submit_schema()}}},
)
async def submit_task(request: Request, svc: Svc, who: Submitter) -> JSONResponse:
    """Submit one task. 202 with its id and status once the `submitted` event is stored."""
    body = await read_limited(request, svc.settings.max_body_bytes)
    try:
        req = decode_submit(body)
    except InvalidBody as exc:
        raise Problem(422, "invalid-request", str(exc)) from exc
    if len(req.payload) > svc.settings.max_payload_bytes:
        raise Problem(413, "payload-too-large", f"payload exceeds {svc.settings.max_payload_bytes} bytes")
    tenant = who.tenant
    now = datetime.now(UTC)
    run_at = req.run_at
    if req.delay is not None:
        run_at = now + timedelta(seconds=req.delay)
    if req.idempotency_key is not None:
        task_id = task_id_for_key(tenant, req.idempotency_key)
    else:
        task_id = new_task_id()
    command = SubmitTask(
        task_id=task_id,
        tenant=tenant,
        queue=req.queue,
        task_type=req.type,
        now=now,
        payload=req.payload,
        priority=req.priority,
        run_at=run_at.astimezone(UTC) if run_at is not None else None,
        max_attempts=req.max_attempts or svc.settings.default_max_attempts,
        timeout_s=req.timeout or svc.settings.default_timeout_s,
        tags=tuple(req.tags),
        idempotency_key=req.idempotency_key,
        body_hash=req.body_hash() if req.idempotency_key is not None else None,
    )
    outcome = await svc.handler.execute(tenant, command)
    status = 202 if outcome.events else 200
    return JSONResponse(
        {"id": task_id, "status": str(outcome.state.status), "seq": outcome.last_seq},
        status_code=status,
        headers={"Location": f"/v1/tasks/{task_id}"},
    )


@router.get("/tasks")
async def list_tasks(
    svc: Svc,
    who: Viewer,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    status: Annotated[str | None, Query(pattern=r"^[a-z]{1,20}$")] = None,
    type: Annotated[str | None, Query(max_length=200)] = None,  # noqa: A002 - the API's name
    queue: Annotated[str | None, Query(pattern=r"^[a-z0-9_-]{1,64}$")] = None,
) -> dict[str, Any]:
    """Tasks, newest first, with an opaque cursor to the next page."""
    try:
        items, next_cursor = await tasks.list_tasks(svc.pool, who.tenant, limit, cursor, status, type, queue)
    except ValueError as exc:
        raise Problem(400, "invalid-cursor", str(exc)) from exc
    return {"items": items, "next_cursor": next_cursor}


@router.get("/tasks/{task_id}")
async def get_task(task_id: str, svc: Svc, who: Viewer) -> dict[str, Any]:
    task = await tasks.get_task(svc.pool, who.tenant, _check_id(task_id))
    if task is None:
        raise TaskNotFound(task_id)
    return task


@router.get("/tasks/{task_id}/events")
async def task_timeline(task_id: str, svc: Svc, who: Viewer) -> dict[str, Any]:
    """The task's events in sequence order (from the read model)."""
    events = await task_events.timeline(svc.pool, who.tenant, _check_id(task_id))
    if not events:
        raise TaskNotFound(task_id)
    return {"events": events}


async def _command(svc: Services, who: Principal, command: Any) -> dict[str, Any]:
    outcome = await svc.handler.execute(who.tenant, command)
    return {"id": command.task_id, "status": str(outcome.state.status), "seq": outcome.last_seq}


@router.post("/tasks/{task_id}:cancel", status_code=202)
async def cancel_task(task_id: str, svc: Svc, who: Operator) -> dict[str, Any]:
    return await _command(svc, who, CancelTask(task_id=_check_id(task_id)))


@router.post("/tasks/{task_id}:pause", status_code=202)
async def pause_task(task_id: str, svc: Svc, who: Operator) -> dict[str, Any]:
    return await _command(svc, who, PauseTask(task_id=_check_id(task_id)))


@router.post("/tasks/{task_id}:resume", status_code=202)
async def resume_task(task_id: str, svc: Svc, who: Operator) -> dict[str, Any]:
    return await _command(svc, who, ResumeTask(task_id=_check_id(task_id)))


@router.post("/tasks/{task_id}:retry", status_code=202)
async def retry_task(task_id: str, svc: Svc, who: Operator) -> dict[str, Any]:
    return await _command(svc, who, ReplayTask(task_id=_check_id(task_id), reason="manual retry"))
