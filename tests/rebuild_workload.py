"""A realistic event log, fast: tasks driven through their lifecycles by the command handler.

Used by the rebuild tests and `bench/rebuild.py`. It sends the same commands a worker, the scheduler
and an operator would (start, extend, progress, fail with retry, due timer, succeed, cancel, replay,
pause/resume), without their fetch loops, so thousands of tasks take seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import msgspec

from ordo.domain import commands as cmd
from ordo.domain.events import ErrorInfo
from ordo.infra.command_handler import CommandHandler

WORKER = "bench-worker"


async def _start(h: CommandHandler, tenant: str, task_id: str, dispatch: int) -> tuple[int, int]:
    now = datetime.now(UTC)
    out = await h.execute(
        tenant,
        cmd.StartAttempt(
            task_id=task_id,
            dispatch=dispatch,
            worker_id=WORKER,
            now=now,
            lease_until=now + timedelta(minutes=5),
        ),
    )
    return out.state.attempt, out.state.dispatch


async def _lifecycle(h: CommandHandler, tenant: str, task_id: str, kind: int, dispatch: int) -> str:
    """Drive one task; returns the name of the path it took."""
    err = ErrorInfo(kind="ValueError", message=f"boom {kind}")
    if kind == 7:
        await h.execute(tenant, cmd.CancelTask(task_id=task_id, reason="not needed"))
        return "cancelled-queued"
    if kind == 6:
        await h.execute(tenant, cmd.PauseTask(task_id=task_id))
        out = await h.execute(tenant, cmd.ResumeTask(task_id=task_id))
        dispatch = out.state.dispatch
    attempt, dispatch = await _start(h, tenant, task_id, dispatch)
    if kind in (0, 1, 2, 6):
        if kind == 1:
            lease = datetime.now(UTC) + timedelta(minutes=6)
            await h.execute(
                tenant, cmd.ExtendLease(task_id=task_id, attempt=attempt, worker_id=WORKER, lease_until=lease)
            )
            await h.execute(
                tenant, cmd.ReportProgress(task_id=task_id, attempt=attempt, worker_id=WORKER, pct=50)
            )
        result = msgspec.Raw(msgspec.json.encode({"n": kind}))
        await h.execute(
            tenant, cmd.CompleteAttempt(task_id=task_id, attempt=attempt, worker_id=WORKER, result=result)
        )
        return "succeeded"
    if kind in (3, 4):  # fail, retry after the due timer, then succeed (3) or fail for good (4)
        retry_at = datetime.now(UTC) + timedelta(hours=1)
        await h.execute(
            tenant,
            cmd.FailAttempt(task_id=task_id, attempt=attempt, worker_id=WORKER, error=err, retry_at=retry_at),
        )
        out = await h.execute(tenant, cmd.EnqueueDue(task_id=task_id, due_at=retry_at))
        attempt, _ = await _start(h, tenant, task_id, out.state.dispatch)
        if kind == 3:
            await h.execute(tenant, cmd.CompleteAttempt(task_id=task_id, attempt=attempt, worker_id=WORKER))
            return "retried-succeeded"
        await h.execute(
            tenant,
            cmd.FailAttempt(task_id=task_id, attempt=attempt, worker_id=WORKER, error=err, retryable=False),
        )
        return "dead-letter"
    if kind == 5:  # cancel while running
        await h.execute(tenant, cmd.CancelTask(task_id=task_id))
        await h.execute(tenant, cmd.ConfirmCancelled(task_id=task_id, attempt=attempt, worker_id=WORKER))
        return "cancelled-running"
    # kind 8, 9: fail for good, then replay; 9 then succeeds
    await h.execute(
        tenant,
        cmd.FailAttempt(task_id=task_id, attempt=attempt, worker_id=WORKER, error=err, retryable=False),
    )
    if kind == 8:
        return "dead-letter"
    out = await h.execute(tenant, cmd.ReplayTask(task_id=task_id, reason="bench"))
    attempt, _ = await _start(h, tenant, task_id, out.state.dispatch)
    await h.execute(tenant, cmd.CompleteAttempt(task_id=task_id, attempt=attempt, worker_id=WORKER))
    return "replayed-succeeded"


async def drive(h: CommandHandler, tenant: str, n: int, concurrency: int = 64) -> Counter[str]:
    """Submit `n` tasks and drive each through one of ten lifecycles; returns the paths taken."""
    now = datetime.now(UTC)
    submits = [
        cmd.SubmitTask(
            task_id=f"rb{uuid.uuid4().hex[:16]}",
            tenant=tenant,
            queue=("default", "emails", "reports")[i % 3],
            task_type=("demo.echo", "demo.flaky")[i % 2],
            now=now,
            payload=msgspec.Raw(msgspec.json.encode({"i": i})),
            max_attempts=3,
            tags=("bench",),
        )
        for i in range(n)
    ]
    outcomes = await h.submit_many(tenant, submits)
    paths: Counter[str] = Counter()
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            paths[await _lifecycle(h, tenant, submits[i].task_id, i % 10, outcomes[i].state.dispatch)] += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return paths
