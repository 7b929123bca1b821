"""Read-your-writes: a read may wait (bounded) until the read model holds a given log sequence.

Every write answers the log sequence it reached (`seq`). A client that reads right after passes it
back as `min_seq` (or the `Ordo-Min-Seq` header); `consistency=wait` (or `Ordo-Consistency: wait`)
without a sequence waits for the newest event of the task read (or of the caller's tenant for a
list). The projector NOTIFYs each commit, so a waiting read wakes at once; past the bound it answers
503 `read-model-behind` with Retry-After rather than a stale answer the client asked not to get.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query

from ordo.gateway.problems import Problem
from ordo.gateway.services import Services
from ordo.infra import subjects as sj
from ordo.projections import schedules, tasks
from ordo.projections.runner import checkpoint


@dataclass(frozen=True)
class Consistency:
    """What a read asked for: wait or not, and the sequence to wait for (None: find it)."""

    wait: bool
    min_seq: int | None

    @classmethod
    def asked(cls, mode: str | None, min_seq: int | None) -> Consistency:
        """`mode` "wait" waits; none given waits when a sequence is (over HTTP and NATS alike)."""
        return cls(wait=mode == "wait" or (mode is None and min_seq is not None), min_seq=min_seq)

    async def ensure(
        self,
        svc: Services,
        tenant: str,
        task_id: str | None = None,
        *,
        schedule_id: str | None = None,
    ) -> None:
        """Return once the read model has caught up, or raise 503 after the configured bound. A
        schedule's read waits for the `schedules` projection, and by default for its own events."""
        if not self.wait:
            return
        target = self.min_seq
        store = svc.handler.store
        # The schedules projection's checkpoint moves with schedule events only: a schedule's read
        # asks for no more than the schedules' log holds (a client's last write may be a task's).
        schedules_end = await store.last_seq(f"{sj.SCHED_PREFIX}.>") if schedule_id is not None else None
        if target is not None:
            end = await store.last_seq(sj.all_events_filter())
            if target > max(end, schedules_end or 0):
                # Not a sequence any write answered: waiting could never succeed.
                raise Problem(422, "invalid-min-seq", f"min_seq {target} is beyond the end of the event log")
        elif schedule_id is not None:
            target = await store.last_seq(sj.schedule_events_filter(tenant, schedule_id))
        elif task_id is not None:
            target = await store.last_seq(sj.task_events_filter(tenant, task_id))
        else:
            target = await store.last_seq(sj.tenant_events_filter(tenant))
        if schedules_end is not None:
            target = min(target, schedules_end)
        projection = schedules.NAME if schedule_id is not None else tasks.NAME
        await wait_for_seq(svc, target, svc.settings.consistency_wait_s, projection)


async def wait_for_seq(svc: Services, target: int, bound_s: float, projection: str = tasks.NAME) -> None:
    deadline = time.monotonic() + bound_s
    while True:
        reached = await checkpoint(svc.pool, projection)
        if reached >= target:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise Problem(
                503,
                "read-model-behind",
                f"the read model is at sequence {reached}, not yet {target}; retry shortly",
                headers={"Retry-After": "1"},
            )
        # Woken by the projector's NOTIFY; the short cap re-reads the checkpoint in case one was missed.
        await svc.notifier.wait_beyond(max(reached, target - 1), timeout=min(left, 0.5))


async def consistency(
    consistency: Annotated[str | None, Query(pattern=r"^(wait|eventual)$")] = None,
    min_seq: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    consistency_header: Annotated[str | None, Header(alias="Ordo-Consistency")] = None,
    min_seq_header: Annotated[str | None, Header(alias="Ordo-Min-Seq")] = None,
) -> Consistency:
    """The dependency reading the consistency request from the query or headers (async: no thread
    pool hop)."""
    seq = min_seq
    if seq is None and min_seq_header is not None:
        if not (min_seq_header.isascii() and min_seq_header.isdigit()) or len(min_seq_header) > 18:
            raise Problem(400, "invalid-request", "Ordo-Min-Seq must be a non-negative integer")
        seq = int(min_seq_header)
    mode = consistency or (consistency_header or "").strip().lower() or None
    if mode not in (None, "wait", "eventual"):
        raise Problem(400, "invalid-request", "Ordo-Consistency must be 'wait' or 'eventual'")
    return Consistency.asked(mode, seq)


ReadConsistency = Annotated[Consistency, Depends(consistency)]
