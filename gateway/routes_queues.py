"""Queue routes: list queues with their pause state; pause and resume dispatch from a queue."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from ordo.domain.queue_control import PauseQueue, ResumeQueue
from ordo.gateway.auth import Principal, Role, require
from ordo.gateway.pause_body import pause_reason
from ordo.gateway.problems import Problem
from ordo.gateway.services import Services, services, services_of
from ordo.infra.queue_control import QueueController, QueueOutcome
from ordo.infra.settings import NAME_RE
from ordo.projections import queue_stats, queues_state

router = APIRouter(prefix="/v1", tags=["queues"])
Svc = Annotated[Services, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]


async def queue_controller(request: Request) -> QueueController:
    """The queue controller the gateway's lifespan built (gateway/services.py)."""
    return services_of(request).queues


Controller = Annotated[QueueController, Depends(queue_controller)]


def _check(queue: str) -> str:
    if not NAME_RE.fullmatch(queue):
        raise Problem(422, "invalid-queue", f"queue name must match {NAME_RE.pattern}")
    return queue


@router.get("/queues")
async def list_queues(svc: Svc, who: Viewer) -> dict[str, Any]:
    """Queues of the tenant (any with tasks, or ever paused), their pause state and queued count."""
    controls = await queues_state.controls(svc.pool, who.tenant)
    # The queue_stats counters, not a count over `tasks` (which grows with the table: 1M tasks).
    depths = await queue_stats.depths(svc.pool, who.tenant)
    by_queue = {q: (n["queued"], n["running"] + n["cancelling"]) for q, n in depths.items()}
    items = []
    for name in sorted(set(by_queue) | set(controls)):
        control = controls.get(name, {})
        queued, running = by_queue.get(name, (0, 0))
        items.append(
            {
                "name": name,
                "paused": bool(control.get("paused", False)),
                "paused_reason": control.get("reason") or None,
                "changed_at": control.get("changed_at"),
                "queued": queued,
                "running": running,
            }
        )
    return {"items": items, "next_cursor": None}


def _result(queue: str, outcome: QueueOutcome) -> dict[str, Any]:
    return {
        "name": queue,
        "paused": outcome.state.paused,
        "changed": outcome.appended,
        "seq": outcome.last_seq,
        "consumers": outcome.consumers,
    }


@router.post("/queues/{queue}:pause", status_code=202)
async def pause_queue(queue: str, request: Request, ctl: Controller, who: Operator) -> dict[str, Any]:
    """Stop dispatch of the caller tenant's tasks from the queue: none of them starts until it is
    resumed; running tasks finish; submits are still accepted; other tenants are not affected.
    An optional body `{"reason": "..."}` is shown as the queue's `paused_reason`."""
    name = _check(queue)
    reason = await pause_reason(request)
    outcome = await ctl.execute(who.tenant, PauseQueue(queue=name, reason=reason))
    return _result(queue, outcome)


@router.post("/queues/{queue}:resume", status_code=202)
async def resume_queue(queue: str, ctl: Controller, who: Operator) -> dict[str, Any]:
    outcome = await ctl.execute(who.tenant, ResumeQueue(queue=_check(queue)))
    return _result(queue, outcome)
