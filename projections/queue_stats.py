"""The `queue_stats` read model: how many tasks each queue holds in each status, kept as counters.

Counting rows of `tasks` at read time grows with the table; these counters cost one upsert per
(queue, status) touched by a batch. A task's status comes from the domain's own `evolve`, folded
over the few fields that decide it (status, paused_from, archived, and the attempt and lease that
`evolve` checks before it accepts a worker's event), which this projection keeps per task in
`queue_task_status` — it reads only its own tables, so it can be rebuilt alone. Archived
tasks leave the counts (they are hidden from lists too). Rates are read from `stats_minutely`.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import asyncpg

from ordo.domain.state import TaskState, evolve, initial
from ordo.domain.status import TaskStatus
from ordo.infra.event_store import StoredEvent
from ordo.projections.batch_statement import Write, last_param, presumed, run
from ordo.projections.memory import Memory, fetch_tasks, sort_tasks

NAME = "queue_stats"

DDL = """
CREATE TABLE IF NOT EXISTS queue_task_status (
    tenant text NOT NULL,
    task_id text NOT NULL,
    queue text NOT NULL,
    status text NOT NULL,
    paused_from text,
    archived boolean NOT NULL DEFAULT false,
    last_seq bigint NOT NULL,
    PRIMARY KEY (tenant, task_id)
);
ALTER TABLE queue_task_status ADD COLUMN IF NOT EXISTS attempt int NOT NULL DEFAULT 0;
ALTER TABLE queue_task_status ADD COLUMN IF NOT EXISTS lease_until timestamptz;
CREATE TABLE IF NOT EXISTS queue_depth (
    tenant text NOT NULL,
    queue text NOT NULL,
    status text NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (tenant, queue, status)
);
"""

STATUSES = tuple(str(s) for s in TaskStatus)


def _counted(state: TaskState) -> str | None:
    """The (queue-less) bucket a task counts in, None when it is not counted."""
    return None if not state.exists or state.archived else str(state.status)


async def apply(conn: asyncpg.Connection, events: list[StoredEvent]) -> None:
    await run(conn, await plan(conn, events, None))


_Remembered = tuple[str, TaskState, int]  # (queue, the fields that decide the status, last_seq)


def _kept(task_id: str, state: TaskState) -> TaskState:
    """The fields this projection keeps of a task: what reading its row back gives."""
    return TaskState(
        task_id=task_id,
        exists=True,
        status=state.status,
        paused_from=state.paused_from,
        archived=state.archived,
        attempt=state.attempt,
        lease_until=state.lease_until,
    )


async def plan(conn: asyncpg.Connection, events: list[StoredEvent], memory: Memory | None) -> Write | None:
    """The batch's writes; with `memory`, the statuses of earlier batches are taken from it (and this
    batch's left there) and new tasks are not looked up."""
    states: dict[tuple[str, str], _Remembered]
    states, new, unknown = sort_tasks(events, memory)
    if unknown:
        for rec in await fetch_tasks(conn, "SELECT * FROM queue_task_status", unknown):
            paused = rec["paused_from"]
            state = TaskState(
                task_id=rec["task_id"],
                exists=True,
                status=TaskStatus(rec["status"]),
                paused_from=None if paused is None else TaskStatus(paused),
                archived=rec["archived"],
                attempt=rec["attempt"],
                lease_until=rec["lease_until"],
            )
            states[(rec["tenant"], rec["task_id"])] = (rec["queue"], state, rec["last_seq"])
    delta: Counter[tuple[str, str, str]] = Counter()
    for stored in events:
        key = (stored.tenant, stored.task_id)
        queue, before, last = states.get(key, (stored.queue, initial(stored.task_id), 0))
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
    rows = sorted(((k, q, s, seq) for k, (q, s, seq) in states.items() if s.exists), key=lambda r: r[0])
    changed = sorted((k, n) for k, n in delta.items() if n != 0)
    if not rows and not changed:
        return None
    args = [
        [k[0] for k, _, _, _ in rows],
        [k[1] for k, _, _, _ in rows],
        [q for _, q, _, _ in rows],
        [str(s.status) for _, _, s, _ in rows],
        [None if s.paused_from is None else str(s.paused_from) for _, _, s, _ in rows],
        [s.archived for _, _, s, _ in rows],
        [seq for _, _, _, seq in rows],
        [s.attempt for _, _, s, _ in rows],
        [s.lease_until for _, _, s, _ in rows],
        [k in new for k, _, _, _ in rows],
        [k[0] for k, _ in changed],
        [k[1] for k, _ in changed],
        [k[2] for k, _ in changed],
        [n for _, n in changed],
    ]

    args.append(sum(1 for k, _, _, _ in rows if k in new))

    if memory is not None:
        for k, q, s, seq in rows:
            memory.put(k, (q, _kept(k[1], s), seq))
    return Write(_CTES, args, _CHECK)


_COLS = "tenant, task_id, queue, status, paused_from, archived, last_seq, attempt, lease_until"
# One statement: the tasks' statuses (those of tasks first seen in the batch only if absent: the
# count says whether that held), and the depth counters moved by the batch. No zero rows: whether a
# (queue, status) passed through zero must not depend on how the events were cut into batches, or a
# rebuild would differ from the live table; a counter the batch brings to zero is deleted instead.
_CTES = f"""
queue_stats_rows AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[],
                         $7::bigint[], $8::int[], $9::timestamptz[], $10::bool[]) AS r({_COLS}, new)
),
queue_stats_fresh AS (
    INSERT INTO queue_task_status ({_COLS}) SELECT {_COLS} FROM queue_stats_rows WHERE new
    ON CONFLICT (tenant, task_id) DO NOTHING RETURNING 1
),
queue_stats_known AS (
    INSERT INTO queue_task_status AS t ({_COLS}) SELECT {_COLS} FROM queue_stats_rows WHERE NOT new
    ON CONFLICT (tenant, task_id) DO UPDATE SET status=EXCLUDED.status,
        paused_from=EXCLUDED.paused_from, archived=EXCLUDED.archived, last_seq=EXCLUDED.last_seq,
        attempt=EXCLUDED.attempt, lease_until=EXCLUDED.lease_until
    WHERE t.last_seq < EXCLUDED.last_seq
),
queue_stats_moved AS (
    SELECT c.tenant, c.queue, c.status, c.n, d.n + c.n = 0 AS zero
    FROM unnest($11::text[], $12::text[], $13::text[], $14::bigint[]) AS c(tenant, queue, status, n)
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
# The count of rows inserted for tasks presumed new, checked against the last parameter.
_CHECK = presumed("(SELECT count(*) FROM queue_stats_fresh)", last_param(_CTES) + 1, "task status")


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
