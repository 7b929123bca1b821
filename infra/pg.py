"""The PostgreSQL pool and error translation at the boundary."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec


class ReadModelUnavailable(Exception):
    """PostgreSQL could not be reached or the query failed for a reason outside the caller's input."""


def _decode_json(value: str) -> Any:
    return msgspec.json.decode(value)


async def _init(conn: asyncpg.Connection) -> None:
    # jsonb in: a JSON text we already hold (no re-encoding); jsonb out: decoded with msgspec.
    await conn.set_type_codec("jsonb", encoder=str, decoder=_decode_json, schema="pg_catalog")


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=10, init=_init)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ReadModelUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ReadModelUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    await _init(conn)
    return conn
