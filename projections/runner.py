"""The projection runner: reads the event log in sequence order and applies it to PostgreSQL.

Exactly one runner is active (a PostgreSQL advisory lock elects it; others stand by). It reads with
an ordered consumer from the lowest checkpoint + 1 (PostgreSQL holds the cursor, so there is nothing to
ack), applies a batch to every projection in one transaction together with each projection's
checkpoint, skips any sequence already applied, and NOTIFYs listeners (SSE) on commit. An event that
cannot be decoded halts the runner loudly: it is never skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from infra import subjects as sj
from infra.pg import connect
from projections import tasks
from projections.registry import FAMILIES, PROJECTIONS, Family, Projection
from projections.schema import migrate

NOTIFY_CHANNEL = "ordo_events"
LEADER_LOCK = 7_404_002

DEFAULT_PROJECTIONS: tuple[Projection, ...] = PROJECTIONS


class PoisonEvent(RuntimeError):
    """An event in the log that no projection can read: the runner stops rather than skip it."""


@dataclass(frozen=True)
class RunnerConfig:
    batch_size: int = 1000
    standby_poll_s: float = 1.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.standby_poll_s <= 0:
            raise ValueError("batch_size >= 1 and standby_poll_s > 0 required")


# A fault hook called after COMMIT with the batch's last sequence (tests crash here).
AfterCommit = Callable[[int], Awaitable[None]]


class ProjectionRunner:
    def __init__(
        self,
        nc: NATS,
        dsn: str,
        config: RunnerConfig | None = None,
        projections: Sequence[Projection] = DEFAULT_PROJECTIONS,
        families: Sequence[Family] = FAMILIES,
        logger: logging.Logger | None = None,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self._nc = nc
        self._dsn = dsn
        self._config = config or RunnerConfig()
        self._projections = tuple(projections)
        self._families = tuple(families)
        self._log = logger or logging.getLogger("ordo.projector")
        self._after_commit = after_commit
        self._stop = asyncio.Event()
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self.last_seq = 0
        self.active = False

    async def shutdown(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        conn = await connect(self._dsn)
        try:
            await migrate(conn)
            if not await self._elect(conn):
                return
            self.active = True
            self._log.info("projector active")
            await self._ensure_checkpoints(conn)
            await self._consume(conn)
        finally:
            self.active = False
            await conn.close()

    async def _elect(self, conn: asyncpg.Connection) -> bool:
        while not self._stop.is_set():
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
                return True
            try:
                await asyncio.wait_for(self._stop.wait(), self._config.standby_poll_s)
            except TimeoutError:
                pass
        return False

    async def _ensure_checkpoints(self, conn: asyncpg.Connection) -> None:
        await conn.executemany(
            "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING",
            [(p.name,) for p in self._projections],
        )

    async def _checkpoints(self, conn: asyncpg.Connection) -> dict[str, int]:
        recs = await conn.fetch(
            "SELECT name, last_seq FROM projection_checkpoints WHERE name = ANY($1::text[]) FOR UPDATE",
            [p.name for p in self._projections],
        )
        return {r["name"]: r["last_seq"] for r in recs}

    async def _consume(self, conn: asyncpg.Connection) -> None:
        start = min((await self._checkpoints(conn)).values(), default=0) + 1
        self.last_seq = start - 1
        js = self._nc.jetstream()

        async def on_msg(msg: Msg) -> None:
            self._queue.put_nowait(msg)

        filters = [f.filter for f in self._families]
        sub = await js.subscribe(
            filters[0],
            stream=sj.EVENTS_STREAM,
            cb=on_msg,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
                filter_subjects=filters if len(filters) > 1 else None,
            ),
        )
        try:
            while not self._stop.is_set():
                batch = await self._next_batch()
                if batch:
                    await self._apply(conn, batch)
        finally:
            await sub.unsubscribe()

    async def _next_batch(self) -> list[tuple[str, Any]]:
        stop = asyncio.ensure_future(self._stop.wait())
        get = asyncio.ensure_future(self._queue.get())
        done, _ = await asyncio.wait({stop, get}, return_when=asyncio.FIRST_COMPLETED)
        if get not in done:
            get.cancel()
            return []
        stop.cancel()
        msgs = [get.result()]
        while len(msgs) < self._config.batch_size and not self._queue.empty():
            msgs.append(self._queue.get_nowait())
        return [self._decode(m) for m in msgs]

    def _decode(self, msg: Msg) -> tuple[str, Any]:
        """(family name, record) of one log message."""
        meta = msg.metadata
        try:
            family = next(f for f in self._families if f.matches(msg.subject))
            record = family.decode(
                msg.subject, msg.data, dict(msg.headers or {}), meta.sequence.stream, meta.timestamp
            )
            return family.name, record
        except Exception as exc:
            self._log.critical("poison event at seq %s on %s: %s", meta.sequence.stream, msg.subject, exc)
            raise PoisonEvent(f"cannot decode event seq {meta.sequence.stream}: {exc}") from exc

    async def _apply(self, conn: asyncpg.Connection, batch: list[tuple[str, Any]]) -> None:
        last = batch[-1][1].seq
        async with conn.transaction():
            checkpoints = await self._checkpoints(conn)
            for projection in self._projections:
                done = checkpoints.get(projection.name, 0)
                if last <= done:
                    continue  # already applied: a redelivery
                fresh = [r for fam, r in batch if fam == projection.family and r.seq > done]
                if fresh:
                    await projection.apply(conn, fresh)
                await conn.execute(
                    "UPDATE projection_checkpoints SET last_seq=$2 WHERE name=$1", projection.name, last
                )
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(last))
        self.last_seq = last
        if self._after_commit is not None:
            await self._after_commit(self.last_seq)


async def leader_present(conn: asyncpg.Connection | asyncpg.Pool) -> bool:
    """True when some projector holds the leader lock (readiness)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype='advisory' AND objid=$1 AND granted)",
            LEADER_LOCK,
        )
    )


async def checkpoint(conn: asyncpg.Connection | asyncpg.Pool, name: str = tasks.NAME) -> int:
    value = await conn.fetchval("SELECT last_seq FROM projection_checkpoints WHERE name=$1", name)
    return int(value or 0)
