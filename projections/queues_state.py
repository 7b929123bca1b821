"""The `queue_controls` read model: whether a queue is paused, from its queue events (no clock)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ordo.domain.queue_control import AnyQueueEvent, QueuePaused, decode_queue_event
from ordo.infra import subjects as sj

NAME = "queue_controls"

DDL = """
CREATE TABLE IF NOT EXISTS queue_controls (
    tenant text NOT NULL,
    queue text NOT NULL,
    paused boolean NOT NULL,
    reason text NOT NULL DEFAULT '',
    changed_at timestamptz NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (tenant, queue)
);
"""


@dataclass(frozen=True)
class QueueRecord:
    seq: int
    tenant: str
    queue: str
    event: AnyQueueEvent
    stored_at: datetime


def decode(subject: str, data: bytes, headers: dict[str, str], seq: int, stored_at: datetime) -> QueueRecord:
    """The runner's decoder for the `queue` family."""
    tenant, queue, _ = sj.parse_queue_subject(subject)
    return QueueRecord(seq, tenant, queue, decode_queue_event(data), stored_at)


_UPSERT = """
INSERT INTO queue_controls (tenant, queue, paused, reason, changed_at, last_seq)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant, queue) DO UPDATE SET paused=EXCLUDED.paused, reason=EXCLUDED.reason,
    changed_at=EXCLUDED.changed_at, last_seq=EXCLUDED.last_seq
WHERE queue_controls.last_seq < EXCLUDED.last_seq
"""


async def apply(conn: asyncpg.Connection, records: list[QueueRecord]) -> None:
    latest: dict[tuple[str, str], QueueRecord] = {}
    for rec in records:
        latest[(rec.tenant, rec.queue)] = rec
    await conn.executemany(
        _UPSERT,
        [
            (
                r.tenant,
                r.queue,
                isinstance(r.event, QueuePaused),
                r.event.reason if isinstance(r.event, QueuePaused) else "",
                r.stored_at,
                r.seq,
            )
            for r in latest.values()
        ],
    )


async def controls(conn: asyncpg.Connection | asyncpg.Pool, tenant: str) -> dict[str, dict[str, Any]]:
    """Every queue of `tenant` that was ever paused or resumed: {queue: {paused, reason, changed_at}}."""
    recs = await conn.fetch(
        "SELECT queue, paused, reason, changed_at FROM queue_controls WHERE tenant=$1 ORDER BY queue", tenant
    )
    return {
        r["queue"]: {"paused": r["paused"], "reason": r["reason"], "changed_at": r["changed_at"]}
        for r in recs
    }
