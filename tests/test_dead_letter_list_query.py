"""The dead-letter list's query against a seeded read model: a filter is checked on at most a window
of dead letters per page, and the pages together are exactly a plain filter of every row, newest
first."""

from __future__ import annotations

from typing import Any

import asyncpg

from ordo.infra.pg import create_pool
from ordo.projections import dead_letters
from ordo.projections.dead_letters import DeadLetterFilter
from ordo.projections.schema import migrate

_SEED = """
INSERT INTO dead_letters (tenant, task_id, queue, type, attempts, error_kind, reason, dead_at, seq)
SELECT CASE WHEN i % 89 = 0 THEN 'other' ELSE 'default' END, 't' || i,
       (ARRAY['default', 'billing', 'reports'])[1 + i % 3],
       (ARRAY['email.send', 'report.build', 'audit.export', 'demo.echo'])[1 + (i * 7) % 4], 3,
       CASE WHEN i % 50 = 0 THEN 'Timeout' ELSE 'ValueError' END, 'attempts exhausted',
       timestamptz '2026-01-01' + i * interval '1 minute', 10 * i
FROM generate_series(1, 1500) AS i
"""


async def _all_pages(pool: Any, limit: int, where: DeadLetterFilter, window: int) -> list[str]:
    out: list[str] = []
    cursor = None
    while True:
        items, cursor = await dead_letters.list_dead_letters(pool, "default", limit, cursor, where, window)
        assert len(items) <= limit
        out += [d["task_id"] for d in items]
        if cursor is None:
            return out


async def test_filtered_pages_examine_a_window_each_and_together_are_exact(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        await conn.execute("DELETE FROM dead_letters")
        await conn.execute(_SEED)
        rows = await conn.fetch(
            "SELECT task_id, queue, type, error_kind, dead_at, seq FROM dead_letters"
            " WHERE tenant = 'default' ORDER BY seq DESC"
        )
    finally:
        await conn.close()
    middle = rows[len(rows) // 2]["dead_at"]
    pool = await create_pool(database_url, max_size=2)
    try:
        cases = [
            DeadLetterFilter(),
            DeadLetterFilter(queue="billing"),
            DeadLetterFilter(task_type="audit.export", error_kind="Timeout"),
            DeadLetterFilter(error_kind="Timeout", dead_before=middle),
            DeadLetterFilter(queue="reports", dead_after=middle),
            DeadLetterFilter(queue="no-such"),
        ]
        for where in cases:
            expected = [
                r["task_id"]
                for r in rows
                if where.queue in (None, r["queue"])
                and where.task_type in (None, r["type"])
                and where.error_kind in (None, r["error_kind"])
                and (where.dead_after is None or r["dead_at"] >= where.dead_after)
                and (where.dead_before is None or r["dead_at"] < where.dead_before)
            ]
            for limit, window in ((7, 30), (50, 400), (50, 100_000)):
                assert await _all_pages(pool, limit, where, window) == expected, (where, limit, window)
        # The oldest Timeout, among the newest 100 rows: an empty first page with a cursor.
        items, cursor = await dead_letters.list_dead_letters(
            pool,
            "default",
            10,
            None,
            DeadLetterFilter(error_kind="Timeout", dead_before=rows[-60]["dead_at"]),
            100,
        )
        assert items == [] and cursor is not None
    finally:
        await pool.close()
