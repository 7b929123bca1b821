"""Stats: tasks by status, per-queue depth and rates, per-minute series with duration percentiles, lag.

The window is chosen here, at the edge (the only place that reads the clock); the read models hold
only times from the event log. `lag` is per projection: the newest relevant log sequence minus its
checkpoint (0 = caught up).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from ordo.gateway.auth import Principal, Role, require
from ordo.gateway.problems import Problem, aware
from ordo.gateway.resources import problems
from ordo.gateway.services import Services, services
from ordo.projections import queue_stats, stats_minutely
from ordo.projections.runner import lag

router = APIRouter(prefix="/v1", tags=["stats"], responses=problems(401, 403, 429))
Svc = Annotated[Services, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Counters(_Model):
    submitted: int
    started: int
    succeeded: int
    failed: int
    attempts_failed: int
    cancelled: int
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None


class Minute(Counters):
    minute: datetime
    queue: str
    type: str


class QueueStats(_Model):
    depth: dict[str, int]
    per_minute: dict[str, float]


class Window(_Model):
    since: datetime
    until: datetime


class Stats(_Model):
    by_status: dict[str, int]
    queues: dict[str, QueueStats]
    window: Window
    totals: Counters
    series: list[Minute]
    lag: dict[str, int]


def _window(minutes: int, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    since, until = aware(since, "since"), aware(until, "until")
    if until is None:
        now = datetime.now(UTC)
        until = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if since is None:
        try:
            since = until - timedelta(minutes=minutes)
        except OverflowError:  # an `until` near year 1
            raise Problem(422, "invalid-request", "the window starts before year 1") from None
    if since >= until:
        raise Problem(422, "invalid-request", "since must be before until")
    if until - since > timedelta(days=31):
        raise Problem(422, "invalid-request", "the window is at most 31 days")
    return since, until


@router.get("/stats", response_model=Stats, responses=problems(422, 503))
async def get_stats(
    svc: Svc,
    who: Viewer,
    minutes: Annotated[int, Query(ge=1, le=1440, description="window length when since is absent")] = 60,
    since: datetime | None = None,
    until: datetime | None = None,
    queue: Annotated[str | None, Query(pattern=r"^[a-z0-9_-]{1,64}$")] = None,
    type: Annotated[str | None, Query(min_length=1, max_length=200)] = None,  # noqa: A002 - the API's name
) -> dict[str, Any]:
    """Task counts by status (now), and per minute in the window: counters and duration p50/p95/p99."""
    start, end = _window(minutes, since, until)
    lags = await lag(svc.pool, svc.nc)
    # One snapshot: counts by status, depths and series agree with each other.
    async with svc.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        by_status = await queue_stats.by_status(conn, who.tenant, queue)
        depths = await queue_stats.depths(conn, who.tenant)
        rates = await queue_stats.rates(conn, who.tenant, start, end)
        totals = await stats_minutely.totals(conn, who.tenant, start, end, queue, type)
        series = await stats_minutely.series(conn, who.tenant, start, end, queue, type)
    if queue is not None:
        depths = {q: d for q, d in depths.items() if q == queue}
    empty = dict.fromkeys(("submitted", "started", "succeeded", "failed"), 0.0)
    return {
        "by_status": by_status,
        "queues": {q: {"depth": d, "per_minute": rates.get(q, empty)} for q, d in depths.items()},
        "window": {"since": start, "until": end},
        "totals": totals,
        "series": series,
        "lag": lags,
    }
