"""Read-side benchmark: the task list, its filters, one task and a 500-event timeline with 1,000,000
tasks in the `tasks` read model.

Run: `.venv/bin/python -m bench.read_1m [--tasks 1000000] [--repeat 50]`

This measures the READ side only. It does not go through the log: it creates the schema
(`projections.schema.migrate`) in an embedded PostgreSQL and seeds the read-model tables directly in
SQL (`INSERT ... SELECT FROM generate_series`), as a projector would have left them, then starts a
projector and a gateway (auth off) as processes and times HTTP reads on loopback.

The seeded data (`seed_sql`, shared with `bench.ui_render --seed sql`), one tenant:
- `tasks`: N rows, created_at spread evenly over the last 30 days, ids time-ordered like
  `infra.ids.new_task_id`. The newest 3 % are unfinished (queued 50 %, scheduled 20 %, running 15 %,
  retrying, paused, cancelling 5 % each); the rest succeeded 90 %, failed 6 %, cancelled 4 %. Types:
  demo.echo 40 %, email.send 25 %, report.build 15 %, image.resize 10 %, demo.sleep 5 %,
  demo.flaky 4 %, billing.invoice 0.9 %, audit.export 0.1 %; the queue follows the type (email,
  reports, billing, default). Tags: none 60 %, {eu} 25 %, {billing} 10 %, {eu,billing} 5 %.
  A fifth of the finished tasks of the older half are archived.
- `task_events`: one `submitted` event per task (seq = the task's last_seq), so the table has the
  size order of a real one; and, with `timeline_events`, one more task (type demo.long, scheduled a
  day ahead) with that many events: submitted, scheduled, then paused/resumed in turn.
The `state` column (the projector's fold, never read by queries) holds a JSON TaskState of the row.

For each query it prints the client-measured time over loopback (`http_ms`: the server's time plus
loopback, an upper bound of the server time), the time of the read function the route calls, run
here on a pool (`sql_ms`: SQL + decoding), and the node types of `EXPLAIN (ANALYZE, BUFFERS)` of
every statement that function issues; `seq_scans` lists any sequential scan of `tasks` or
`task_events` (there should be none). Then one JSON line (bench.common.emit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import msgspec  # noqa: E402

from bench.common import Components, emit, load_average, servers, summary  # noqa: E402
from ordo.domain import events as ev  # noqa: E402
from ordo.domain.state import TaskState, TaskStatus  # noqa: E402
from ordo.infra.pg import create_pool  # noqa: E402
from ordo.projections import task_events, tasks  # noqa: E402
from ordo.projections.json_text import json_text  # noqa: E402
from ordo.projections.schema import migrate  # noqa: E402

DAYS = 30
TIMELINE_TYPE = "demo.long"

# Every column derived from generate_series and random(): s -> t (status, type, tags, id) -> u (queue).
_SEED_TASKS = """
INSERT INTO tasks (tenant, id, type, queue, priority, status, attempts, max_attempts, timeout_s,
                   payload, result, error, tags, run_at, worker_id, lease_until, progress, archived,
                   idempotency_key, created_at, updated_at, started_at, finished_at, last_seq, state)
SELECT $1, id, type, queue, priority, status, attempts, 3, 300.0, payload, result, error, tags, run_at,
       worker_id, lease_until, NULL, archived, NULL, at, updated_at, started_at, finished_at, $5 + i - 1,
       convert_to(json_build_object(
           'task_id', id, 'exists', true, 'tenant', $1::text, 'queue', queue, 'task_type', type,
           'priority', priority, 'payload', payload, 'tags', tags, 'status', status,
           'attempt', attempts, 'run_at', run_at, 'worker_id', worker_id, 'lease_until', lease_until,
           'result', result, 'error', error, 'archived', archived, 'version', 1)::text, 'UTF8')
