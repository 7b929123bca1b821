"""The projection runner: reads the event log in sequence order and applies it to PostgreSQL.

Exactly one runner is active (a PostgreSQL advisory lock elects it; others stand by). It reads with
an ordered consumer from the lowest checkpoint + 1 (PostgreSQL holds the cursor, so there is nothing to
ack), applies a batch to every projection in one transaction together with each projection's
checkpoint (projections/batch_apply.py), skips any sequence already applied, and NOTIFYs listeners
(SSE) on commit. Batches are what has arrived while it keeps up, and larger while it catches up; the
per-task states its projections fold stay in memory between batches while it is elected.

A projection is total (DESIGN Revision 2): an event it cannot apply because of the event's data, or
that cannot be decoded at all, is recorded in `projection_errors` and skipped by that projection
alone; an outage (PostgreSQL gone) pauses the runner until PostgreSQL is back, then it resumes from
its checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from ordo.infra import subjects as sj
from ordo.infra import telemetry
from ordo.infra.event_store import EventStoreUnavailable
from ordo.infra.logs import Outage
from ordo.infra.pg import connect, translate
from ordo.infra.raw_client import subscribe_payloads, unsubscribe
from ordo.infra.read_gate import ASK_SUBJECT as POSITION_ASK_SUBJECT
from ordo.infra.read_gate import SUBJECT as POSITION_SUBJECT
from ordo.infra.read_gate import announcement
from ordo.projections import committed_feed, log_identity, task_events, tasks
from ordo.projections.batch_apply import (
    PIPELINE_FAILURES,
    Pipeline,
    apply_batch,
    apply_batch_committed,
    lock_checkpoints,
    pipeline_gives_way,
)
from ordo.projections.memory import Memories
from ordo.projections.reader import LogReader, PoisonEvent, Record
from ordo.projections.registry import FAMILIES, PROJECTIONS, Family, Projection
from ordo.projections.schema import migrate

__all__ = ["PoisonEvent", "ProjectionRunner", "RunnerConfig", "apply_batch", "checkpoint", "lag"]

NOTIFY_CHANNEL = "ordo_events"
# A caught-up runner announces its position again this often (a commit announces it at once).
ANNOUNCE_EVERY_S = 0.5
LEADER_LOCK = 7_404_002

DEFAULT_PROJECTIONS: tuple[Projection, ...] = PROJECTIONS
# The pause between attempts to reach PostgreSQL again, doubling up to the maximum.
_RECONNECT_MIN_S = 0.25
_RECONNECT_MAX_S = 5.0
_log = logging.getLogger("ordo.projector")


@dataclass(frozen=True)
class RunnerConfig:
    """`batch_size` bounds a batch. While the runner keeps up, a batch is one transaction; once a
    full batch more is waiting (a burst, a restart) it catches up: batches of `batch_size` are
    pipelined (each planned while PostgreSQL writes the one before) in one transaction of up to
    `catch_up_events` (2 x `catch_up_batch_size`, default 10 x batch_size): fewer commits per event,
    and the two processes stay busy together except at the transaction's first plan and last write.
    `max_batch_size` (default 5 x batch_size) is the size of a rebuild's batches.
    `commit_interval_s`: a batch whose first event comes sooner than this after the last commit
    waits out the rest of the interval and takes what arrived meanwhile, so a steady stream of
    events costs at most one commit per interval (each commit has a fixed cost in both processes,
    whatever it holds); a batch of a tenth of `batch_size` or more that arrived while the one
    before was applied goes at once. `linger_s`: an event after a quiet spell (no commit for
    `commit_interval_s`) waits this long, with what arrives meanwhile, before it is applied
    (decision 50): at a trickle the projector's work then comes after the worker's start of the task
    instead of competing with it for the cores, and a short task's events share one commit. 0
    applies it at once."""

    batch_size: int = 1000
    standby_poll_s: float = 1.0
    max_batch_size: int | None = None
    commit_interval_s: float = 0.0
    linger_s: float = 0.0
    # The committed feed is published while a gateway asked for it within this long.
    feed_want_ttl_s: float = committed_feed.WANT_TTL_S

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.standby_poll_s <= 0 or min(self.commit_interval_s, self.linger_s) < 0:
            raise ValueError(
                "batch_size >= 1, standby_poll_s > 0, commit_interval_s >= 0 and linger_s >= 0 required"
            )
        if self.feed_want_ttl_s <= 0:
            raise ValueError("feed_want_ttl_s > 0 required")
        if self.max_batch_size is not None and self.max_batch_size < self.batch_size:
            raise ValueError("max_batch_size >= batch_size required")

    @property
    def catch_up_batch_size(self) -> int:
        return self.max_batch_size or 5 * self.batch_size

    @property
    def catch_up_events(self) -> int:
        return 2 * self.catch_up_batch_size


# A fault hook called after COMMIT with the batch's last sequence, once per batch (tests crash here).
AfterCommit = Callable[[int], Awaitable[None]]


async def ensure_checkpoints(conn: asyncpg.Connection, projections: Sequence[Projection]) -> None:
    await conn.executemany(
        "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING",
        [(p.name,) for p in projections],
    )


async def locked_checkpoints(conn: asyncpg.Connection, names: Sequence[str]) -> dict[str, int]:
    """The checkpoints of `names`, row-locked until the caller's transaction ends."""
    recs = await conn.fetch(
        "SELECT name, last_seq FROM projection_checkpoints WHERE name = ANY($1::text[]) FOR UPDATE",
        list(names),
    )
    return {r["name"]: r["last_seq"] for r in recs}


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
        # Gateways take what a batch committed to `task_events` from the committed feed, while one
        # of them asks for it (loop time until which it is wanted).
        self._feed = any(p.name == task_events.NAME for p in self._projections)
        self._feed_wanted_until = float("-inf")
        self._answers: set[asyncio.Task[None]] = set()  # announcements asked for, in flight
        self._stop = asyncio.Event()
        self.last_seq = 0
        self.committed_at = 0.0  # loop time of the last commit
        self.active = False
        # Records skipped because their checkpoint had passed them (observability and tests).
        self.skipped_duplicates = 0

    async def shutdown(self) -> None:
        self._stop.set()

    @property
    def feed_wanted(self) -> bool:
        """Whether a gateway asked for the committed feed within `feed_want_ttl_s`."""
        return asyncio.get_running_loop().time() < self._feed_wanted_until

    async def run(self) -> None:
        """Project until `shutdown()`.

        PostgreSQL going away (a restart, a crash) is not fatal: the runner waits for it (one line
        when it is lost, one when it is back), connects again, is elected again and resumes from
        the checkpoints, which were committed together with the tables."""
        outage = Outage(self._log, "PostgreSQL")
        pause = _RECONNECT_MIN_S
        while not self._stop.is_set():
            try:
                await self._run_connected(outage)
                return
            except Exception as exc:
                lost = translate(exc)
                if lost is None:
                    raise
                outage.lost(lost)
            try:
                await asyncio.wait_for(self._stop.wait(), pause)
            except TimeoutError:
                pass
            pause = min(2 * pause, _RECONNECT_MAX_S)

    async def _run_connected(self, outage: Outage) -> None:
        conn = await connect(self._dsn)
        outage.back()
        try:
            await conn.execute("SET synchronous_commit = off")  # decision 34
            await migrate(conn)
            if not await self._elect(conn):
                return
            self.active = True
            self._log.info("projector active")
            await ensure_checkpoints(conn, self._projections)
            while await self._log_accepted(conn):
                if not await self._consume(conn):
                    break  # stopped; True: the log behind the reader changed, refuse it first
        finally:
            self.active = False
            await _close(conn)

    async def _elect(self, conn: asyncpg.Connection) -> bool:
        while not self._stop.is_set():
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK):
                return True
            try:
                await asyncio.wait_for(self._stop.wait(), self._config.standby_poll_s)
            except TimeoutError:
                pass
        return False

    async def _log_accepted(self, conn: asyncpg.Connection) -> bool:
        """Wait until the log is the one the read model was built from (projections/log_identity.py):
        refused, it says why (readiness, the log) and looks again every `standby_poll_s`; a rebuild
        from this log clears it. False once stopped."""
        said = None
        while not self._stop.is_set():
            try:
                why = await log_identity.mismatch(conn, self._nc)
            except nats.errors.Error as exc:  # the server away: not a verdict on the log
                self._log.warning("cannot ask the event log which it is yet: %r", exc)
                why = said = None
            else:
                if why is None:
                    await log_identity.accepted(conn)
                    if said is not None:
                        self._log.info("the event log is the read model's: projecting")
                    return True
            if why is not None and why != said:
                self._log.error("projector refuses the event log: %s", why)
                await log_identity.refuse(conn, why)
                said = why
            try:
                await asyncio.wait_for(self._stop.wait(), self._config.standby_poll_s)
            except TimeoutError:
                pass
        return False

    async def _same_log(self, conn: asyncpg.Connection, reader: LogReader, seen: list[int]) -> bool:
        """After the reader replaced its consumer, whether the log is still the read model's (a
        server that lost its data comes back with a new, empty log); True when nothing changed."""
        if reader.resets == seen[0]:
            return True
        seen[0] = reader.resets
        try:
            why = await log_identity.mismatch(conn, self._nc)
        except nats.errors.Error:
            return True  # asked again on the next batch's check: the server is away, not replaced
        if why is not None:
            self._log.error("the event log changed under the projector: %s", why)
        return why is None

    async def _consume(self, conn: asyncpg.Connection) -> bool:
        """Apply the log until stopped (False) or until the log behind the reader is not the read
        model's any more (True)."""
        names = [p.name for p in self._projections]
        async with conn.transaction():
            start = min((await locked_checkpoints(conn, names)).values(), default=0) + 1
        self.last_seq = start - 1
        config = self._config
        reader = LogReader(self._nc, self._families, start, self._log)
        memories = Memories()  # a new election starts from the tables
        wants = await self._listen_for_wants() if self._feed else None
        await reader.start()
        seen = [reader.resets]
        beat = asyncio.create_task(self._announce_while_idle(reader)) if self._feed else None
        asks = await self._listen_for_asks(reader) if self._feed else None
        try:
            while not self._stop.is_set():
                if not await self._same_log(conn, reader, seen):
                    return True
                # Caught up, a batch is what has arrived (small, low latency); behind, larger batches
                # are applied pipelined (each planned while the one before is written).
                if reader.buffered() >= config.batch_size:
                    await self._catch_up(conn, reader, memories)
                    continue
                busy = reader.buffered() > 0  # arrived while the last batch was applied
                batch = await reader.batch(config.batch_size, wait=self._stop)
                if batch and not await self._same_log(conn, reader, seen):
                    return True  # what came after the reader's new consumer is not applied
                if batch:
                    await self._apply(conn, await self._paced(reader, batch, busy), memories)
            return False
        finally:
            if beat is not None:
                beat.cancel()
            if asks is not None:
                await unsubscribe(self._nc, asks)
            await reader.close()
            if wants is not None:
                await unsubscribe(self._nc, wants)

    async def _listen_for_asks(self, reader: LogReader) -> Subscription | None:
        """Answer a batch submitter that begins to listen: at once while caught up (busy, the next
        commit announces)."""

        def asked(_data: bytes) -> None:
            if reader.buffered() == 0:
                task = asyncio.get_running_loop().create_task(self._announce())
                self._answers.add(task)
                task.add_done_callback(self._answers.discard)

        try:
            return await subscribe_payloads(self._nc, POSITION_ASK_SUBJECT, asked)
        except nats.errors.Error as exc:
            self._log.warning("position requests not heard (batch submits wait for a commit): %s", exc)
            return None

    async def _announce_while_idle(self, reader: LogReader) -> None:
        """While caught up (nothing arrived that is not applied) and without a commit for
        `ANNOUNCE_EVERY_S`, announce the position again: a burst's first pieces are then paced from
        its start. A runner stuck in a commit (a hung PostgreSQL) holds arrived events and stays
        silent, so the submitters stop waiting on it (infra/read_gate.py)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(ANNOUNCE_EVERY_S)
            if reader.buffered() == 0 and loop.time() - self.committed_at >= ANNOUNCE_EVERY_S:
                await self._announce()

    async def _listen_for_wants(self) -> Subscription | None:
        """Subscribe to the gateways' requests for the committed feed (None if NATS refuses)."""
        try:
            return await subscribe_payloads(self._nc, committed_feed.WANT_SUBJECT, self._wanted)
        except nats.errors.Error as exc:
            self._log.warning("committed feed requests not heard (gateways read commits back): %s", exc)
            return None

    def _wanted(self, _data: bytes) -> None:
        self._feed_wanted_until = asyncio.get_running_loop().time() + self._config.feed_want_ttl_s

    async def _paced(self, reader: LogReader, batch: list[Record], busy: bool) -> list[Record]:
        """`batch`, and what arrives until `commit_interval_s` has passed since the last commit (after
        a quiet spell: for `linger_s`). A batch of at least a tenth of `batch_size` that arrived while
        the one before was applied (`busy`) goes at once: the projector is behind, and a hold would
        only add to every event's wait (4 ms of every 38 ms cycle under W1's load,
        docs/benchmarks.md); a trickle's few events still wait out the interval."""
        loop = asyncio.get_running_loop()
        hold = self.committed_at + self._config.commit_interval_s - loop.time()
        if busy and len(batch) >= max(1, self._config.batch_size // 10):
            hold = 0.0
        elif hold <= 0:
            hold = self._config.linger_s
        room = self._config.batch_size - len(batch)
        if hold <= 0 or room <= 0:
            return batch
        try:
            await asyncio.wait_for(self._stop.wait(), hold)
        except TimeoutError:
            pass
        return batch + await reader.batch(room, wait=_arrived_only())

    async def _apply(
        self, conn: asyncpg.Connection, batch: list[Record], memories: Memories | None = None
    ) -> None:
        """Apply and commit one batch (without `memories`, every per-task state is read back)."""
        memories = Memories() if memories is None else memories
        _trace_projection(batch)
        done = await apply_batch_committed(conn, self._projections, batch, memories, NOTIFY_CHANNEL)
        self.skipped_duplicates += done.skipped
        await self._committed(batch, feed=done.whole)  # an isolated batch is read back by the gateways
        await self._announce()

    async def _committed(self, batch: list[Record], feed: bool = True) -> None:
        """After the commit that holds `batch`: move `last_seq`, hand the batch to the committed feed
        and to the after-commit hook."""
        before, self.last_seq = self.last_seq, batch[-1][1].seq
        self.committed_at = now = asyncio.get_running_loop().time()
        if self._feed and feed and now < self._feed_wanted_until:
            await committed_feed.publish(self._nc, before, self.last_seq, batch)
        if self._after_commit is not None:
            await self._after_commit(self.last_seq)

    async def _catch_up(self, conn: asyncpg.Connection, reader: LogReader, memories: Memories) -> None:
        """Behind: batches of `batch_size` pipelined in one transaction of up to `catch_up_events`,
        committed together (each batch's statement NOTIFYs its own sequence; they are delivered at
        the commit). With a pipeline of N batches PostgreSQL and the projector overlap on N - 1 of
        N + 1 steps: ten batches of 1,000 drained W1's backlog at 20,300 events/s, two of 5,000 at
        17,400 (docs/benchmarks.md).
        When that fails for the data's sake, the batches are applied again one by one by `_apply`,
        which isolates a bad event; an outage propagates."""
        # Read before the transaction (a wait for the log must not hold the checkpoints' locks),
        # and the second batch only from what has already arrived.
        size, budget = self._config.batch_size, self._config.catch_up_events
        first = await reader.batch(size, wait=self._stop)
        if not first:
            return
        batches = [first]
        events = len(first)
        arrived = _arrived_only()
        skipped = 0
        names = [p.name for p in self._projections]
        try:
            async with conn.transaction():
                checkpoints = await lock_checkpoints(conn, names)
                pipeline = Pipeline(conn, self._projections, memories, checkpoints, NOTIFY_CHANNEL)
                try:
                    _trace_projection(first)
                    skipped += (await pipeline.add(first))[1]
                    while events < budget and reader.buffered() >= size:
                        batch = await reader.batch(min(size, budget - events), wait=arrived)
                        if not batch:
                            break
                        batches.append(batch)
                        events += len(batch)
                        _trace_projection(batch)
                        skipped += (await pipeline.add(batch))[1]
                    await pipeline.drain()
                    memories.moved_checkpoints(pipeline.checkpoints)
                finally:
                    await pipeline.close()  # before the transaction ends: nothing may be in flight
        except PIPELINE_FAILURES as exc:
            memories.rollback()
            if not pipeline_gives_way(exc, conn):
                raise
            self._log.info("catch-up applies %d batches one by one: %s", len(batches), exc)
            for batch in batches:
                await self._apply(conn, batch, memories)
            return
        except BaseException:
            memories.rollback()
            raise
        memories.commit()
        self.skipped_duplicates += skipped
        for batch in batches:  # committed together; handed on batch by batch, as `_apply` does
            await self._committed(batch)
        await self._announce()

    async def _announce(self) -> None:
        """Tell the batch submitters where the read model stands (infra/read_gate.py; best effort:
        unheard, they do not wait)."""
        if not self._feed:
            return
        try:
            await self._nc.publish(POSITION_SUBJECT, announcement(self.last_seq))
        except nats.errors.Error as exc:
            self._log.debug("position not announced: %s", exc)


def _arrived_only() -> asyncio.Event:
    """A set event: `reader.batch(wait=_arrived_only())` is what has arrived, without waiting for more."""
    arrived = asyncio.Event()
    arrived.set()
    return arrived


async def _close(conn: asyncpg.Connection) -> None:
    """Close politely; a connection PostgreSQL has already dropped is only let go."""
    try:
        await conn.close(timeout=5)
    except Exception as exc:
        if translate(exc) is None:
            raise
        conn.terminate()


def _trace_projection(batch: list[Record]) -> None:
    """A `project` span in the trace of every traced event (no-op when tracing is off)."""
    for _, record in batch:
        headers = getattr(record, "headers", None)
        if headers and "traceparent" in headers:
            with telemetry.span("ordo.project", parent_headers=headers, seq=record.seq):
                pass


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


async def last_log_seq(nc: NATS, families: Sequence[Family] = FAMILIES) -> dict[str, int]:
    """The sequence of the newest message of each family in the log (0 when it has none)."""
    js = nc.jetstream()
    out: dict[str, int] = {}
    for family in families:
        try:
            msg = await js.get_last_msg(sj.EVENTS_STREAM, family.filter)
            out[family.name] = int(msg.seq or 0)
        except NotFoundError:
            out[family.name] = 0
        except nats.errors.Error as exc:
            raise EventStoreUnavailable(f"cannot read the event log's last sequence: {exc}") from exc
    return out


async def lag(
    conn: asyncpg.Connection | asyncpg.Pool,
    nc: NATS,
    projections: Sequence[Projection] = DEFAULT_PROJECTIONS,
    families: Sequence[Family] = FAMILIES,
) -> dict[str, int]:
    """Per projection: last relevant sequence in the log − its checkpoint (0 = caught up).

    "Relevant" is the newest message of the family the projection reads; tickets and other
    families' events do not count as lag.
    """
    newest = await last_log_seq(nc, families)
    recs = await conn.fetch("SELECT name, last_seq FROM projection_checkpoints")
    done = {r["name"]: int(r["last_seq"]) for r in recs}
    return {p.name: max(0, newest.get(p.family, 0) - done.get(p.name, 0)) for p in projections}
