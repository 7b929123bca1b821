"""The read-model tables. Every row carries its tenant; nothing here depends on the wall clock."""

from __future__ import annotations

import asyncpg

DDL = """
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name text PRIMARY KEY,
    last_seq bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tasks (
    tenant text NOT NULL,
    id text NOT NULL,
    type text NOT NULL,
    queue text NOT NULL,
    priority int NOT NULL,
    status text NOT NULL,
    attempts int NOT NULL DEFAULT 0,
    max_attempts int NOT NULL,
    timeout_s double precision NOT NULL,
    payload jsonb,
    result jsonb,
    error jsonb,
    tags text[] NOT NULL DEFAULT '{}',
    run_at timestamptz,
    worker_id text,
    lease_until timestamptz,
    progress double precision,
    archived boolean NOT NULL DEFAULT false,
    idempotency_key text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    last_seq bigint NOT NULL,
    state bytea NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS tasks_newest ON tasks (tenant, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (tenant, status);
CREATE TABLE IF NOT EXISTS task_events (
    seq bigint PRIMARY KEY,
    tenant text NOT NULL,
    task_id text NOT NULL,
    queue text NOT NULL,
    type text NOT NULL,
    attempt int,
    at timestamptz NOT NULL,
    data jsonb NOT NULL,
    meta jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS task_events_task ON task_events (tenant, task_id, seq);
"""

_LOCK = 7_404_001  # serialises concurrent migrations


async def migrate(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        await conn.execute(DDL)
