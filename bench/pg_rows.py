"""How the projector's rows reach PostgreSQL: one write of N rows of 10 columns, three encodings.

    .venv/bin/python -m bench.pg_rows [--rows 5000] [--repeat 10]

- `rows_json`: what the projector sends (projections/batch_statement.py): one JSON array of rows,
  read by one `jsonb_array_elements` with a cast per column;
- `columns_json`: one JSON array per column, each turned into an array and zipped by `unnest`
  (the projector's encoding before decision 34);
- `asyncpg_arrays`: asyncpg's binary array parameters.

Reports, per encoding and statement, the wall time, this process's CPU (the projector's side: the
encoding) and the difference (PostgreSQL's side and the transfer). Not EXPLAIN's execution time: a
`$1::jsonb` parameter is parsed while the statement is planned, which it does not count.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from bench.common import emit, load_average, servers
from ordo.projections.batch_statement import _as_json, _column

_TYPES = ["text", "text", "text", "text", "timestamptz", "bigint", "bigint", "text", "text", "bool"]
_NAMES = [f"c{i}" for i in range(len(_TYPES))]


def _rows(n: int) -> list[list[Any]]:
    now = datetime.now(UTC)
    return [
        ["t", uuid.uuid4().hex, "default", "noop", now, i, i * 2, "running", None, i % 2 == 0]
        for i in range(n)
    ]


async def main(n: int, repeat: int) -> None:
    start_load = load_average()
    enc = msgspec.json.Encoder()
    columns = [list(c) for c in zip(*_rows(n), strict=True)]
    unnest = (
        "INSERT INTO x SELECT * FROM unnest("
        + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_TYPES))
        + ")"
    )
    rows_sql, _ = _as_json(unnest, columns)
    assert "jsonb_array_elements" in rows_sql

    def by_column(i: int, kind: str) -> str:
        return (
            f"ARRAY(SELECT e.v::{kind} FROM json_array_elements_text(${i}::json)"
            " WITH ORDINALITY AS e(v, i) ORDER BY e.i)"
        )

    cols_sql = (
        "INSERT INTO x SELECT * FROM unnest("
        + ", ".join(by_column(i + 1, t) for i, t in enumerate(_TYPES))
        + ")"
    )
    out: dict[str, Any] = {}
    with servers() as srv:
        conn = await asyncpg.connect(srv.postgres.url)
        try:
            await conn.execute(
                "CREATE TABLE x (" + ", ".join(f"{c} {t}" for c, t in zip(_NAMES, _TYPES, strict=True)) + ")"
            )
            cases = {
                "rows_json": (rows_sql, lambda: _as_json(unnest, columns)[1]),
                "columns_json": (
                    cols_sql,
                    lambda: [
                        enc.encode(_column(c, k)).decode() for c, k in zip(columns, _TYPES, strict=True)
                    ],
                ),
                "asyncpg_arrays": (unnest, lambda: columns),
            }
            for _ in range(2):  # the second round is reported (warm caches)
                for name, (sql, args_of) in cases.items():
                    await conn.execute("TRUNCATE x")
                    wall = cpu = 0.0
                    for _ in range(repeat):
                        t0, p0 = time.perf_counter(), time.process_time()
                        await conn.execute(sql, *args_of())
                        wall += time.perf_counter() - t0
                        cpu += time.process_time() - p0
                    out[name] = {
                        "wall_ms": round(wall / repeat * 1000, 2),
                        "client_cpu_ms": round(cpu / repeat * 1000, 2),
                        "server_side_ms": round((wall - cpu) / repeat * 1000, 2),
                    }
        finally:
            await conn.close()
    emit({"bench": "pg_rows", "rows": n, "columns": len(_TYPES), **out, "loadavg_start": start_load})


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=10)
    a = ap.parse_args()
    asyncio.run(main(a.rows, a.repeat))