FROM (
    SELECT u.*,
        CASE WHEN status = 'failed' THEN 3 WHEN status = 'succeeded' THEN 1 + (r4 < 0.05)::int
             WHEN status IN ('running', 'retrying', 'cancelling') THEN 1 ELSE 0 END AS attempts,
        json_build_object('i', i, 'to', 'user' || i || '@example.com') AS payload,
        CASE WHEN status = 'succeeded' THEN json_build_object('ok', true, 'ms', (r4 * 1000)::int) END
            AS result,
        CASE WHEN status = 'failed'
             THEN json_build_object('kind', 'handler', 'message', 'ConnectionResetError: peer reset') END
            AS error,
        CASE WHEN status = 'scheduled' THEN at + interval '1 day' END AS run_at,
        CASE WHEN status IN ('running', 'cancelling') THEN 'worker-' || (i % 8) END AS worker_id,
        CASE WHEN status IN ('running', 'cancelling') THEN at + interval '5 minutes' END AS lease_until,
        status IN ('succeeded', 'failed', 'cancelled') AND i < $2 / 2 AND r4 < 0.2 AS archived,
        at + r4 * interval '10 minutes' AS updated_at,
        CASE WHEN status NOT IN ('queued', 'scheduled', 'paused') THEN at + interval '1 second' END
            AS started_at,
        CASE WHEN status IN ('succeeded', 'failed', 'cancelled')
             THEN at + interval '2 seconds' + r4 * interval '5 minutes' END AS finished_at
    FROM (
        SELECT t.*, i % 10 AS priority,
            CASE type WHEN 'email.send' THEN 'email' WHEN 'report.build' THEN 'reports'
                      WHEN 'audit.export' THEN 'reports' WHEN 'billing.invoice' THEN 'billing'
                      ELSE 'default' END AS queue
        FROM (
            SELECT i, at, r4,
                CASE WHEN i > $2 * 0.97 THEN
                    CASE WHEN r1 < 0.5 THEN 'queued' WHEN r1 < 0.7 THEN 'scheduled'
                         WHEN r1 < 0.85 THEN 'running' WHEN r1 < 0.9 THEN 'retrying'
                         WHEN r1 < 0.95 THEN 'paused' ELSE 'cancelling' END
                ELSE CASE WHEN r1 < 0.9 THEN 'succeeded' WHEN r1 < 0.96 THEN 'failed'
                          ELSE 'cancelled' END
                END AS status,
                CASE WHEN r2 < 0.40 THEN 'demo.echo' WHEN r2 < 0.65 THEN 'email.send'
                     WHEN r2 < 0.80 THEN 'report.build' WHEN r2 < 0.90 THEN 'image.resize'
                     WHEN r2 < 0.95 THEN 'demo.sleep' WHEN r2 < 0.99 THEN 'demo.flaky'
                     WHEN r2 < 0.999 THEN 'billing.invoice' ELSE 'audit.export' END AS type,
                CASE WHEN r3 < 0.10 THEN '{billing}'::text[] WHEN r3 < 0.15 THEN '{eu,billing}'::text[]
                     WHEN r3 < 0.40 THEN '{eu}'::text[] ELSE '{}'::text[] END AS tags,
                lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0') || '7'
                    || substr(md5(i::text), 1, 19) AS id
            FROM (
                SELECT i, $3::timestamptz + (i - 1) * $4::interval AS at,
                       random() AS r1, random() AS r2, random() AS r3, random() AS r4
                FROM generate_series(1, $2::int) AS i
            ) s
        ) t
    ) u
) v
"""

_SEED_EVENTS = """
INSERT INTO task_events (seq, tenant, task_id, queue, type, attempt, at, data, meta)
SELECT last_seq, tenant, id, queue, 'submitted', NULL, created_at,
       json_build_object('event', 'submitted', 'task_type', type, 'queue', queue, 'tenant', tenant,
                         'priority', priority, 'payload', payload, 'tags', tags),
       '{}'::json
