"""Dead letters: tasks that failed for good — list them, replay one, replay many by filter.

A replay is the domain's `ReplayTask`, decided against the task's history in the log (not the read
model): a task that is not failed there answers 409, whatever the list showed a moment ago.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ordo.domain.commands import ReplayTask
from ordo.domain.errors import DomainError, TaskNotFound
from ordo.domain.status import TaskStatus
from ordo.gateway.auth import Principal, Role, require
from ordo.gateway.body import read_limited
from ordo.gateway.problems import Problem, aware
from ordo.gateway.resources import NO_NUL, Accepted, problems
from ordo.gateway.services import Services, services
from ordo.gateway.task_service import check_id
from ordo.projections import dead_letters
from ordo.projections.dead_letters import DeadLetterFilter

router = APIRouter(prefix="/v1", tags=["dead letters"], responses=problems(401, 403, 429))
Svc = Annotated[Services, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Name = Annotated[str | None, Query(pattern=r"^[a-z0-9_-]{1,64}$")]
TypeName = Annotated[str | None, Query(min_length=1, max_length=200)]
ErrorKind = Annotated[str | None, Query(min_length=1, max_length=200)]
MAX_BULK = 1000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeadLetter(_Model):
    task_id: str
    queue: str
    type: str
    attempts: int
    error_kind: str
    error: dict[str, Any] | None = None
    reason: str
    dead_at: datetime
    seq: int


class DeadLetterList(_Model):
    items: list[DeadLetter]
    next_cursor: str | None


class BulkReplay(_Model):
    """Which dead letters to replay: all given fields must match; at most `limit`, oldest first."""

    queue: str | None = Field(default=None, pattern=r"^[a-z0-9_-]{1,64}$")
    type: str | None = Field(default=None, min_length=1, max_length=200, pattern=NO_NUL)
    error_kind: str | None = Field(default=None, min_length=1, max_length=200, pattern=NO_NUL)
    dead_after: datetime | None = None
    dead_before: datetime | None = None
    limit: int = Field(default=100, ge=1, le=MAX_BULK)
    reason: str = Field(default="bulk replay", max_length=500, pattern=NO_NUL)


class Skipped(_Model):
    id: str
    reason: str


class BulkReplayed(_Model):
    replayed: list[Accepted]
    skipped: list[Skipped]


@router.get("/dead-letters", response_model=DeadLetterList, responses=problems(400, 422, 503))
async def list_dead_letters(
    svc: Svc,
    who: Viewer,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    queue: Name = None,
    type: TypeName = None,  # noqa: A002 - the API's name
    error_kind: ErrorKind = None,
    dead_after: datetime | None = None,
    dead_before: datetime | None = None,
) -> dict[str, Any]:
    """Dead letters of the caller's tenant, newest first, with an opaque cursor to the next page.
    A filter is checked on at most 20,000 dead letters per page: a filtered page may hold fewer than
    `limit`, or none, and still have a `next_cursor`. The list ends where `next_cursor` is null."""
    where = DeadLetterFilter(
        queue, type, error_kind, aware(dead_after, "dead_after"), aware(dead_before, "dead_before")
    )
    try:
        items, next_cursor = await dead_letters.list_dead_letters(svc.pool, who.tenant, limit, cursor, where)
    except ValueError as exc:
        raise Problem(400, "invalid-cursor", str(exc)) from exc
    return {"items": items, "next_cursor": next_cursor}


async def _replay(svc: Services, tenant: str, task_id: str, reason: str) -> dict[str, Any]:
    state, _, _ = await svc.handler.load(tenant, task_id)
    if not state.exists:
        raise TaskNotFound(task_id)
    if state.status is not TaskStatus.FAILED:
        raise Problem(409, "not-a-dead-letter", f"task {task_id} is {state.status}, not failed")
    outcome = await svc.handler.execute(tenant, ReplayTask(task_id=task_id, reason=reason))
    return {"id": task_id, "status": str(outcome.state.status), "seq": outcome.last_seq}


@router.post(
    "/dead-letters/{task_id}:replay",
    status_code=202,
    response_model=Accepted,
    responses=problems(404, 409, 503),
)
async def replay_dead_letter(task_id: str, svc: Svc, who: Operator) -> dict[str, Any]:
    """Run a failed task again: same id, a fresh attempt budget; it leaves the dead-letter list."""
    return await _replay(svc, who.tenant, check_id(task_id), "dead letter replay")


@router.post(
    "/dead-letters:replay",
    status_code=202,
    response_model=BulkReplayed,
    responses=problems(413, 422, 503),
    openapi_extra={
        "requestBody": {"content": {"application/json": {"schema": BulkReplay.model_json_schema()}}}
    },
)
async def replay_dead_letters(request: Request, svc: Svc, who: Operator) -> dict[str, Any]:
    """Replay up to `limit` dead letters matching the filter (from the read model), oldest first.

    Each is decided against its own history: one that is no longer failed is listed in `skipped`.
    An empty body replays the 100 oldest.
    """
    raw = await read_limited(request, svc.settings.max_body_bytes)
    try:
        body = BulkReplay.model_validate_json(raw.strip() or b"{}")
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise Problem(422, "invalid-request", "the filter is invalid", errors=errors) from exc
    where = DeadLetterFilter(
        body.queue,
        body.type,
        body.error_kind,
        aware(body.dead_after, "dead_after"),
        aware(body.dead_before, "dead_before"),
    )
    replayed: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for task_id in await dead_letters.matching_ids(svc.pool, who.tenant, where, body.limit):
        try:
            replayed.append(await _replay(svc, who.tenant, task_id, body.reason))
        except (DomainError, Problem) as exc:
            skipped.append({"id": task_id, "reason": str(exc)})
        except msgspec.DecodeError as exc:  # one task's unreadable history does not stop the rest
            reason = f"its history holds an event that cannot be read: {exc}"
            skipped.append({"id": task_id, "reason": reason})
    return {"replayed": replayed, "skipped": skipped}
