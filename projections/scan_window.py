"""A page of a list whose filter no index serves: the filter is checked on a bounded window of rows.

The list's scan (`FROM … WHERE …` with the conditions an index serves, in the list's order) is read
for at most `window` rows; the page is the rows among them that pass `checks`. When fewer than a full
page passed, the window's last row (if the window was full) is where the next page begins, so a page
can be short, or empty, and still have a cursor (decision 47). Used by the task and dead-letter lists.
"""

from __future__ import annotations

from typing import Any

import asyncpg

# The rows one page examines at most when a filter is not served by an index: a rare match costs a
# few short pages instead of a scan of the whole table (about 1 s at 1,000,000 tasks).
SCAN_WINDOW = 20_000


async def windowed_page(
    conn: asyncpg.Connection | asyncpg.Pool,
    columns: str,
    scan: str,
    order: str,
    checks: list[str],
    args: list[Any],
    limit: int,
    window: int,
    key: str,
) -> tuple[list[asyncpg.Record], asyncpg.Record | None]:
    """Up to `limit` + 1 rows of `scan` + `order` among its first `window` that pass every check, and,
    when fewer than `limit` + 1 passed and the window was full, its last row's `key` columns (where
    the rest of the list begins); None otherwise. `args` are the parameters of `scan` and `checks`."""
    hit = " AND ".join(checks)
    n = len(args)
    recs = await conn.fetch(
        f"SELECT {columns} FROM (SELECT {columns}, {hit} AS hit {scan} {order} LIMIT ${n + 2}) w"
        f" WHERE hit {order} LIMIT ${n + 1}",
        *args,
        limit + 1,
        window,
    )
    if len(recs) > limit:
        return recs, None
    # The checks are selected (unused) so that every parameter keeps its type.
    end = await conn.fetchrow(
        f"SELECT {key}, {hit} AS hit {scan} {order} OFFSET ${n + 1} LIMIT 1", *args, window - 1
    )
    return recs, end