FROM tasks WHERE tenant = $1 AND last_seq BETWEEN $2 AND $3
"""


@dataclass
class Seeded:
    tenant: str
    tasks: int
    last_seq: int  # the highest seq in the seeded tables
    timeline_task: str | None
    seconds: float


async def seed_sql(
    conn: asyncpg.Connection,
    tenant: str,
    n_tasks: int,
    timeline_events: int = 0,
    *,
    first_seq: int = 1,
    vacuum: bool = True,
) -> Seeded:
    """Seed `tasks` and `task_events` of `tenant` directly (seqs first_seq..first_seq+n_tasks-1,
    then the timeline task's); the schema must exist. Ends with VACUUM ANALYZE (as autovacuum
    would, eventually)."""
    t0 = time.perf_counter()
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / max(1, n_tasks)
    await conn.execute("SET synchronous_commit = off")
    await conn.execute("SELECT setseed(0.42)")
    # The secondary indexes (as the projections' DDL made them) are dropped during the bulk insert
    # and built again after it: a sort-built index takes seconds, a million insertions minutes.
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        " AND tablename IN ('tasks', 'task_events') AND indexname NOT LIKE '%\\_pkey'"
    )
    for rec in indexes:
        await conn.execute(f'DROP INDEX "{rec["indexname"]}"')
    await conn.execute(_SEED_TASKS, tenant, n_tasks, start, step, first_seq)
    last = first_seq + n_tasks - 1
    await conn.execute(_SEED_EVENTS, tenant, first_seq, last)
    await conn.execute("SET maintenance_work_mem = '256MB'")
    for rec in indexes:
        await conn.execute(rec["indexdef"])
    timeline_task = None
    if timeline_events > 0:
        timeline_task = await _seed_timeline(conn, tenant, last, timeline_events, now)
        last += timeline_events
    if vacuum:
        await conn.execute("VACUUM (ANALYZE) tasks, task_events")
    return Seeded(tenant, n_tasks, last, timeline_task, time.perf_counter() - t0)


async def _seed_timeline(conn: asyncpg.Connection, tenant: str, after_seq: int, n: int, now: datetime) -> str:
    """One delayed task with `n` events (seqs after_seq+1..after_seq+n), as the log would have them."""
    ms = int(now.timestamp() * 1000)
    task_id = f"{ms:012x}7{'d' * 19}"
    run_at = now + timedelta(days=1)
    payload = msgspec.Raw(b'{"big": true}')
    evs: list[ev.Event] = [
        ev.Submitted(task_type=TIMELINE_TYPE, queue="default", tenant=tenant, payload=payload),
        ev.Scheduled(run_at=run_at),
    ]
    while len(evs) < n:
        evs.append(ev.Paused() if len(evs) % 2 == 0 else ev.Resumed())
    status = TaskStatus.PAUSED if isinstance(evs[-1], ev.Paused) else TaskStatus.SCHEDULED
    seqs = list(range(after_seq + 1, after_seq + n + 1))
    ats = [now + timedelta(milliseconds=i) for i in range(n)]
    await conn.execute(
        "INSERT INTO task_events (seq, tenant, task_id, queue, type, attempt, at, data, meta)"
        " SELECT s, $2, $3, 'default', t, NULL, a, d, '{}'::json"
        " FROM unnest($1::bigint[], $4::text[], $5::timestamptz[], $6::json[]) AS x(s, t, a, d)",
        seqs,
        tenant,
        task_id,
        [type(e).__struct_config__.tag for e in evs],
        ats,
        [json_text(ev.encode_event(e)) for e in evs],
    )
    state = TaskState(
        task_id=task_id, exists=True, tenant=tenant, queue="default", task_type=TIMELINE_TYPE,
        payload=payload, status=status, run_at=run_at, version=n,
        paused_from=TaskStatus.SCHEDULED if status is TaskStatus.PAUSED else None,
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO tasks (tenant, id, type, queue, priority, status, attempts, max_attempts, timeout_s,"
        " payload, tags, run_at, archived, created_at, updated_at, last_seq, state)"
        " VALUES ($1, $2, $3, 'default', 5, $4, 0, 3, 300.0, $10, '{}', $5, false, $6, $7, $8, $9)",
        tenant,
        task_id,
        TIMELINE_TYPE,
        str(status),
        run_at,
        ats[0],
        ats[-1],
        seqs[-1],
        msgspec.json.encode(state),
        '{"big": true}',
    )
    return task_id


# ---- measuring --------------------------------------------------------------------------------


class ExplainingConn:
    """Stands in for a connection: runs `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)` of each statement
    before running it, and keeps the plans."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.plans: list[tuple[str, dict[str, Any]]] = []

    async def _explain(self, query: str, args: tuple[Any, ...]) -> None:
        plan = await self.conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}", *args)
        self.plans.append((query, (json.loads(plan) if isinstance(plan, str) else plan)[0]))

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        await self._explain(query, args)
        return list(await self.conn.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        await self._explain(query, args)
        return await self.conn.fetchrow(query, *args)


def _nodes(node: dict[str, Any]) -> list[str]:
    label = node["Node Type"]
    if "Index Name" in node:
        label += f" {node['Index Name']}"
    elif "Relation Name" in node:
        label += f" {node['Relation Name']}"
    out = [label]
    for child in node.get("Plans", ()):
        out += _nodes(child)
    return out


def _seq_scans(node: dict[str, Any]) -> list[str]:
    found = []
    if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in ("tasks", "task_events"):
        found.append(node["Relation Name"])
    for child in node.get("Plans", ()):
        found += _seq_scans(child)
    return found


def plan_summary(plans: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for query, plan in plans:
        root = plan["Plan"]
        table = next((t for t in ("task_events", "projection_errors") if f"FROM {t}" in query), "tasks")
        out.append(
            {
                "table": table,
                "nodes": _nodes(root),
                "exec_ms": round(plan["Execution Time"], 2),
                "rows": root.get("Actual Rows"),
                "buffers_hit": root.get("Shared Hit Blocks"),
                "buffers_read": root.get("Shared Read Blocks"),
            }
        )
    return out


def _list_kwargs(params: dict[str, str]) -> dict[str, Any]:
    """The arguments the gateway's GET /v1/tasks passes to projections.tasks.list_tasks."""
    kw: dict[str, Any] = {"limit": int(params.get("limit", "50")), "cursor": params.get("cursor")}
    if "status" in params:
        kw["statuses"] = tuple(params["status"].split(","))
    for name, arg in (("type", "task_type"), ("queue", "queue"), ("tag", "tag"), ("q", "search")):
        if name in params:
            kw[arg] = params[name]
    if "sort" in params:
        kw["sort"] = params["sort"]
    if params.get("archived") == "true":
        kw["archived"] = True
    return kw


async def _time(fn: Any, repeat: int) -> list[float]:
    for _ in range(3):  # warm the caches and the connection's prepared statements
        await fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def measure(
    http: httpx.AsyncClient, pool: asyncpg.Pool, seeded: Seeded, repeat: int
) -> dict[str, dict[str, Any]]:
    tenant = seeded.tenant
    args_events = seeded.last_seq - seeded.tasks
    first = (await http.get("/v1/tasks", params={"limit": "50"})).json()
    some_id = first["items"][25]["id"]
    lists: dict[str, dict[str, str]] = {
        "list_first_page": {},
        "list_next_page": {"cursor": first["next_cursor"]},
        "status_failed": {"status": "failed"},
        "status_paused": {"status": "paused"},
        "status_waiting": {"status": "scheduled,queued,paused,retrying"},
        "status_finished": {"status": "succeeded,failed,cancelled"},
        "type_email_send": {"type": "email.send"},
        "type_audit_export": {"type": "audit.export"},
        "queue_reports": {"queue": "reports"},
        "queue_billing_failed": {"queue": "billing", "status": "failed"},
        "tag_billing": {"tag": "billing"},
        "tag_nothing": {"tag": "no-such-tag"},
        "type_and_queue_nothing": {"type": "audit.export", "queue": "no-such-queue"},
        "search_type_word": {"q": "invoice"},
        "search_id": {"q": some_id},
        "search_nothing": {"q": "no-such-task"},
        "sort_updated": {"sort": "-updated_at"},
        "sort_oldest": {"sort": "created_at"},
        "archived": {"archived": "true"},
    }
    results: dict[str, dict[str, Any]] = {}

    async def one(
        name: str, path: str, params: dict[str, str], call: Any, explain: Any, check: Any = None
    ) -> None:
        async def via_http() -> None:
            r = await http.get(path, params=params)
            r.raise_for_status()
            if check is not None:
                check(r.json())

        http_ms = await _time(via_http, repeat)
        sql_ms = await _time(call, repeat)
        async with pool.acquire() as conn:
            xc = ExplainingConn(conn)
            await explain(xc)
        plans = plan_summary(xc.plans)
        seq = sorted({s for _, p in xc.plans for s in _seq_scans(p["Plan"])})
        results[name] = {
            "http_ms": summary(http_ms, 50, 99),
            "sql_ms": summary(sql_ms, 50, 99),
            "plans": plans,
            "seq_scans": seq,
        }
        h, q = results[name]["http_ms"], results[name]["sql_ms"]
        print(
            f"{name:22} http p50 {h['p50']:7.2f} p99 {h['p99']:7.2f} | sql p50 {q['p50']:7.2f} ms | "
            + " ; ".join(f"{p['table']}: {' > '.join(p['nodes'])} ({p['exec_ms']} ms)" for p in plans)
            + (f"  SEQ SCAN of {seq}" if seq else ""),
            file=sys.stderr,
            flush=True,
        )

    for name, params in lists.items():
        kw = _list_kwargs(params)

        async def call(kw: dict[str, Any] = kw) -> None:
            await tasks.list_tasks(pool, tenant, **kw)

        async def explain(xc: ExplainingConn, kw: dict[str, Any] = kw) -> None:
            await tasks.list_tasks(xc, tenant, **kw)  # type: ignore[arg-type]

        await one(name, "/v1/tasks", {"limit": "50", **params}, call, explain)

    async def get_one() -> None:
        await tasks.get_task(pool, tenant, some_id)

    async def explain_get(xc: ExplainingConn) -> None:
        await tasks.get_task(xc, tenant, some_id)  # type: ignore[arg-type]

    await one("get_task", f"/v1/tasks/{some_id}", {}, get_one, explain_get)
    if seeded.timeline_task is not None:
        tid = seeded.timeline_task

        async def timeline() -> None:
            await task_events.timeline(pool, tenant, tid)

        async def explain_timeline(xc: ExplainingConn) -> None:
            await task_events.timeline(xc, tenant, tid)  # type: ignore[arg-type]

        def has_all(body: dict[str, Any]) -> None:
            assert len(body["events"]) == args_events, len(body["events"])

        await one("timeline_500_events", f"/v1/tasks/{tid}/events", {}, timeline, explain_timeline, has_all)
    return results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_start = load_average()
    with servers() as srv:
        conn = await asyncpg.connect(srv.postgres.url)
        try:
            await migrate(conn)
            seeded = await seed_sql(conn, "default", args.tasks, args.events)
            size = await conn.fetchrow(
                "SELECT pg_total_relation_size('tasks') AS tasks,"
                " pg_total_relation_size('task_events') AS ev,"
                " (SELECT count(*) FROM pg_indexes WHERE tablename = 'tasks') AS tasks_indexes"
            )
        finally:
            await conn.close()
        print(f"seeded {seeded.tasks:,} tasks in {seeded.seconds:.1f} s", file=sys.stderr, flush=True)
        comps = Components(srv.env)
        pool = await create_pool(srv.postgres.url, min_size=1, max_size=4)
        try:
            comps.start("projector", "projector")
            port = comps.start_gateway()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                results = await measure(http, pool, seeded, args.repeat)
        finally:
            await pool.close()
            comps.stop()
    worst = max(
        (r["http_ms"]["p50"] or 0.0, name) for name, r in results.items() if name != "timeline_500_events"
    )
    return {
        "bench": "read_1m",
        "tasks": seeded.tasks,
        "timeline_events": args.events,
        "seed_s": round(seeded.seconds, 1),
        "tasks_table_mb": round(size["tasks"] / 2**20),
        "task_events_table_mb": round(size["ev"] / 2**20),
        "tasks_indexes": size["tasks_indexes"],
        "repeat": args.repeat,
        "loadavg_start": load_start,
        "worst_list_http_p50_ms": {"query": worst[1], "ms": worst[0]},
        "seq_scans": {name: r["seq_scans"] for name, r in results.items() if r["seq_scans"]},
        "queries": {
            name: {
                "http_ms": r["http_ms"],
                "sql_ms": r["sql_ms"],
                "plans": [" > ".join(p["nodes"]) for p in r["plans"]],
            }
            for name, r in results.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=500, help="events of the timeline task")
    parser.add_argument("--repeat", type=int, default=50, help="timed runs per query")
    emit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
