"""Events a projection could not apply: how they are told from outages, recorded, and read back.

DESIGN Revision 2 (docs/decisions.md): a projection is total. An event whose *data* a projection
cannot store (a value out of a column's range, text PostgreSQL refuses, bytes no decoder reads) is
recorded in `projection_errors` and skipped by that projection only; every other projection applies
it, and the runner carries on. An outage (connection lost, server shutting down, a timeout) is not
the event's fault: it propagates, the transaction rolls back, and the runner retries the same batch
after a restart, exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

_MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Undecodable:
    """A log message its family's decoder refused (the reader hands it out in its place)."""

    seq: int
    subject: str
    error: str
    stored_at: datetime | None = None


# Raised because of what an event holds, so applying the same event again fails the same way.
# PostgreSQL classes 22 (data exception), 23 (integrity constraint) and 54 (program limit, e.g. an
# index row too large); Python-side conversion errors. Connection and server errors are not here.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
    msgspec.MsgspecError,
    ValueError,  # UnicodeError included
    TypeError,
    LookupError,
    ArithmeticError,
)


def caused_by_data(exc: BaseException, conn: asyncpg.Connection) -> bool:
    """True when `exc` comes from the event's data rather than from PostgreSQL being unavailable."""
    return isinstance(exc, DATA_ERRORS) and not conn.is_closed()


def _clean(text: str, limit: int = 500) -> str:
    """Text PostgreSQL accepts whatever the event held (no NUL, no lone surrogate), bounded."""
    text = text.replace("\x00", "\\u0000")
    return text.encode("utf-8", errors="replace").decode("utf-8")[:limit]


def describe(family: str, record: Any) -> tuple[str, str, str, str]:
    """(subject, tenant, aggregate id, event name) of a record, from its fields or its subject."""
    if isinstance(record, Undecodable):
        tokens = record.subject.split(".")
        tenant = tokens[2] if len(tokens) > 3 else ""
        aggregate = tokens[-2] if len(tokens) > 3 else ""
        return record.subject, tenant, aggregate, tokens[-1]
    tenant = str(getattr(record, "tenant", ""))
    aggregate = str(
        getattr(record, "task_id", None)
        or getattr(record, "schedule_id", None)
        or getattr(record, "queue", "")
    )
    name = getattr(record, "name", None) or type(getattr(record, "event", record)).__name__
    subject = str(getattr(record, "subject", "") or f"{family}:{tenant}:{aggregate}:{name}")
    return subject, tenant, aggregate, str(name)


async def record(
    conn: asyncpg.Connection, projection: str, family: str, rec: Any, error: BaseException | str
) -> None:
    """Note that `projection` skipped `rec` (idempotent: a redelivered record is noted once)."""
    subject, tenant, aggregate, name = describe(family, rec)
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    await conn.execute(
        "INSERT INTO projection_errors"
        " (projection, seq, family, subject, tenant, aggregate_id, event, error, at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        projection, rec.seq, family, _clean(subject), _clean(tenant), _clean(aggregate), _clean(name),
        _clean(text, _MAX_ERROR_CHARS), getattr(rec, "stored_at", None),
    )  # fmt: skip


# ---- queries -------------------------------------------------------------------------------------


async def for_aggregate(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, aggregate_id: str, family: str = "task"
) -> list[dict[str, Any]]:
    """What the read models skipped of one task (or schedule): [{projection, seq, event, error, at}]
    (`at`: when the event was appended)."""
    recs = await conn.fetch(
        "SELECT projection, seq, event, error, at FROM projection_errors"
        " WHERE tenant=$1 AND family=$2 AND aggregate_id=$3 ORDER BY seq, projection",
        tenant,
        family,
        aggregate_id,
    )
    return [
        {"projection": r["projection"], "seq": r["seq"], "event": r["event"], "error": r["error"],
         "at": r["at"]}
        for r in recs
    ]  # fmt: skip


async def counts(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, int]:
    """Skipped events per projection, every tenant (readiness and /metrics)."""
    recs = await conn.fetch("SELECT projection, count(*) AS n FROM projection_errors GROUP BY projection")
    return {r["projection"]: int(r["n"]) for r in recs}
