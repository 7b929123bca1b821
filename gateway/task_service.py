"""Task commands shared by the HTTP routes and the NATS command API: one validation, one outcome.

Both front doors hand raw request bytes and the caller's principal here, so a submission, a batch, a
cancel or a read behaves identically (same checks, same errors) whichever way it arrives.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from opentelemetry.trace import SpanKind

from ordo.domain.commands import (
    ArchiveTask,
    CancelTask,
    PauseTask,
    ReplayTask,
    ResumeTask,
    SubmitTask,
    TaskCommand,
    UnarchiveTask,
    UpdateTask,
)
from ordo.domain.errors import TaskNotFound
from ordo.gateway.auth import Principal
from ordo.gateway.history import task_as_of
from ordo.gateway.problems import Problem
from ordo.gateway.schemas import (
    InvalidBody,
    SubmitTaskRequest,
    decode_batch_items,
    decode_submit,
    decode_update,
)
from ordo.gateway.services import Services
from ordo.infra import telemetry
from ordo.infra.command_handler import AtomicBatchTooLarge, Outcome
from ordo.infra.ids import could_be_task_id, new_task_id, task_id_for_key
from ordo.projections import poison, tasks


def check_id(task_id: str) -> str:
    """A task id that cannot be one of ours is simply not found (never a 500, never a subject)."""
    if not could_be_task_id(task_id):
        raise TaskNotFound(task_id[:64])
    return task_id


def _command(req: SubmitTaskRequest, tenant: str, now: datetime, svc: Services) -> SubmitTask:
    run_at = req.run_at
    if req.delay is not None:
        run_at = now + timedelta(seconds=req.delay)
    if req.idempotency_key is not None:
        task_id = task_id_for_key(tenant, req.idempotency_key)
    else:
        task_id = new_task_id()
    return SubmitTask(
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


def accepted(outcome: Outcome, task_id: str) -> dict[str, Any]:
    return {"id": task_id, "status": str(outcome.state.status), "seq": outcome.last_seq}


async def submit(svc: Services, who: Principal, body: bytes) -> tuple[int, dict[str, Any]]:
    """(202 created | 200 an idempotent repeat, the accepted task)."""
    try:
        req = decode_submit(body)
    except InvalidBody as exc:
        raise Problem(422, "invalid-request", str(exc)) from exc
    if len(req.payload) > svc.settings.max_payload_bytes:
        raise Problem(413, "payload-too-large", f"payload exceeds {svc.settings.max_payload_bytes} bytes")
    command = _command(req, who.tenant, datetime.now(UTC), svc)
    with telemetry.span("ordo.submit", kind=SpanKind.SERVER, task_id=command.task_id, task_type=req.type):
        outcome = await svc.handler.execute(who.tenant, command)
    return (202 if outcome.events else 200), accepted(outcome, command.task_id)


async def submit_batch(svc: Services, who: Principal, body: bytes) -> dict[str, Any]:
    """Validate every item first (422 listing each bad one by index, nothing appended), then append
    in chunks (CommandHandler.submit_many). Items with the same idempotency key and body are one task."""
    try:
        raw_items, atomic = decode_batch_items(body)
    except InvalidBody as exc:
        raise Problem(422, "invalid-request", str(exc)) from exc
    limit = svc.settings.max_batch
    if not 1 <= len(raw_items) <= limit:
        raise Problem(422, "invalid-batch-size", f"a batch holds 1 to {limit} tasks, not {len(raw_items)}")
    now = datetime.now(UTC)
    errors: list[dict[str, Any]] = []
    commands: list[SubmitTask] = []
    by_key: dict[str, tuple[int, str | None]] = {}
    for index, raw in enumerate(raw_items):
        try:
            req = decode_submit(bytes(raw))
        except InvalidBody as exc:
            errors.append({"index": index, "detail": str(exc)})
            continue
        if len(req.payload) > svc.settings.max_payload_bytes:
            errors.append(
                {"index": index, "detail": f"payload exceeds {svc.settings.max_payload_bytes} bytes"}
            )
            continue
        command = _command(req, who.tenant, now, svc)
        if req.idempotency_key is not None:
            seen = by_key.get(req.idempotency_key)
            if seen is not None and seen[1] != command.body_hash:
                errors.append(
                    {
                        "index": index,
                        "detail": f"idempotency key also used by item {seen[0]} with another body",
                    }
                )
                continue
            by_key.setdefault(req.idempotency_key, (index, command.body_hash))
        commands.append(command)
    if errors:
        raise Problem(
            422, "invalid-batch", f"{len(errors)} of {len(raw_items)} tasks are invalid; none was submitted",
            errors=errors[:1000], invalid_count=len(errors),
        )  # fmt: skip
    unique: dict[str, SubmitTask] = {}
    for command in commands:
        unique.setdefault(command.task_id, command)
    await _check_keys(svc, who.tenant, commands)
    try:
        outcomes = await svc.handler.submit_many(who.tenant, list(unique.values()), atomic=atomic)
    except AtomicBatchTooLarge as exc:
        raise Problem(422, "atomic-batch-too-large", str(exc)) from exc
    result = {c.task_id: o for c, o in zip(unique.values(), outcomes, strict=True)}
    items, reported = [], set()
    for c in commands:  # an item repeating an earlier one's key names its task, not created twice
        created = bool(result[c.task_id].events) and c.task_id not in reported
        reported.add(c.task_id)
        items.append({**accepted(result[c.task_id], c.task_id), "created": created})
    return {"items": items, "count": len(items), "seq": max((i["seq"] for i in items), default=0)}


async def _check_keys(svc: Services, tenant: str, commands: list[SubmitTask]) -> None:
    """409 listing every item whose idempotency key an earlier request used with another body,
    before anything is appended (a conflict inside a chunk would otherwise be found too late)."""
    keyed = [(i, c) for i, c in enumerate(commands) if c.idempotency_key is not None]
    slots = asyncio.Semaphore(32)

    async def clash(command: SubmitTask) -> bool:
        async with slots:
            state, _, _ = await svc.handler.load(tenant, command.task_id)
        return state.exists and state.body_hash != command.body_hash

    clashes = await asyncio.gather(*(clash(c) for _, c in keyed))
    bad = [{"index": i, "detail": "idempotency key already used with another body"}
           for (i, _), hit in zip(keyed, clashes, strict=True) if hit]  # fmt: skip
    if bad:
        raise Problem(409, "idempotency-conflict", f"{len(bad)} idempotency keys conflict", errors=bad)


async def get(svc: Services, who: Principal, task_id: str, as_of_seq: int | None = None) -> dict[str, Any]:
    check_id(task_id)
    if as_of_seq is not None:
        task = await task_as_of(svc.handler.store, who.tenant, task_id, as_of_seq)
    else:
        task = await tasks.get_task(svc.pool, who.tenant, task_id)
        if task is None and (skipped := await poison.for_aggregate(svc.pool, who.tenant, task_id)):
            # The read model skipped this task's first event (decisions 23): fold it from the log.
            task = await task_as_of(svc.handler.store, who.tenant, task_id, 2**62)
            if task is not None:
                task["projection_errors"] = skipped
    if task is None:
        raise TaskNotFound(task_id)
    return task


def _simple_command(verb: str, task_id: str) -> TaskCommand:
    if verb == "archive":
        return ArchiveTask(task_id=task_id)
    if verb == "unarchive":
        return UnarchiveTask(task_id=task_id)
    if verb == "cancel":
        return CancelTask(task_id=task_id)
    if verb == "pause":
        return PauseTask(task_id=task_id)
    if verb == "resume":
        return ResumeTask(task_id=task_id)
    if verb == "retry":
        return ReplayTask(task_id=task_id, reason="manual retry")
    raise ValueError(f"unknown command {verb}")


async def simple_command(svc: Services, who: Principal, verb: str, task_id: str) -> dict[str, Any]:
    """cancel / pause / resume / retry / archive / unarchive one task of the caller's tenant."""
    command = _simple_command(verb, check_id(task_id))
    return accepted(await svc.handler.execute(who.tenant, command), task_id)


async def update(svc: Services, who: Principal, task_id: str, body: bytes) -> dict[str, Any]:
    """Change payload, priority or run_at of a task that has not started (409 once it has)."""
    check_id(task_id)
    try:
        req = decode_update(body)
    except InvalidBody as exc:
        raise Problem(422, "invalid-request", str(exc)) from exc
    payload = None if isinstance(req.payload, msgspec.UnsetType) else req.payload
    if payload is not None and len(payload) > svc.settings.max_payload_bytes:
        raise Problem(413, "payload-too-large", f"payload exceeds {svc.settings.max_payload_bytes} bytes")
    command = UpdateTask(
        task_id=task_id,
        now=datetime.now(UTC),
        payload=payload,
        priority=req.priority,
        run_at=req.run_at.astimezone(UTC) if req.run_at is not None else None,
    )
    return accepted(await svc.handler.execute(who.tenant, command), task_id)
