"""Liveness and readiness. Ready = NATS, PostgreSQL and an active projector; workers are reported."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ordo.gateway.services import Services, services
from ordo.projections.runner import checkpoint, leader_present

router = APIRouter(tags=["health"])
Svc = Annotated[Services, Depends(services)]


@router.get("/healthz")
async def healthz(svc: Svc) -> dict[str, Any]:
    return {"status": "ok", "nats": svc.nc.is_connected, "workers": []}


@router.get("/readyz")
async def readyz(svc: Svc) -> JSONResponse:
    checks: dict[str, Any] = {"nats": svc.nc.is_connected}
    try:
        async with svc.pool.acquire(timeout=2) as conn:
            checks["postgres"] = True
            checks["projections"] = await leader_present(conn)
            checks["projection_seq"] = await checkpoint(conn)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; report it
        checks["postgres"] = False
        checks["projections"] = False
        checks["error"] = str(exc)
    ready = bool(checks["nats"] and checks["postgres"] and checks["projections"])
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)
