"""The `queue_stats` read model: how many tasks each queue holds in each status, kept as counters.

Counting rows of `tasks` at read time grows with the table; these counters cost one upsert per
(queue, status) touched by a batch. A task's status comes from the domain's own `evolve`, folded
over the few fields that decide it (status, paused_from, archived, and the attempt and lease that
`evolve` checks before it accepts a worker's event), kept per task in the `rollups` projection's
marks (projections/rollups.py applies this fold with the other rollups'). Archived
tasks leave the counts (they are hidden from lists too). Rates are read from `stats_minutely`.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import asyncpg

from ordo.domain.state import TaskState, evolve, initial
from ordo.domain.status import TaskStatus
from ordo.infra.event_store import StoredEvent
from ordo.projections.batch_statement import Write
from ordo.projections.memory import TaskKey

DDL = """
CREATE TABLE IF NOT EXISTS queue_depth (
    tenant text NOT NULL,
    queue text NOT NULL,
    status text NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (tenant, queue, status)
);
"""

STATUSES = tuple(str(s) for s in TaskStatus)

# What is kept per task (its part of the marks, projections/rollups.py): its queue, the fields that
# decide its status, and the sequence of its last event applied here.
State = tuple[str, TaskState, int]


def _counted(state: TaskState) -> str | None:
    """The (queue-less) bucket a task counts in, None when it is not counted."""
    return None if not state.exists or state.archived else str(state.status)


def _kept(task_id: str, state: TaskState) -> TaskState:
    """The fields kept of a task: what reading its row back gives."""
    return TaskState(
        task_id=task_id,
        exists=True,
        status=state.status,
        paused_from=state.paused_from,
        archived=state.archived,
        attempt=state.attempt,
        lease_until=state.lease_until,
    )


def fold(events: list[StoredEvent], states: dict[TaskKey, State]) -> Write | None:
    """Fold the batch into `states` (each task's kept state, in place; tasks that do not exist
    leave it) and return the depth counters' write."""
    delta: Counter[tuple[str, str, str]] = Counter()
    for stored in events:
        key = (stored.tenant, stored.task_id)
        kept = states.get(key)
        queue, before, last = (stored.queue, initial(stored.task_id), 0) if kept is None else kept
        if stored.seq <= last:
            continue
        after = evolve(before, stored.event)
        old, new_bucket = _counted(before), _counted(after)
        if old != new_bucket:
            if old is not None:
                delta[(stored.tenant, queue, old)] -= 1
            if new_bucket is not None:
                delta[(stored.tenant, queue, new_bucket)] += 1
        states[key] = (queue, after, stored.seq)
    for key, (queue, state, seq) in list(states.items()):
        if state.exists:
            states[key] = (queue, _kept(key[1], state), seq)
        else:
            del states[key]
    changed = sorted((k, n) for k, n in delta.items() if n != 0)
    if not changed:
        return None
    args = [[k[i] for k, _ in changed] for i in range(3)] + [[n for _, n in changed]]
    return Write(_CTES, args)


# The depth counters moved by the batch. No zero rows: whether a (queue, status) passed through zero
# must not depend on how the events were cut into batches, or a rebuild would differ from the live
# table; a counter the batch brings to zero is deleted instead.
_CTES = """
queue_stats_moved AS (
    SELECT c.tenant, c.queue, c.status, c.n, d.n + c.n = 0 AS zero
    FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS c(tenant, queue, status, n)
    LEFT JOIN queue_depth d USING (tenant, queue, status)
),
queue_stats_emptied AS (
    DELETE FROM queue_depth d USING queue_stats_moved m
    WHERE m.zero AND (d.tenant, d.queue, d.status) = (m.tenant, m.queue, m.status)
),
queue_stats_counted AS (
    INSERT INTO queue_depth AS d (tenant, queue, status, n)
    SELECT tenant, queue, status, n FROM queue_stats_moved WHERE zero IS NOT TRUE
    ON CONFLICT (tenant, queue, status) DO UPDATE SET n = d.n + EXCLUDED.n
)
"""


# ---- queries -------------------------------------------------------------------------------------


async def by_status(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, queue: str | None = None
) -> dict[str, int]:
    """Tasks per status (every status present, zeros included), over one queue or all."""
    recs = await conn.fetch(
        "SELECT status, sum(n)::bigint AS n FROM queue_depth"
        " WHERE tenant=$1 AND ($2::text IS NULL OR queue=$2) GROUP BY status",
        tenant,
        queue,
    )
    out = dict.fromkeys(STATUSES, 0)
    out.update({r["status"]: int(r["n"]) for r in recs})
    return out


async def depths(conn: asyncpg.Connection | asyncpg.Pool, tenant: str) -> dict[str, dict[str, int]]:
    """{queue: {status: n}} for every queue that ever held a task."""
    recs = await conn.fetch("SELECT queue, status, n FROM queue_depth WHERE tenant=$1 ORDER BY queue", tenant)
    out: dict[str, dict[str, int]] = {}
    for r in recs:
        out.setdefault(r["queue"], dict.fromkeys(STATUSES, 0))[r["status"]] = int(r["n"])
    return out


async def rates(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, since: datetime, until: datetime
) -> dict[str, dict[str, float]]:
    """{queue: events per minute (submitted/started/succeeded/failed)} over [since, until).

    The window is chosen by the caller (an edge, which may read the clock); this reads only rows.
    """
    recs = await conn.fetch(
        "SELECT queue, sum(submitted) AS submitted, sum(started) AS started,"
        " sum(succeeded) AS succeeded, sum(failed) AS failed"
        " FROM stats_minutely WHERE tenant=$1 AND minute >= $2 AND minute < $3 GROUP BY queue",
        tenant,
        since,
        until,
    )
    span = max(1.0, (until - since).total_seconds() / 60)
    return {
        r["queue"]: {k: round(int(r[k]) / span, 3) for k in ("submitted", "started", "succeeded", "failed")}
        for r in recs
    }
