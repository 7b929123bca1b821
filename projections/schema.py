"""The read-model tables. Every row carries its tenant; nothing here depends on the wall clock."""

from __future__ import annotations

import asyncpg

DDL = """  -- shared by every projection
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name text PRIMARY KEY,
    last_seq bigint NOT NULL DEFAULT 0
);
"""

_LOCK = 7_404_001  # serialises concurrent migrations


async def migrate(conn: asyncpg.Connection) -> None:
    """Create every projection's tables (idempotent; concurrent callers are serialised)."""
    from ordo.projections.registry import PROJECTIONS

    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        await conn.execute(DDL)
        for projection in PROJECTIONS:
            await conn.execute(projection.ddl)
