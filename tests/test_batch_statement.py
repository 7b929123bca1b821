"""The projector's one statement per batch sends its rows as JSON (projections/batch_statement.py):
what lands in PostgreSQL must equal what asyncpg's own array encoding would have written, for every
column type the projections use, nulls and edge values included."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from ordo.infra.pg import connect
from ordo.projections.batch_statement import Write, _as_json, execute, statement

_COLUMNS = (
    ("t", "text"),
    ("i", "int"),
    ("b", "bigint"),
    ("d", "double precision"),
    ("f", "bool"),
    ("ts", "timestamptz"),
    ("raw", "bytea"),
    ("doc", "json"),
)
_NAMES = ", ".join(n for n, _ in _COLUMNS)
_ROWS: list[tuple[Any, ...]] = [
    ("é ü 日本 \"q\" \\ ' ; --", 1, 2**63 - 1, 1e300, True, datetime(2026, 1, 2, 3, 4, 5, 678901, UTC),
     b"\x00\xff", '{"a": [1, 2.5, "x\\u0000y"], "b": null}'),
    ("", -(2**31), -(2**63), -0.1, False, datetime(1999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=5))),
     b"", "[]"),
    (None, None, None, None, None, None, None, None),
    ("nan", 0, 0, math.nan, None, datetime(2026, 6, 1, 12, 0), b"x", '"s"'),  # a naive time is UTC
    ("inf", 7, 12345678901234567, math.inf, True, None, None, "12345678901234567890"),
    ("-inf", 8, 9, -math.inf, False, None, None, "1e300"),
    ("tiny", 9, 10, 5e-324, False, None, None, "true"),
]  # fmt: skip


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)]


def _unnest(first: int) -> str:
    return ", ".join(f"${first + i}::{kind}[]" for i, (_, kind) in enumerate(_COLUMNS))


@pytest.fixture
async def conn(database_url: str) -> Any:
    c = await connect(database_url)
    cols = ", ".join(f"{n} {kind}" for n, kind in _COLUMNS)
    await c.execute(f"CREATE TEMP TABLE sent (k int, {cols})")
    await c.execute(f"CREATE TEMP TABLE native (k int, {cols})")
    try:
        yield c
    finally:
        await c.close()


async def _table(c: asyncpg.Connection, name: str) -> list[tuple[Any, ...]]:
    # json compared as text, NaN compared as text (NaN != NaN)
    cols = ", ".join(f"{n}::text" for n, _ in _COLUMNS)
    return [tuple(r) for r in await c.fetch(f"SELECT k, {cols} FROM {name} ORDER BY k, t")]  # noqa: S608


async def test_rows_sent_as_json_equal_the_rows_asyncpg_would_send(conn: asyncpg.Connection) -> None:
    keys = list(range(len(_ROWS)))
    sql = f"s AS (INSERT INTO sent SELECT * FROM unnest($1::int[], {_unnest(2)}))"
    await execute(conn, [Write(sql, [keys, *_columns(_ROWS)])])
    native = f"INSERT INTO native SELECT * FROM unnest($1::int[], {_unnest(2)})"  # noqa: S608
    await conn.execute(native, keys, *_columns(_ROWS))
    assert await _table(conn, "sent") == await _table(conn, "native")
    assert len(await _table(conn, "sent")) == len(_ROWS)


async def test_two_writes_in_one_statement_with_scalars_and_arrays_around_the_rows(
    conn: asyncpg.Connection,
) -> None:
    """Parameters before, between and after the rows are renumbered; an array used with ANY stays
    an array; arrays of different lengths are left as arrays (unnest pads them with nulls)."""
    rows = _columns(_ROWS)
    first = Write(
        f"a AS (INSERT INTO sent SELECT $1::int, * FROM unnest({_unnest(2)}) AS r({_NAMES})"
        " WHERE t <> ALL($10::text[]))",
        [100, *rows, ["inf"]],
    )
    second = Write(
        "b AS (INSERT INTO sent (k, t, i) SELECT $1::int, * FROM unnest($2::text[], $3::int[]) AS u(t, i))",
        [200, ["p", "q", "r"], [1]],
        "(SELECT count(*) FROM sent)",
    )
    sql, args = _as_json(*statement([first, second]))
    assert "jsonb_array_elements" in sql and "unnest(ARRAY(" in sql  # rows as JSON; the uneven pair as arrays
    await execute(conn, [first, second])
    got = await conn.fetch("SELECT k, t, i FROM sent WHERE k = 200 ORDER BY t")
    assert [tuple(r) for r in got] == [(200, "p", 1), (200, "q", None), (200, "r", None)]
    assert {r["t"] for r in await conn.fetch("SELECT t FROM sent WHERE k = 100")} == {
        r[0]
        for r in _ROWS
        if r[0] not in ("inf", None)  # NULL <> ALL(...) is not true
    }


async def test_a_row_parameter_also_used_outside_its_unnest_leaves_the_statement_as_arrays(
    conn: asyncpg.Connection,
) -> None:
    write = Write(
        "c AS (INSERT INTO sent (k, t, i) SELECT 300, * FROM unnest($1::text[], $2::int[])"
        " WHERE cardinality($2::int[]) = 2)",
        [["x", "y"], [1, 2]],
    )
    sql, _ = _as_json(*statement([write]))
    assert "jsonb_array_elements" not in sql
    await execute(conn, [write])
    got = await conn.fetch("SELECT t, i FROM sent WHERE k = 300 ORDER BY t")
    assert [tuple(r) for r in got] == [("x", 1), ("y", 2)]
