"""One statement for a batch: every projection's writes as data-modifying CTEs, and the checkpoints.

A projection plans its writes for a batch as a `Write`: CTEs over `unnest` arrays (parameters
numbered from $1, CTE names prefixed with the projection's name so they never clash), an optional
expression for the final SELECT, and a callback that receives that expression's value once the
statement ran (to check a presumption, to remember what was written). The runner joins the writes
of every projection and the checkpoint move into one statement: one round trip, whatever the number
of projections. The CTEs write disjoint tables, so the order PostgreSQL runs them in does not matter.

A projection applied alone (a rebuild's bisection of a failing batch, tests) runs its `Write` as a
statement of its own with `execute(conn, [write])`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

_PARAM = re.compile(r"\$(\d+)")


@dataclass(frozen=True)
class Write:
    ctes: str  # "name AS (...), name AS (...)"
    args: Sequence[Any]
    select: str | None = None
    done: Callable[[Any], None] | None = field(default=None, compare=False)


def _renumbered(sql: str, offset: int) -> str:
    return _PARAM.sub(lambda m: f"${int(m.group(1)) + offset}", sql) if offset else sql


def statement(writes: Sequence[Write]) -> tuple[str, list[Any]]:
    """The SQL and arguments of one statement running every write."""
    ctes: list[str] = []
    selects: list[str] = []
    args: list[Any] = []
    for write in writes:
        offset = len(args)
        ctes.append(_renumbered(write.ctes, offset))
        if write.select is not None:
            selects.append(_renumbered(write.select, offset))
        args.extend(write.args)
    return f"WITH {', '.join(ctes)} SELECT {', '.join(selects) or 'NULL'}", args


async def execute(conn: asyncpg.Connection, writes: Sequence[Write]) -> None:
    """Run `writes` as one statement, then hand each its SELECT value."""
    if not writes:
        return
    sql, args = statement(writes)
    row = await conn.fetchrow(sql, *args)
    values = iter(row.values() if row is not None else ())
    for write in writes:
        value = next(values) if write.select is not None else None
        if write.done is not None:
            write.done(value)


async def run(conn: asyncpg.Connection, write: Write | None) -> None:
    """Run one projection's write as a statement of its own."""
    if write is not None:
        await execute(conn, [write])
