"""Liveness and readiness. Ready = NATS, PostgreSQL and an active projector; workers are reported.

Events a read model skipped (DESIGN Revision 2) leave the system ready but `degraded`: readiness
stays 200, so one bad event never takes the gateway out of a load balancer for everyone, and the
count says how many entries `projection_errors` holds.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ordo.gateway.services import Services, services
from ordo.infra import subjects as sj
from ordo.projections import log_identity, poison
from ordo.projections.runner import checkpoint, leader_present

log = logging.getLogger("ordo.gateway")
router = APIRouter(tags=["health"])
Svc = Annotated[Services, Depends(services)]


@router.get("/healthz")
async def healthz(svc: Svc) -> dict[str, Any]:
    """Liveness: the process answers (workers are listed by `GET /v1/workers`)."""
    return {"status": "ok", "nats": svc.nc.is_connected}


@router.get("/readyz")
async def readyz(svc: Svc) -> JSONResponse:
    checks: dict[str, Any] = {"nats": svc.nc.is_connected and await _jetstream_answers(svc)}
    try:
        async with svc.pool.acquire(timeout=2) as conn:
            checks["postgres"] = True
            checks["projections"] = await leader_present(conn)
            checks["projection_seq"] = await checkpoint(conn)
            checks["projection_errors"] = sum((await poison.counts(conn)).values())
            refused = await log_identity.refusal(conn)
            if refused is not None:  # the projector holds the lock but projects nothing
                checks["projections"] = False
                checks["error"] = refused
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; log it, say only that
        log.warning("readiness: PostgreSQL check failed: %s", exc)
        checks["postgres"] = False
        checks["projections"] = False
        checks["error"] = "the read model (PostgreSQL) is unavailable"  # no internals (audit F18)
    ready = bool(checks["nats"] and checks["postgres"] and checks["projections"])
    degraded = bool(checks.get("projection_errors"))
    return JSONResponse({"ready": ready, "degraded": degraded, **checks}, status_code=200 if ready else 503)


async def _jetstream_answers(svc: Services) -> bool:
    """JetStream answers for the event log within 2 s: a connected but frozen server does not, nor
    one that lost its data (no stream: submits then fail with 503), so readiness must not be green."""
    try:
        await svc.nc.jetstream(timeout=2).stream_info(sj.EVENTS_STREAM)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness: JetStream did not answer for %s: %r", sj.EVENTS_STREAM, exc)
        return False
    return True
