"""The task list's query against a seeded read model: pages of a status list (one index scan per status,
merged) are exactly the pages a plain filter and sort of every row gives, in both orders."""

from __future__ import annotations

from typing import Any

import asyncpg

from ordo.infra.pg import create_pool
from ordo.projections import tasks
from ordo.projections.schema import migrate

# 3,000 tasks of one tenant (and a few of another) with statuses, types and archived flags spread
# out, and created/updated times that tie in places (the id breaks ties, as in the cursor).
_SEED = """
INSERT INTO tasks (tenant, id, type, queue, priority, status, max_attempts, timeout_s, archived,
                   created_at, updated_at, last_seq, state)
SELECT CASE WHEN i % 97 = 0 THEN 'other' ELSE 'default' END, lpad(to_hex(i * 7919 % 100003), 8, '0'),
       (ARRAY['demo.echo', 'email.send', 'report.build'])[1 + i % 3], 'default', 5,
       (ARRAY['queued', 'scheduled', 'paused', 'retrying', 'running', 'succeeded', 'failed',
              'cancelled'])[1 + (i * 31) % 8],
       3, 300.0, i % 5 = 0, timestamptz '2026-01-01' + (i / 3) * interval '1 second',
       timestamptz '2026-01-01' + ((i * 13) % 1000) * interval '1 second', i, '\\x'
FROM generate_series(1, 3000) AS i
"""


async def _all_pages(pool: Any, limit: int, **kw: Any) -> list[str]:
    out: list[str] = []
    cursor = None
    while True:
        items, cursor = await tasks.list_tasks(pool, "default", limit, cursor, **kw)
        assert len(items) <= limit
        out += [t["id"] for t in items]
        if cursor is None:
            return out


async def test_pages_of_a_status_list_match_a_plain_filter_and_sort(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        await conn.execute(_SEED)
        rows = await conn.fetch(
            "SELECT id, status, type, created_at, updated_at, archived FROM tasks WHERE tenant = 'default'"
        )
    finally:
        await conn.close()
    pool = await create_pool(database_url, max_size=2)
    try:
        cases: list[dict[str, Any]] = [
            {"statuses": ("queued", "scheduled", "paused", "retrying")},
            {"statuses": ("succeeded", "failed", "cancelled"), "task_type": "email.send"},
            {"statuses": ("failed", "failed", "cancelled"), "archived": True},
            {"statuses": ("failed",), "status": "running"},
            {"statuses": ("failed", "queued"), "sort": "-updated_at"},
        ]
        for case in cases:
            for sort in ("-created_at", "created_at") if "sort" not in case else (case["sort"],):
                kw = {**case, "sort": sort}
                wanted = set(kw["statuses"]) | ({kw["status"]} if "status" in kw else set())
                column = tasks.SORTS[sort][0]
                expected = sorted(
                    (
                        r
                        for r in rows
                        if r["status"] in wanted
                        and r["archived"] == kw.get("archived", False)
                        and kw.get("task_type", r["type"]) == r["type"]
                    ),
                    key=lambda r, c=column: (r[c], r["id"]),
                    reverse=sort.startswith("-"),
                )
                assert expected, case
                assert await _all_pages(pool, 37, **kw) == [r["id"] for r in expected], kw
        assert await _all_pages(pool, 10, statuses=("no-such", "other")) == []
    finally:
        await pool.close()
