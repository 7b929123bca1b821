"""One statement for a batch: every projection's writes as data-modifying CTEs, and the checkpoints.

A projection plans its writes for a batch as a `Write`: CTEs over `unnest` arrays (parameters
numbered from $1, CTE names prefixed with the projection's name so they never clash) and an
optional expression for the final SELECT, which checks a presumption inside the statement
(`presumed`) or notifies listeners. The runner joins the writes
of every projection and the checkpoint move into one statement: one round trip, whatever the number
of projections. The CTEs write disjoint tables, so the order PostgreSQL runs them in does not matter.

A projection applied alone (a rebuild's bisection of a failing batch, tests) runs its `Write` as a
statement of its own with `execute(conn, [write])`.

Array parameters travel as JSON text (`_as_json`); the SQL stays written with arrays. asyncpg encodes
an array parameter element by element (≈ 1.1 µs of the projector's CPU per element, ≈ 10 µs per
task-event row); msgspec encodes the same values as JSON in a tenth of that, and the parsing moves
to PostgreSQL's process, where it is done once per row:
  - `unnest($a::T1[], ..., $k::Tk[])` over parameters that are all lists of one length (the rows of
    a write) becomes one parameter, a JSON array of rows, read by one `jsonb_array_elements` with a
    cast per column. PostgreSQL parses the rows once: 5,000 rows of 10 columns take 17-18 ms on its
    side against 25-33 ms with one JSON array per column, for 1.5 ms more of the projector's CPU
    (4.1-4.4 ms against 2.6-3.0 ms); asyncpg's binary arrays take 15-18 ms there but 26 ms of the
    projector's CPU (`python -m bench.pg_rows`).
  - any other `$n::T[]` becomes an array built from one JSON array.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import asyncpg
import msgspec

from ordo.projections.memory import NotNew

_PARAM = re.compile(r"\$(\d+)")
_ARRAY_PARAM = re.compile(r"\$(\d+)::([a-z][a-z ]*)\[\]")
_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class Write:
    ctes: str  # "name AS (...), name AS (...)"
    args: Sequence[Any]
    select: str | None = None


def _renumbered(sql: str, offset: int) -> str:
    return _PARAM.sub(lambda m: f"${int(m.group(1)) + offset}", sql) if offset else sql


# The SQL of a statement depends only on its writes' SQL texts and argument counts (module
# constants in the projections), and its JSON rewriting only on which arguments are lists and
# which row groups have equal lengths: both are worked out once per shape and cached. At a few
# events per batch the text work was a quarter of the projector's CPU.
_Shape = tuple[tuple[str, str | None, int], ...]


def statement(writes: Sequence[Write]) -> tuple[str, list[Any]]:
    """The SQL and arguments of one statement running every write."""
    args: list[Any] = []
    for write in writes:
        args.extend(write.args)
    return _joined(tuple((w.ctes, w.select, len(w.args)) for w in writes)), args


def combined(writes: Sequence[Write]) -> Write:
    """One write doing what `writes` do (a projection that owns several read models plans them as
    one): their CTEs renumbered after each other, their SELECT expressions joined."""
    args: list[Any] = []
    for write in writes:
        args.extend(write.args)
    ctes, select = _combined(tuple((w.ctes, w.select, len(w.args)) for w in writes))
    return Write(ctes, args, select)


@functools.lru_cache(maxsize=512)
def _combined(shape: _Shape) -> tuple[str, str | None]:
    ctes: list[str] = []
    selects: list[str] = []
    offset = 0
    for sql, select, count in shape:
        ctes.append(_renumbered(sql, offset))
        if select is not None:
            selects.append(_renumbered(select, offset))
        offset += count
    return ", ".join(ctes), ", ".join(selects) or None


@functools.lru_cache(maxsize=512)
def _joined(shape: _Shape) -> str:
    ctes, select = _combined(shape)
    return f"WITH {ctes} SELECT {select or 'NULL'}"


def _element(value: Any, kind: str) -> Any:
    """One array element as JSON can carry it for a `::kind` cast of its text."""
    if value is None:
        return None
    if kind == "bytea":
        return "\\x" + bytes(value).hex()
    if kind == "double precision" and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if kind == "timestamptz" and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # as asyncpg sends a naive one: UTC, whatever the session's zone
    return value


_UNNEST = re.compile(
    r"unnest\(\s*(\$\d+::[a-z][a-z ]*\[\](?:\s*,\s*\$\d+::[a-z][a-z ]*\[\])*)\s*\)(\s+AS\s+\w+)?"
)


def _column(values: list[Any], kind: str) -> list[Any]:
    """`_element` of each value (written out per kind: this runs for every value of every row)."""
    if kind == "timestamptz":
        return [v if v is None or v.tzinfo is not None else _element(v, kind) for v in values]
    if kind == "double precision":
        return [v if v is None or math.isfinite(v) else _element(v, kind) for v in values]
    if kind == "bytea":
        return [None if v is None else "\\x" + bytes(v).hex() for v in values]
    return values


Columns = tuple[tuple[int, str], ...]  # (parameter number, element type) of each column of a row group


@functools.lru_cache(maxsize=512)
def _groups(sql: str) -> tuple[Columns, ...]:
    """The `unnest($a::T[], ...)` parameter groups of `sql`, in order."""
    return tuple(
        tuple((int(n), kind) for n, kind in _ARRAY_PARAM.findall(m.group(1))) for m in _UNNEST.finditer(sql)
    )


# How each argument of the rewritten statement is made from the original ones: ("plain", n) passes
# argument n; ("rows", columns) is one JSON array of rows; ("array", n, kind) one JSON array.
_Step = tuple[Any, ...]


@functools.lru_cache(maxsize=1024)
def _compiled(sql: str, rows_ok: tuple[bool, ...], lists: tuple[bool, ...]) -> tuple[str, tuple[_Step, ...]]:
    """The rewritten SQL and the steps making its arguments, for `sql` whose row groups are
    usable or not (`rows_ok`, equal-length lists) and whose arguments are lists or not (`lists`)."""
    usable = iter(rows_ok)
    groups: dict[int, tuple[Columns, str]] = {}  # first parameter -> columns, SQL
    grouped: set[int] = set()

    def rows(m: re.Match[str]) -> str:
        params = tuple((int(n), kind) for n, kind in _ARRAY_PARAM.findall(m.group(1)))
        numbers = {n for n, _ in params}
        if not next(usable) or grouped & numbers:
            return m.group(0)
        first = params[0][0]
        casts = ", ".join(f"(e->>{i})::{kind}" for i, (_, kind) in enumerate(params))
        alias = m.group(2) or f" AS _rows{first}"
        groups[first] = (params, f"(SELECT {casts} FROM jsonb_array_elements(\0::jsonb) AS e){alias}")
        grouped.update(numbers)
        return f"\0{first}\0"

    rewritten = _UNNEST.sub(rows, sql)
    if groups and not any(int(n) in grouped for n in _PARAM.findall(rewritten)):
        sql = rewritten
    else:  # nothing to send as rows, or a row parameter is also used elsewhere
        groups, grouped = {}, set()
    renumbered: dict[int, int] = {}
    steps: list[_Step] = []
    for n in range(1, len(lists) + 1):
        if n in groups:
            steps.append(("rows", groups[n][0]))
        elif n in grouped:
            continue
        else:
            steps.append(("plain", n))
        renumbered[n] = len(steps)
    sql = _PARAM.sub(lambda m: f"${renumbered[int(m.group(1))]}", sql)
    for first, (_, text) in groups.items():
        sql = sql.replace(f"\0{first}\0", text.replace("\0", f"${renumbered[first]}"))
    # Every other `$n::T[]` parameter: one JSON array, unless it is not given a list.
    kinds: dict[int, str] = {}
    for m in _ARRAY_PARAM.finditer(sql):
        kinds.setdefault(int(m.group(1)), m.group(2))
    originals = {out: step[1] for out, step in enumerate(steps, 1) if step[0] == "plain"}
    if any(not lists[originals[n] - 1] for n in kinds if n in originals):
        return sql, tuple(steps)  # a parameter used otherwise too: leave those arrays as written
    for n, kind in kinds.items():
        if n in originals:
            steps[n - 1] = ("array", originals[n], kind)

    def array(m: re.Match[str]) -> str:
        n, kind = m.group(1), m.group(2)
        return (
            f"ARRAY(SELECT e.v::{kind} FROM json_array_elements_text(${n}::json)"
            " WITH ORDINALITY AS e(v, i) ORDER BY e.i)"
        )

    return _ARRAY_PARAM.sub(array, sql), tuple(steps)


def _rows_ok(groups: tuple[Columns, ...], args: Sequence[Any]) -> tuple[bool, ...]:
    out = []
    for columns in groups:
        values = [args[n - 1] for n, _ in columns]
        first = values[0]
        out.append(all(isinstance(v, list) and len(v) == len(first) for v in values))
    return tuple(out)


def _as_json(sql: str, args: list[Any]) -> tuple[str, list[Any]]:
    """`sql` and `args` with the rows of every `unnest` of parameter arrays of one length sent as
    one JSON array of rows (read back by one `jsonb_array_elements`), and every other list given for
    a `$n::T[]` parameter as one JSON array."""
    text, steps = _compiled(sql, _rows_ok(_groups(sql), args), tuple(isinstance(a, list) for a in args))
    out: list[Any] = []
    for step in steps:
        if step[0] == "plain":
            out.append(args[step[1] - 1])
        elif step[0] == "rows":
            columns = [_column(args[n - 1], kind) for n, kind in step[1]]
            out.append(_json.encode(list(zip(*columns, strict=True))).decode())
        else:
            out.append(_json.encode(_column(args[step[1] - 1], step[2])).decode())
    return text, out


class CheckpointsMoved(Exception):
    """A statement that moves checkpoints from where the runner last left them found them elsewhere
    (another writer, a rebuild's swap): nothing of it was written."""


def presumed(select: str, expected: int, what: str) -> str:
    """A write's SELECT expression `select` (the count of rows inserted for keys presumed new),
    checked in the statement against parameter number `expected`: a mismatch aborts the statement
    and `execute` raises `NotNew`."""
    return f"ordo_presumed({select}, ${expected}::bigint, '{what}')"


def last_param(sql: str) -> int:
    """The highest parameter number in `sql`."""
    return max((int(n) for n in _PARAM.findall(sql)), default=0)


async def execute(conn: asyncpg.Connection, writes: Sequence[Write]) -> None:
    """Run `writes` as one statement. A presumption the statement checked (`presumed`,
    projections/schema.py) that did not hold raises `NotNew`, checkpoints found moved
    `CheckpointsMoved`; either way the statement wrote nothing."""
    if not writes:
        return
    sql, args = _as_json(*statement(writes))
    try:
        await conn.fetchrow(sql, *args)
    except asyncpg.RaiseError as exc:
        hint = getattr(exc, "hint", None)
        if hint == "ordo:presumed-new":
            raise NotNew(exc.args[0] if exc.args else str(exc)) from exc
        if hint == "ordo:checkpoints-moved":
            raise CheckpointsMoved(str(exc)) from exc
        raise


async def run(conn: asyncpg.Connection, write: Write | None) -> None:
    """Run one projection's write as a statement of its own."""
    if write is not None:
        await execute(conn, [write])
