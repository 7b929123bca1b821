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


def _matches(r: Any, kw: dict[str, Any]) -> bool:
    wanted = set(kw.get("statuses", ())) | ({kw["status"]} if "status" in kw else set())
    needle = kw.get("search", "").lower()
    return (
        (not wanted or r["status"] in wanted)
        and r["archived"] == kw.get("archived", False)
        and kw.get("task_type", r["type"]) == r["type"]
        and (kw.get("tag") is None or kw["tag"] in r["tags"])
        and (kw.get("updated_after") is None or r["updated_at"] >= kw["updated_after"])
        and (kw.get("created_before") is None or r["created_at"] < kw["created_before"])
        and (needle in r["id"].lower() or needle in r["type"].lower())
    )


async def test_filters_no_index_serves_examine_a_window_per_page_and_the_pages_are_still_exact(
    database_url: str,
) -> None:
    """A search, a tag, a second equality or the other column's range is checked on at most `window`
    rows per page: a page can be short or empty with a cursor, and the pages together are exactly
    the matching tasks in order."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        await conn.execute("DELETE FROM tasks")
        await conn.execute(_SEED)
        await conn.execute("UPDATE tasks SET tags = ARRAY['vip'] WHERE last_seq % 11 = 0")
        rows = await conn.fetch(
            "SELECT id, status, type, tags, created_at, updated_at, archived FROM tasks"
            " WHERE tenant = 'default'"
        )
        rare = await conn.fetchval(
            "SELECT id FROM tasks WHERE tenant = 'default' AND NOT archived ORDER BY created_at, id LIMIT 1"
        )
    finally:
        await conn.close()
    some_time = sorted(r["updated_at"] for r in rows)[len(rows) // 2]
    pool = await create_pool(database_url, max_size=2)
    try:
        cases: list[dict[str, Any]] = [
            {"search": "MAIL"},
            {"search": "a1"},
            {"search": rare[-5:]},
            {"tag": "vip"},
            {"status": "failed", "task_type": "email.send"},
            {"statuses": ("failed", "queued"), "task_type": "report.build"},
            {"statuses": ("succeeded", "cancelled"), "search": "echo", "archived": True},
            {"updated_after": some_time, "search": "o"},
            {"created_before": some_time, "tag": "vip", "sort": "-updated_at"},
            {"status": "running", "sort": "updated_at"},
        ]
        for case in cases:
            for sort in ("-created_at", "created_at") if "sort" not in case else (case["sort"],):
                kw = {**case, "sort": sort}
                column = tasks.SORTS[sort][0]
                expected = sorted(
                    (r for r in rows if _matches(r, kw)),
                    key=lambda r, c=column: (r[c], r["id"]),
                    reverse=sort.startswith("-"),
                )
                assert expected, case
                for limit, window in ((37, 45), (10, 400), (50, 10_000)):
                    got = await _all_pages(pool, limit, window=window, **kw)
                    assert got == [r["id"] for r in expected], (kw, limit, window)
        # The oldest task, searched for by its id among the newest 100 rows: nothing on this page,
        # and a cursor to the rest of the list; following it finds the task.
        items, cursor = await tasks.list_tasks(pool, "default", 20, search=rare, window=100)
        assert items == [] and cursor is not None
        assert await _all_pages(pool, 20, search=rare, window=100) == [rare]
    finally:
        await pool.close()


async def test_the_likeliest_rarest_equality_drives_the_scan(database_url: str) -> None:
    """With a window of one row, a page examines one row of the driving scan, so the number of pages
    tells which equality drove it: an active status before the type, the type before a terminal
    status."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        await conn.execute("DELETE FROM tasks")
        await conn.execute(_SEED)
        # As in a table that has run a while: most tasks succeeded.
        await conn.execute(
            "UPDATE tasks SET status = 'succeeded' WHERE status IN ('queued', 'scheduled', 'retrying')"
        )
        live = "tenant = 'default' AND NOT archived"
        by_type = await conn.fetchval(f"SELECT count(*) FROM tasks WHERE {live} AND type = 'email.send'")
        running = await conn.fetchval(f"SELECT count(*) FROM tasks WHERE {live} AND status = 'running'")
        succeeded = await conn.fetchval(f"SELECT count(*) FROM tasks WHERE {live} AND status = 'succeeded'")
    finally:
        await conn.close()
    pool = await create_pool(database_url, max_size=2)

    async def pages(**kw: Any) -> int:
        n, cursor = 0, None
        while True:
            _, cursor = await tasks.list_tasks(pool, "default", 10, cursor, window=1, **kw)
            n += 1
            if cursor is None:
                return n

    try:
        assert running < by_type < succeeded
        assert await pages(status="running", task_type="email.send") <= running + 1
        assert by_type <= await pages(status="succeeded", task_type="email.send") <= by_type + 1
    finally:
        await pool.close()
