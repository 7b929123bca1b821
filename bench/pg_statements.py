"""What PostgreSQL spent its time on during a benchmark: `pg_stat_statements`, top statements.

A diagnostic, off by default (`bench.w1_throughput --pg-statements`): the extension is loaded at the
server's start (`SETTINGS`), emptied just before the measured part (`reset`) and read right after it
(`top`). Its own cost is a few percent of PostgreSQL's time, so figures of a run with it are not
compared with runs without it.
"""

from __future__ import annotations

from typing import Any

import asyncpg

SETTINGS = (("shared_preload_libraries", "pg_stat_statements"), ("pg_stat_statements.track", "all"))


async def reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


async def top(dsn: str, n: int = 12) -> list[dict[str, Any]]:
    """The `n` statements that took the most execution time since `reset`: calls, rows, total ms and
    the first 160 characters of the statement, whitespace folded."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT calls, rows, total_exec_time, regexp_replace(query, '\\s+', ' ', 'g') AS query"
            " FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'"
            " ORDER BY total_exec_time DESC LIMIT $1",
            n,
        )
    finally:
        await conn.close()
    return [
        {
            "ms": round(r["total_exec_time"], 1),
            "calls": r["calls"],
            "rows": r["rows"],
            "query": r["query"][:160],
        }
        for r in rows
    ]
