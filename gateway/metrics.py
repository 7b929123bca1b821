"""`/metrics` in Prometheus text format, and the HTTP latency middleware that feeds it.

Task counters and durations come from the `counters` read model (the same on every gateway, exact
across restarts); queue depth, in-flight tasks, workers and projection lag are read at scrape time;
HTTP latency and SSE clients are this gateway process's own.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordo.gateway.auth import Principal, Role, require
from ordo.infra.metrics import Registry
from ordo.projections import counters, poison, workers

router = APIRouter(tags=["metrics"])
http_registry = Registry()
HTTP_LATENCY = http_registry.histogram(
    "ordo_http_request_duration_seconds", "HTTP request latency by route", ("method", "route", "status")
)
SSE_CLIENTS = http_registry.gauge("ordo_sse_clients", "Open SSE connections on this gateway")

_COUNTER_HELP = {
    "submitted": "Tasks submitted",
    "started": "Attempts started",
    "succeeded": "Tasks succeeded",
    "failed": "Tasks failed (retries exhausted or not retryable)",
    "dead_lettered": "Tasks dead-lettered",
    "cancelled": "Tasks cancelled",
    "attempt_failed": "Attempts that failed",
    "attempt_timed_out": "Attempts that timed out; reason lease_expired means a redelivery",
    "zombie_rejected": "Late results from superseded attempts, rejected by fencing",
}
_HISTOGRAMS = {
    "duration": ("ordo_task_duration_seconds", "Attempt duration, started to finished"),
    "queue_wait": ("ordo_task_queue_wait_seconds", "Time from runnable to started"),
}


def _route_of(scope: Scope) -> str:
    """The route template (never the raw path: ids would explode the label set)."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = candidate.matches(scope)
        if match is Match.FULL and hasattr(candidate, "path"):
            return str(candidate.path)
    return "unmatched"


class HttpMetrics:
    """The HTTP latency histogram, as plain ASGI middleware (Starlette's BaseHTTPMiddleware costs a
    task group and a stream per request): time to the response's start, by route and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        observed = False

        def observe(status: int) -> None:
            nonlocal observed
            if not observed:
                observed = True
                HTTP_LATENCY.observe(
                    time.perf_counter() - start, scope["method"], _route_of(scope), str(status)
                )

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                observe(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            observe(500)  # nothing was sent: the error handler outside answers 500


def _task_metrics(snapshot: dict[str, Any]) -> str:
    registry = Registry()
    for row in snapshot["counters"]:
        metric = row["metric"]
        labels = (row["tenant"], row["queue"], row["type"])
        if metric in _COUNTER_HELP:
            registry.counter(
                f"ordo_tasks_{metric}_total", _COUNTER_HELP[metric], ("tenant", "queue", "type")
            ).inc(*labels, by=row["value"])
    for name, (metric_name, help_text) in _HISTOGRAMS.items():
        hist = registry.histogram(metric_name, help_text, ("tenant", "queue", "type"), counters.BUCKETS)
        sums = {
            (r["tenant"], r["queue"], r["type"]): r["value"]
            for r in snapshot["counters"]
            if r["metric"] == name + "_sum"
        }
        for row in snapshot["histograms"]:
            if row["metric"] != name:
                continue
            key = (row["tenant"], row["queue"], row["type"])
            bucket_counts, totals = hist.series.setdefault(key, ([0] * (len(hist.buckets) + 1), [0.0]))
            bucket_counts[row["bucket"]] += row["count"]
            totals[0] = sums.get(key, 0.0)
    return registry.render()


_WORKER_STATUSES = ("online", "draining", "offline", "lost")


async def _gauges(request: Request, tenant: str) -> str:
    svc = request.app.state.services
    registry = Registry()
    async with svc.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT tenant, queue, status, count(*) AS n FROM tasks WHERE tenant=$1 GROUP BY 1, 2, 3",
            tenant,
        )
        checkpoints = await conn.fetch("SELECT name, last_seq FROM projection_checkpoints")
        skipped = await poison.counts(conn)
    depth = registry.gauge("ordo_queue_depth", "Tasks by queue and status", ("tenant", "queue", "status"))
    depth.replace(((r["tenant"], r["queue"], r["status"]), float(r["n"])) for r in rows)
    inflight = registry.gauge("ordo_tasks_in_flight", "Running tasks by queue", ("tenant", "queue"))
    running: dict[tuple[str, str], float] = {}
    for r in rows:  # every queue the read model knows, 0 when nothing runs (a series, not a gap)
        key = (r["tenant"], r["queue"])
        running[key] = running.get(key, 0.0) + (r["n"] if r["status"] in ("running", "cancelling") else 0)
    inflight.replace(running.items())
    seen = await workers.list_workers(svc.nc, tenant)
    online = registry.gauge("ordo_workers", "Workers by status (as GET /v1/workers derives it)", ("status",))
    online.replace(((st,), float(sum(w["status"] == st for w in seen))) for st in _WORKER_STATUSES)
    info = await svc.nc.jetstream().stream_info("ORDO_EVENTS")
    last = float(info.state.last_seq)
    lag = registry.gauge(
        "ordo_projection_lag_events", "Log sequences not yet applied by a projection", ("projection",)
    )
    lag.replace(((r["name"],), max(0.0, last - r["last_seq"])) for r in checkpoints)
    errors = registry.gauge(
        "ordo_projection_errors",
        "Events a projection could not apply and skipped (rows of projection_errors)",
        ("projection",),
    )
    errors.replace(((r["name"],), float(skipped.get(r["name"], 0))) for r in checkpoints)
    gate = svc.handler.gate
    if gate is not None:  # batch submits paced by the read model (decision 59)
        waited = "Seconds this gateway's batch submits waited for the read model to catch up"
        registry.counter("ordo_submit_paced_seconds_total", waited).inc(by=gate.waited_s)
        pieces = "Pieces of this gateway's batch submits that waited for the read model"
        registry.counter("ordo_submit_paced_total", pieces).inc(by=float(gate.waits))
        window = "Events the read model may trail this gateway's batch submits by now"
        registry.gauge("ordo_submit_window", window).replace([((), float(gate.window))])
    return registry.render()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, who: Annotated[Principal, Depends(require(Role.OPERATOR))]) -> Response:
    """The caller's tenant's task metrics plus this gateway's own (scrape with an operator key)."""
    svc = request.app.state.services
    async with svc.pool.acquire() as conn:
        snapshot = await counters.snapshot(conn, who.tenant, svc.settings.metrics_types)
    body = _task_metrics(snapshot) + await _gauges(request, who.tenant) + http_registry.render()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
