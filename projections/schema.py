"""The read-model tables. Every row carries its tenant; nothing here depends on the wall clock.

Two tables belong to the runner rather than to one projection: `projection_checkpoints` (how far
each projection has applied the log) and `projection_errors` (the events a projection could not
apply and skipped: DESIGN Revision 2, docs/decisions.md "A poison event is recorded and skipped").
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

_log = logging.getLogger("ordo.schema")

DDL = """  -- shared by every projection
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name text PRIMARY KEY,
    last_seq bigint NOT NULL DEFAULT 0
);
-- Moved on every swap of a rebuild: a runner's memory of per-task states is cleared when it changes.
ALTER TABLE projection_checkpoints ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS projection_errors (
    projection text NOT NULL,
    seq bigint NOT NULL,
    family text NOT NULL,
    subject text NOT NULL,
    tenant text NOT NULL,
    aggregate_id text NOT NULL,
    event text NOT NULL,
    error text NOT NULL,
    at timestamptz,  -- when the event was appended (the log's time: a rebuild records the same)
    PRIMARY KEY (projection, seq)
);
ALTER TABLE projection_errors ADD COLUMN IF NOT EXISTS at timestamptz;  -- first drafts lacked it
CREATE INDEX IF NOT EXISTS projection_errors_aggregate
    ON projection_errors (tenant, family, aggregate_id);
-- A batch's statement checks its presumptions itself, so that it can run without a transaction
-- around it (projections/batch_statement.py): the count of rows it inserted for keys presumed new,
-- and the checkpoints it moved from where the runner last left them. A failed check aborts the
-- statement, and with it every write of the batch.
CREATE OR REPLACE FUNCTION ordo_presumed(inserted bigint, expected bigint, what text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF inserted IS DISTINCT FROM expected THEN
        RAISE EXCEPTION '% %(s) presumed new had a row', expected - inserted, what
            USING ERRCODE = 'P0001', HINT = 'ordo:presumed-new';
    END IF;
    RETURN inserted;
END $$;
CREATE OR REPLACE FUNCTION ordo_checkpoints_held(moved bigint, expected bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF moved IS DISTINCT FROM expected THEN
        RAISE EXCEPTION 'projection checkpoints moved since this runner last wrote them'
            USING ERRCODE = 'P0001', HINT = 'ordo:checkpoints-moved';
    END IF;
    RETURN moved;
END $$;
"""

# Read models keep JSON as `json` (the text as given), never `jsonb`: jsonb cannot hold a `\u0000`
# escape, which is valid JSON that a payload or a handler's result may carry. Tables created as jsonb
# by an older release are converted once (in whichever schema the search_path names first).
_JSON_TABLES = ("tasks", "task_events", "attempts", "dead_letters", "schedules", "schedule_events")
JSON_NOT_JSONB = f"""
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT table_name, column_name FROM information_schema.columns
             WHERE table_schema = current_schema() AND data_type = 'jsonb'
               AND table_name IN ({", ".join(f"'{t}'" for t in _JSON_TABLES)})
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN %I TYPE json USING %I::json',
                       c.table_name, c.column_name, c.column_name);
    END LOOP;
END $$;
"""

_LOCK = 7_404_001  # serialises concurrent migrations
# A migration takes table locks one statement after another (an index's ShareLock, a column's
# AccessExclusiveLock) while the live projector's transaction takes its own in another order: the
# two can deadlock. Each lock a migration waits for is given up after this long, less than
# PostgreSQL's deadlock_timeout (1 s by default), so in a cycle it is the migration that steps back
# (and tries again), never the projector's batch or a gateway's read.
MIGRATION_LOCK_WAIT_MS = 500
MIGRATION_TRIES = 30
_STEP_BACK = (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError)


async def migrate(conn: asyncpg.Connection) -> None:
    """Create every projection's tables (idempotent; concurrent callers are serialised). A
    migration that meets live writers' locks steps back and tries again (up to MIGRATION_TRIES,
    pausing 0.05 s, doubling up to 2 s); the last failure is raised."""
    pause = 0.05
    for attempt in range(1, MIGRATION_TRIES + 1):
        try:
            await _migrate_once(conn)
            return
        except _STEP_BACK as exc:
            if attempt == MIGRATION_TRIES:
                raise
            _log.info("schema migration met a live writer's lock (%s); again in %.2fs", exc, pause)
        await asyncio.sleep(pause)
        pause = min(2 * pause, 2.0)


async def _migrate_once(conn: asyncpg.Connection) -> None:
    from ordo.projections import log_identity
    from ordo.projections.registry import PROJECTIONS

    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)  # waits for another migration
        await conn.execute(f"SET LOCAL lock_timeout = {MIGRATION_LOCK_WAIT_MS}")
        await conn.execute(DDL)
        await conn.execute(log_identity.DDL)
        for projection in PROJECTIONS:
            await conn.execute(projection.ddl)
        await conn.execute(JSON_NOT_JSONB)
