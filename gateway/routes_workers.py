"""Worker routes: the registry, drain, and (under `ordo up`) scaling and killing local workers.

Workers serve every tenant, so listing them is open to any viewer, but a worker's in-flight task
ids are shown to their own tenant only, and what describes the machine or counts every tenant's
work (host, pid, memory, processed/succeeded/... counters) to the deployment's admins only.
Drain, scale and kill change infrastructure every tenant shares: an admin of the deployment's own
tenant (`ORDO_TENANT`) only, and only its admins see the machine-level fields.
Scale and kill are answered by `ordo up`'s worker pool over NATS (`ordo.local.ctl`); without it
(a deployment that runs workers itself) they answer 409 `not-local-mode`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import nats.errors
from fastapi import APIRouter, Depends, Request

from ordo.gateway.auth import Principal, Role, require
from ordo.gateway.body import read_limited
from ordo.gateway.problems import Problem
from ordo.gateway.services import Services, services
from ordo.infra import subjects as sj
from ordo.projections import workers

router = APIRouter(prefix="/v1", tags=["workers"])
Svc = Annotated[Services, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]

MAX_LOCAL_WORKERS = 32
_CONTROL_TIMEOUT_S = 5.0


_ADMIN_ONLY = (
    "host", "pid", "rss_bytes", "processed", "succeeded", "failed", "cancelled", "released", "poison",
    "paced_waits", "paced_s",
)  # fmt: skip


def _operates(who: Principal, svc: Services) -> bool:
    """An admin of the deployment's own tenant (`ORDO_TENANT`): workers serve every tenant, so only
    it sees their machines and counters and may drain, scale or kill them."""
    return who.role >= Role.ADMIN and who.tenant == svc.settings.tenant


def _must_operate(who: Principal, svc: Services) -> None:
    if not _operates(who, svc):
        raise Problem(
            403,
            "forbidden",
            "workers serve every tenant: only an admin of the deployment's own tenant"
            f" ({svc.settings.tenant!r}, ORDO_TENANT) may drain, scale or kill them",
        )


def _shown(worker: dict[str, Any], who: Principal, svc: Services) -> dict[str, Any]:
    """A worker as `who` may see it: but to the deployment's admins, the fields naming the machine
    or counting every tenant's work are null."""
    if _operates(who, svc):
        return worker
    return {**worker, **dict.fromkeys(_ADMIN_ONLY)}


@router.get("/workers")
async def list_workers(svc: Svc, who: Viewer) -> dict[str, Any]:
    """Every known worker: status (online/draining/offline/lost), load, CPU; for admins also host,
    pid, memory and counters."""
    return {"items": [_shown(w, who, svc) for w in await workers.list_workers(svc.nc, who.tenant)]}


@router.get("/workers/{worker_id}")
async def get_worker(worker_id: str, svc: Svc, who: Viewer) -> dict[str, Any]:
    return _shown(await _known(svc, who, worker_id), who, svc)


@router.post("/workers/{worker_id}:drain", status_code=202)
async def drain_worker(worker_id: str, svc: Svc, who: Admin) -> dict[str, Any]:
    """Ask a worker to stop taking work; it finishes what it runs and stays up."""
    _must_operate(who, svc)
    known = await _known(svc, who, worker_id)
    if known["status"] in ("offline", "lost"):
        raise Problem(409, "worker-not-running", f"worker {worker_id} is {known['status']}")
    reply = await _request(svc, sj.worker_control_subject(worker_id), {"op": "drain"}, "worker-unreachable")
    return {"id": worker_id, "status": reply.get("state", "draining")}


@router.post("/workers:scale", status_code=202)
async def scale_workers(request: Request, svc: Svc, who: Admin) -> dict[str, Any]:
    """Local mode: run `count` worker processes (new ones start, extra ones stop gracefully)."""
    _must_operate(who, svc)
    body = await read_limited(request, 1024)
    try:
        fields = json.loads(body, object_pairs_hook=_one_count)
        if not isinstance(fields, dict):
            raise TypeError("not an object")
        (count,) = fields.values()
    except (ValueError, KeyError, TypeError) as exc:
        raise Problem(422, "invalid-request", 'body must be {"count": N}') from exc
    if type(count) is not int or not 0 <= count <= MAX_LOCAL_WORKERS:
        raise Problem(422, "invalid-request", f"count must be an integer in 0..{MAX_LOCAL_WORKERS}")
    reply = await _request(svc, sj.LOCAL_CONTROL, {"op": "scale", "count": count}, "not-local-mode")
    return {"count": reply.get("count", count)}


@router.post("/workers/{worker_id}:kill", status_code=202)
async def kill_worker(worker_id: str, svc: Svc, who: Admin) -> dict[str, Any]:
    """Local mode: SIGKILL a worker process (the resilience demo); the pool starts a new one."""
    _must_operate(who, svc)
    known = await _known(svc, who, worker_id)
    reply = await _request(svc, sj.LOCAL_CONTROL, {"op": "kill", "pid": known["pid"]}, "not-local-mode")
    return {"id": worker_id, "pid": known["pid"], "killed": bool(reply.get("killed"))}


def _one_count(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`{"count": N}` and nothing else: a second `count` (`{"count": 1, "count": 2}`) is ambiguous,
    and the number of processes started is no place to guess which one was meant."""
    if [name for name, _ in pairs] != ["count"]:
        raise ValueError("expected one count")
    return dict(pairs)


async def _known(svc: Services, who: Principal, worker_id: str) -> dict[str, Any]:
    found = await workers.get_worker(svc.nc, who.tenant, worker_id)
    if found is None:
        raise Problem(404, "worker-not-found", f"worker {worker_id} is not in the registry")
    return found


async def _request(svc: Services, subject: str, body: dict[str, Any], absent: str) -> dict[str, Any]:
    try:
        msg = await svc.nc.request(subject, json.dumps(body).encode(), timeout=_CONTROL_TIMEOUT_S)
    except nats.errors.NoRespondersError as exc:
        detail = {
            "not-local-mode": "scaling and killing workers is available only under `ordo up`",
            "worker-unreachable": "the worker did not answer (it may have just stopped)",
        }[absent]
        raise Problem(409, absent, detail) from exc
    except nats.errors.TimeoutError as exc:
        raise Problem(504, "control-timeout", f"no answer within {_CONTROL_TIMEOUT_S:g}s") from exc
    reply: dict[str, Any] = json.loads(msg.data)
    if not reply.get("ok"):
        raise Problem(409, "control-refused", str(reply.get("error", "refused")))
    return reply
