"""Server-sent events from the read model: `id:` is the event-log sequence; Last-Event-ID resumes.

The projector commits task events in sequence order, so "every event after N" read from the table is
the filtered log after N: no gap, no duplicate, from any gateway. LISTEN/NOTIFY wakes the streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Header, Query, Request
from sse_starlette import EventSourceResponse

from gateway.auth import Principal, Role, require
from gateway.services import Services, services
from projections import task_events
from projections.runner import checkpoint

router = APIRouter(prefix="/v1", tags=["events"])
Svc = Annotated[Services, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
_PAGE = 500
_json = msgspec.json.Encoder()


def _resume_point(last_event_id: str | None, after: int | None) -> int | None:
    for value in (last_event_id, after):
        if value is None:
            continue
        try:
            seq = int(value)
        except ValueError:
            continue
        if seq >= 0:
            return seq
    return None


async def _stream(
    request: Request, svc: Services, tenant: str, after: int, task_id: str | None
) -> AsyncIterator[dict[str, Any]]:
    while not await request.is_disconnected():
        page = await task_events.events_after(svc.pool, tenant, after, _PAGE, task_id=task_id)
        for entry in page:
            after = entry["seq"]
            yield {"id": str(after), "event": "task_event", "data": _json.encode(entry).decode()}
        if len(page) < _PAGE:
            # Wait for the projector's next commit (the timeout only re-checks the connection).
            await svc.notifier.wait_beyond(max(after, svc.notifier.last_seq), timeout=5.0)


@router.get("/events/stream")
async def events_stream(
    request: Request,
    svc: Svc,
    who: Viewer,
    task_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    after: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """All task events (or one task's) as SSE. Without a resume point: from now on."""
    start = _resume_point(last_event_id, after)
    if start is None:
        start = 0 if task_id is not None else await checkpoint(svc.pool)
    return EventSourceResponse(_stream(request, svc, who.tenant, start, task_id), ping=15, send_timeout=30)


@router.get("/tasks/{task_id}/stream")
async def task_stream(
    request: Request,
    task_id: str,
    svc: Svc,
    who: Viewer,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """One task's events as SSE, from its first event unless resumed."""
    start = _resume_point(last_event_id, None) or 0
    return EventSourceResponse(_stream(request, svc, who.tenant, start, task_id), ping=15, send_timeout=30)
