"""Task routes: thin — parse, call the shared task service or a query, map errors in one place."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from ordo.domain.errors import TaskNotFound
from ordo.domain.status import TaskStatus as Status
from ordo.gateway import task_service
from ordo.gateway.auth import Principal, Role, require
from ordo.gateway.body import read_limited
from ordo.gateway.consistency import ReadConsistency
from ordo.gateway.problems import Problem, aware, known
from ordo.gateway.resources import (
    Accepted,
    BatchAccepted,
    TaskList,
    TaskResource,
    Timeline,
    problems,
)
from ordo.gateway.schemas import batch_schema, submit_schema, update_schema
from ordo.gateway.services import Services, services
from ordo.gateway.timeline_pages import TimelinePage
from ordo.infra.settings import Settings
from ordo.projections import task_events, tasks

router = APIRouter(prefix="/v1", tags=["tasks"], responses=problems(401, 403, 429))
Svc = Annotated[Services, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Submitter = Annotated[Principal, Depends(require(Role.SUBMITTER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
TaskStatus = Annotated[str, Query(pattern=r"^[a-z]{1,20}(,[a-z]{1,20}){0,9}$")]
_MAX_BATCH = Settings().max_batch


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": schema}}}


@router.post(
    "/tasks",
    status_code=202,
    response_model=Accepted,
    responses={200: {"model": Accepted, "description": "an idempotent repeat"}, **problems(409, 413, 422)},
    openapi_extra=_json_body(submit_schema()),
)
async def submit_task(request: Request, svc: Svc, who: Submitter) -> JSONResponse:
    """Submit one task. 202 with its id, status and log `seq` once the `submitted` event is stored."""
    body = await read_limited(request, svc.settings.max_body_bytes)
    status, out = await task_service.submit(svc, who, body)
    return JSONResponse(out, status_code=status, headers={"Location": f"/v1/tasks/{out['id']}"})


@router.post(
    "/tasks:batch",
    status_code=202,
    response_model=BatchAccepted,
    responses=problems(409, 413, 422),
    openapi_extra=_json_body(batch_schema(_MAX_BATCH)),
)
async def submit_batch(request: Request, svc: Svc, who: Submitter) -> dict[str, Any]:
    """Submit up to `max_batch` tasks. Every item is validated first: one bad item answers 422
    listing the bad items by index and nothing is submitted. Each task is then stored by itself (a
    delayed task with the others of its chunk of 1,000), so a request answered with an error may
    have stored some of its tasks: give items an `idempotency_key` to make sending it again safe, or
    send `"atomic": true` to store every task or none (at most 1,000 events, a delayed task is two)."""
    body = await read_limited(request, svc.settings.max_body_bytes)
    return await task_service.submit_batch(svc, who, body)


@router.get("/tasks", response_model=TaskList, responses=problems(400, 422, 503))
async def list_tasks(
    svc: Svc,
    who: Viewer,
    rc: ReadConsistency,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    status: TaskStatus | None = None,
    type: Annotated[str | None, Query(max_length=200)] = None,  # noqa: A002 - the API's name
    queue: Annotated[str | None, Query(max_length=64)] = None,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    updated_after: datetime | None = None,
    updated_before: datetime | None = None,
    q: Annotated[str | None, Query(max_length=200, description="text search in id and type")] = None,
    archived: bool = False,
    sort: Annotated[str, Query(pattern=r"^-?(created_at|updated_at)$")] = "-created_at",
) -> dict[str, Any]:
    """Tasks of the caller's tenant (newest first by default) with an opaque cursor to the next page.
    `status` takes a comma-separated list. Archived tasks are listed only with `archived=true`.
    A filter no index serves (`q`, `tag`, a second of status, type and queue, the other column's
    time range) is checked on at most 20,000 tasks per page: such a page may hold fewer than `limit`
    tasks, or none, and still have a `next_cursor`. The list ends where `next_cursor` is null."""
    if limit > svc.settings.max_page:
        raise Problem(422, "page-too-large", f"limit is at most {svc.settings.max_page}")
    statuses = tuple(status.split(",")) if status else ()
    known("status", statuses, Status)
    await rc.ensure(svc, who.tenant)
    try:
        items, next_cursor = await tasks.list_tasks(
            svc.pool, who.tenant, limit, cursor, None, type, queue, statuses=statuses, tag=tag,
            created_after=aware(created_after, "created_after"),
            created_before=aware(created_before, "created_before"),
            updated_after=aware(updated_after, "updated_after"),
            updated_before=aware(updated_before, "updated_before"),
            search=q, archived=archived, sort=sort,
        )  # fmt: skip
    except ValueError as exc:
        raise Problem(400, "invalid-cursor", str(exc)) from exc
    return {"items": items, "next_cursor": next_cursor}


@router.get("/tasks/{task_id}", response_model=TaskResource, responses=problems(404, 422, 503))
async def get_task(
    task_id: str,
    svc: Svc,
    who: Viewer,
    rc: ReadConsistency,
    as_of_seq: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> dict[str, Any]:
    """The task from the read model; with `as_of_seq`, as it was after that log sequence
    (its events folded by the domain from the log)."""
    if as_of_seq is None:
        task_service.check_id(task_id)
        await rc.ensure(svc, who.tenant, task_id)
    return await task_service.get(svc, who, task_id, as_of_seq)


@router.get("/tasks/{task_id}/events", response_model=Timeline, responses=problems(404, 422, 503))
async def task_timeline(
    task_id: str, svc: Svc, who: Viewer, rc: ReadConsistency, page: TimelinePage
) -> dict[str, Any]:
    """The task's events in sequence order (from the read model), a page at a time: up to `limit`
    from `after` on, oldest first (`order=desc`: newest first). `next_after` is the next page's
    `after`, null at the end: a task that heartbeats for days has more events than one page holds."""
    task_service.check_id(task_id)
    await rc.ensure(svc, who.tenant, task_id)

    async def read(limit: int, after: int | None, newest_first: bool) -> list[dict[str, Any]]:
        return await task_events.timeline(svc.pool, who.tenant, task_id, limit, after, newest_first)

    return await page.read(read, TaskNotFound(task_id))


@router.patch(
    "/tasks/{task_id}",
    status_code=202,
    response_model=Accepted,
    responses=problems(404, 409, 413, 422),
    openapi_extra=_json_body(update_schema()),
)
async def update_task(task_id: str, request: Request, svc: Svc, who: Submitter) -> dict[str, Any]:
    """Change payload, priority or run_at of a task that has not started yet (409 once it has)."""
    body = await read_limited(request, svc.settings.max_body_bytes)
    return await task_service.update(svc, who, task_id, body)


_COMMAND_DOC = problems(404, 409)


@router.post("/tasks/{task_id}:cancel", status_code=202, response_model=Accepted, responses=_COMMAND_DOC)
async def cancel_task(task_id: str, svc: Svc, who: Operator) -> dict[str, Any]:
    return await task_service.simple_command(svc, who, "cancel", task_id)


@router.post("/tasks/{task_id}:pause", status_code=202, response_model=Accepted, responses=_COMMAND_DOC)
async def pause_task(task_id: str, svc: Svc, who: Operator) -> dict[str, Any]:
    return await task_service.simple_command(svc, who, "pause", task_id)


@router.post("/tasks/{task_id}:resume", status_code=202, response_model=Accepted, responses=_COMMAND_DOC)
async def resume_task(task_id: str, svc: Svc, who: Operator) -> dict[str, Any]:
    return await task_service.simple_command(svc, who, "resume", task_id)


@router.post("/tasks/{task_id}:retry", status_code=202, response_model=Accepted, responses=_COMMAND_DOC)
async def retry_task(task_id: str, svc: Svc, who: Operator) -> dict[str, Any]:
    return await task_service.simple_command(svc, who, "retry", task_id)


@router.post("/tasks/{task_id}:archive", status_code=202, response_model=Accepted, responses=_COMMAND_DOC)
async def archive_task(task_id: str, svc: Svc, who: Operator) -> dict[str, Any]:
    """Hide a finished task from lists (kept in the log and readable by id). 409 unless finished."""
    return await task_service.simple_command(svc, who, "archive", task_id)


@router.post("/tasks/{task_id}:unarchive", status_code=202, response_model=Accepted, responses=_COMMAND_DOC)
async def unarchive_task(task_id: str, svc: Svc, who: Operator) -> dict[str, Any]:
    """List an archived task again (undo an archive). A task that is not archived is left as it is."""
    return await task_service.simple_command(svc, who, "unarchive", task_id)


_ACTIONS = ("cancel", "pause", "resume", "retry", "archive", "unarchive")


@router.post("/tasks/{task_id}:{action}", include_in_schema=False)
async def unknown_task_action(task_id: str, action: str, who: Viewer) -> None:
    """Registered after the actions: a misspelt one is a 404 naming them, not the 405 of the task's
    own path (which it otherwise matches, its id taken to end in `:<action>`)."""
    raise Problem(404, "unknown-action", f"no task action {action[:40]!r}: one of {', '.join(_ACTIONS)}")
