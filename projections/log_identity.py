"""Which event log the read model was built from, so that a new log is never read as the old one.

The read model keeps, beside its checkpoints, when the events stream was created (JetStream's own
`created` time, which a server keeps across restarts and a cluster shares). A log that is not that
one (a data folder whose `nats/` was lost, or moved to `--cluster 3`, which starts a new log) would
otherwise be read from the old checkpoint on: every event below it skipped, new tasks run but never
shown, and readiness green. The projector refuses such a log instead, says why in `read_model_log`
(readiness reports it) and the log, and waits; `ordo rebuild` builds the read model from the log
there is and records it.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from nats.aio.client import Client as NATS

from ordo.infra import subjects as sj

DDL = """
CREATE TABLE IF NOT EXISTS read_model_log (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    stream_created timestamptz,
    refused text
);
"""


async def current(nc: NATS) -> tuple[datetime | None, int]:
    """(created, last sequence) of the events stream as the server has it."""
    info = await nc.jetstream().stream_info(sj.EVENTS_STREAM)
    return info.created, int(info.state.last_seq)


async def mismatch(conn: asyncpg.Connection, nc: NATS) -> str | None:
    """Why the log is not the one the read model was built from, or None when it is (recording it
    the first time: a new read model, or one from before this check, whose furthest checkpoint must
    then not be past the log's end)."""
    created, last = await current(nc)
    checkpoint = int(await conn.fetchval("SELECT coalesce(max(last_seq), 0) FROM projection_checkpoints"))
    row = await conn.fetchrow("SELECT stream_created, refused FROM read_model_log")
    recorded = None if row is None else row["stream_created"]
    if recorded is None:
        if row is not None and row["refused"] is not None:
            return str(row["refused"])  # refused once: the new log growing past the checkpoint is no proof
        if checkpoint > last:
            return _why(f"the read model has applied the log up to {checkpoint}; the log ends at {last}")
        await record(conn, created)
        return None
    if created is not None and recorded != created:
        return _why(
            f"the read model was built from an event log created {recorded.isoformat()};"
            f" this one was created {created.isoformat()}"
        )
    return None


def _why(what: str) -> str:
    return (
        f"{what}: this is another event log (its data lost, or a single node moved to a cluster)."
        " Nothing is projected until `ordo rebuild` builds the read model from this log (the tasks"
        " only the old log held leave the read model), or the old log is put back"
    )


async def record(conn: asyncpg.Connection, created: datetime | None) -> None:
    """This log is the read model's: its creation time kept, any refusal cleared."""
    await conn.execute(
        "INSERT INTO read_model_log (stream_created, refused) VALUES ($1, NULL)"
        " ON CONFLICT (one) DO UPDATE SET stream_created = EXCLUDED.stream_created, refused = NULL",
        created,
    )


async def refuse(conn: asyncpg.Connection, why: str) -> None:
    await conn.execute(
        "INSERT INTO read_model_log (refused) VALUES ($1) ON CONFLICT (one) DO UPDATE SET refused = $1", why
    )


async def accepted(conn: asyncpg.Connection) -> None:
    """The log is the read model's: no refusal stands (one a projector wrote before may)."""
    await conn.execute("UPDATE read_model_log SET refused = NULL WHERE refused IS NOT NULL")


async def refusal(conn: asyncpg.Connection | asyncpg.Pool) -> str | None:
    """Why the projector refuses the log (readiness), or None."""
    value = await conn.fetchval("SELECT refused FROM read_model_log")
    return None if value is None else str(value)
