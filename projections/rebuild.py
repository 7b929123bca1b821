"""`ordo rebuild`: replay the log from sequence 1 into shadow tables, catch up, swap them in.

The shadow tables live in their own PostgreSQL schema, created by each projection's own DDL with the
connection's search_path pointing there, and filled by the projections' own apply functions through
the same `apply_batch` the live runner uses (projections name tables without a schema). So a rebuild
runs exactly the live code, only against other tables.

The shadow's secondary indexes are dropped while the log is replayed and built once at the end
(sorted builds cost a fraction of keeping them up to date row by row), except one a batch's statement
probes per task (`_PROBED`); a line of progress is logged
every two seconds. The live projector and the gateway keep running. When the shadow is within one
batch of the live checkpoint, one transaction:
  1. locks the rebuilt projections' live checkpoint rows (FOR UPDATE): the live projector's next batch
     waits on them, so it pauses applying without being told;
  2. applies the last few events into the shadow, up to exactly that checkpoint;
  3. moves the live tables out and the shadow tables in (ALTER TABLE ... SET SCHEMA; their indexes
     and constraints go with them), moves the checkpoints (never backwards) and replaces the rebuilt
     projections' rows of `projection_errors` (events skipped, DESIGN Revision 2) with the shadow's;
  4. commits. Gateway reads wait at most for this transaction and then read the new tables; the live
     projector resumes from the same checkpoint into the new tables.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from nats.aio.client import Client as NATS

from ordo.infra.pg import connect
from ordo.projections import log_identity, rollups
from ordo.projections.batch_apply import PIPELINE_FAILURES, Pipeline, pipeline_gives_way
from ordo.projections.memory import Memories
from ordo.projections.reader import LogReader, Record
from ordo.projections.registry import FAMILIES, PROJECTIONS, Family, Projection
from ordo.projections.runner import RunnerConfig, apply_batch, ensure_checkpoints, last_log_seq
from ordo.projections.schema import DDL as CHECKPOINT_DDL
from ordo.projections.schema import migrate

SHADOW_SCHEMA = "ordo_rebuild"
_CHUNK_S = 1.0  # the replay commits about once a second
RETIRED_SCHEMA = "ordo_retired"
REBUILD_LOCK = 7_404_003
_BUILDERS = 2  # connections building the deferred indexes at once
# Secondary indexes a batch's statement reads (not deferred): the rollups' check that a task first
# seen by its `submitted` has no earlier event, one probe of `task_events_task` per task.
_PROBED = ("task_events_task",)
_REPLAY_STATISTICS = 10  # statistics target of the ANALYZEs during the replay (PostgreSQL's default: 100)


class RebuildError(RuntimeError):
    """A rebuild could not start or finish (another one runs, unknown projection, swap timed out)."""


@dataclass(frozen=True)
class RebuildReport:
    projections: tuple[str, ...]
    tables: tuple[str, ...]
    events: int
    checkpoint: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def select(names: Sequence[str] | None) -> tuple[Projection, ...]:
    """The registered projections called `names` (all when empty) and those they need, in the
    registry's order; unknown names raise. The names of the four read models that became `rollups`
    (docs/decisions.md 38) select it."""
    if not names:
        return PROJECTIONS
    names = [rollups.NAME if name in rollups.RETIRED else name for name in names]
    known = {p.name: p for p in PROJECTIONS}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise RebuildError(f"unknown projection(s) {unknown}; known: {sorted(known)}")
    wanted = set(names)
    for name in names:
        wanted.update(known[name].needs)
    return tuple(p for p in PROJECTIONS if p.name in wanted)


class Rebuilder:
    def __init__(
        self,
        nc: NATS,
        dsn: str,
        projections: Sequence[Projection] = PROJECTIONS,
        families: Sequence[Family] = FAMILIES,
        batch_size: int = 1000,
        lock_timeout_s: float = 5.0,
        swap_attempts: int = 5,
        logger: logging.Logger | None = None,
        progress_every_s: float = 2.0,
    ) -> None:
        self._nc = nc
        self._dsn = dsn
        self._projections = tuple(projections)
        self._names = [p.name for p in self._projections]
        # Another log than the read model's (projections/log_identity.py): rebuilt from this one up
        # to its end, the checkpoints may go back, and the log is recorded as the read model's.
        self._new_log: tuple[datetime | None, int] | None = None
        self._families = tuple(f for f in families if f.name in {p.family for p in self._projections})
        # A rebuild catches up all the way: batches of the live runner's catch-up size (five times
        # `batch_size`: at 5,000 tasks 8,768 events/s against 5,473 with batches of 1,000); the swap
        # waits until the shadow is within `batch_size` of the live tables.
        self._batch = batch_size
        self._catch_up_batch = RunnerConfig(batch_size=batch_size).catch_up_batch_size
        self._lock_timeout_ms = int(lock_timeout_s * 1000)
        self._swap_attempts = swap_attempts
        self._log = logger or logging.getLogger("ordo.rebuild")
        self._applied = 0
        self._shadow_last = 0
        self._reader: LogReader | None = None
        self._batches = 0
        self._tables: tuple[str, ...] = ()
        # The shadow tables have one writer, this rebuild: per-task states stay in memory between
        # its batches (committed with each batch's transaction, cleared on a rolled-back swap).
        self._memories = Memories()
        self._progress_every_s = progress_every_s
        self._started = self._reported = time.perf_counter()

    async def run(self) -> RebuildReport:
        started = self._started = self._reported = time.perf_counter()
        conn = await connect(self._dsn)
        try:
            await migrate(conn)
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", REBUILD_LOCK):
                raise RebuildError("another rebuild is running")
            live = str(await conn.fetchval("SELECT current_schema()"))
            async with conn.transaction():
                await ensure_checkpoints(conn, self._projections)
            await self._which_log(conn)
            tables = self._tables = await self._prepare_shadow(conn)
            deferred = await self._defer_indexes(conn)
            await self._restart_reader()
            try:
                await self._catch_up(conn, live)
                await self._build_indexes(conn, deferred)
                await self._catch_up(conn, live)
                checkpoint = await self._swap(conn, live, tables)
            finally:
                if self._reader is not None:
                    await self._reader.close()
            seconds = time.perf_counter() - started
            report = RebuildReport(tuple(self._names), tables, self._applied, checkpoint, seconds)
            self._log.info(
                "rebuilt %s: %d events in %.2f s (%.0f events/s), checkpoint %d",
                ",".join(self._names), report.events, seconds, report.events_per_s, checkpoint,
            )  # fmt: skip
            return report
        finally:
            await conn.close()  # also drops the session's advisory lock

    async def _prepare_shadow(self, conn: asyncpg.Connection) -> tuple[str, ...]:
        """A fresh shadow schema holding this rebuild's tables and checkpoints, empty."""
        async with conn.transaction():
            await conn.execute(f"DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE")
            await conn.execute(f"CREATE SCHEMA {SHADOW_SCHEMA}")
            await conn.execute(f"SET search_path TO {SHADOW_SCHEMA}")
            await conn.execute(CHECKPOINT_DDL)
            for projection in self._projections:
                await conn.execute(projection.ddl)
            await ensure_checkpoints(conn, self._projections)
        # SET inside a committed transaction persists for the session: applies go to the shadow.
        recs = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname=$1"
            " AND tablename NOT IN ('projection_checkpoints', 'projection_errors') ORDER BY tablename",
            SHADOW_SCHEMA,
        )
        return tuple(r["tablename"] for r in recs)

    async def _defer_indexes(self, conn: asyncpg.Connection) -> list[tuple[str, str]]:
        """Drop the shadow's secondary indexes until the replay is done: (name, definition) of each.

        A replay writes every row of every table; keeping a table's secondary indexes up to date row
        by row costs PostgreSQL more than the rows themselves (the tasks table has five), and one
        sorted build at the end costs a fraction of it. Unique indexes stay: the writes' ON CONFLICT
        and the projections' reads of a key use them. So do the indexes a batch's statement probes
        (`_PROBED`): without one, a probe per task reads the whole table, and the replay slows as
        the table grows (587 events/s over W1's 102,000 events, against 26,000)."""
        recs = await conn.fetch(
            "SELECT i.relname AS name, pg_get_indexdef(i.oid) AS def FROM pg_index x"
            " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_namespace n ON n.oid = i.relnamespace"
            " WHERE n.nspname = $1 AND NOT x.indisunique AND NOT i.relname = ANY($2::text[])"
            " ORDER BY i.relname",
            SHADOW_SCHEMA,
            list(_PROBED),
        )
        deferred = [(str(r["name"]), str(r["def"])) for r in recs]
        async with conn.transaction():
            for name, _ in deferred:
                await conn.execute(f'DROP INDEX {SHADOW_SCHEMA}."{name}"')
        return deferred

    async def _build_indexes(self, conn: asyncpg.Connection, deferred: list[tuple[str, str]]) -> None:
        """Build the deferred indexes over the replayed rows, then refresh the planner's statistics."""
        started = time.perf_counter()
        work = [definition for _, definition in deferred]
        work += [f"ANALYZE {SHADOW_SCHEMA}.{table}" for table in self._tables]
        # On `_BUILDERS` connections at once (one build uses one core). The definitions name the
        # shadow's tables as the search_path shows them, so every helper looks there too.
        helpers = [await connect(self._dsn) for _ in range(_BUILDERS - 1)]
        try:
            for helper in helpers:
                await helper.execute(f"SET search_path TO {SHADOW_SCHEMA}")
            pending = list(work)

            async def builder(on: asyncpg.Connection) -> None:
                while pending:
                    await on.execute(pending.pop(0))

            await asyncio.gather(builder(conn), *(builder(h) for h in helpers))
        finally:
            for helper in helpers:
                await helper.close()
        took = time.perf_counter() - started
        self._log.info("built %d indexes in %.2f s (%d connections)", len(deferred), took, _BUILDERS)

    async def _which_log(self, conn: asyncpg.Connection) -> None:
        why = await log_identity.mismatch(conn, self._nc)
        if why is None:
            return
        if set(self._names) != {p.name for p in PROJECTIONS}:
            raise RebuildError(f"{why}; rebuild every projection (`ordo rebuild` with no names)")
        self._new_log = await log_identity.current(self._nc)
        self._log.warning("rebuilding from another event log than the read model's, to its end")

    async def _live_target(self, conn: asyncpg.Connection, live: str, lock: bool) -> int:
        recs = await conn.fetch(
            f"SELECT last_seq FROM {live}.projection_checkpoints WHERE name = ANY($1::text[])"
            + (" FOR UPDATE" if lock else ""),
            self._names,
        )
        if self._new_log is not None:  # the live projector refuses this log: the log's end
            return max((await last_log_seq(self._nc, self._families)).values(), default=0)
        return max((int(r["last_seq"]) for r in recs), default=0)

    async def _next_batch(self, target: int) -> list[Record] | None:
        """The next batch of records <= target; [] when none came for a while; None once nothing
        more will come."""
        if self._shadow_last >= target:
            return None
        assert self._reader is not None
        tick = asyncio.Event()
        timer = asyncio.get_running_loop().call_later(1.0, tick.set)
        try:
            batch = await self._reader.batch(self._catch_up_batch, upto=target, wait=tick, linger_s=0.05)
        finally:
            timer.cancel()
        if batch:
            return batch
        if self._reader.past(target):
            return None
        # Nothing arrived for a while: is there anything newer in the log at all?
        newest = max((await last_log_seq(self._nc, self._families)).values(), default=0)
        return [] if newest > self._shadow_last else None

    async def _applied_batch(self, conn: asyncpg.Connection, batch: list[Record]) -> None:
        self._applied += len(batch)
        self._shadow_last = batch[-1][1].seq
        self._batches += 1
        if self._batches & (self._batches - 1) == 0:
            # Fresh tables have no statistics: without them the planner keeps choosing the plans of
            # an empty table (sequential scans per batch) and a long rebuild turns quadratic. Rough
            # statistics are enough for that (a sample of 3,000 rows instead of 30,000: a tenth of
            # the time); the indexes' build at the end analyzes every table at the default.
            await conn.execute(f"SET default_statistics_target = {_REPLAY_STATISTICS}")
            try:
                for table in self._tables:
                    await conn.execute(f"ANALYZE {SHADOW_SCHEMA}.{table}")
            finally:
                await conn.execute("RESET default_statistics_target")

    async def _apply_upto(self, conn: asyncpg.Connection, target: int) -> bool:
        """Apply one batch of records <= target into the shadow; False once nothing more will come."""
        batch = await self._next_batch(target)
        if not batch:
            return batch is not None
        await apply_batch(conn, self._projections, batch, self._memories)
        await self._applied_batch(conn, batch)
        return True

    async def _replay(self, conn: asyncpg.Connection, target: int) -> bool:
        """Apply batches of records <= target in one transaction, each planned while the one before
        is written (`Pipeline`), for about `_CHUNK_S`; False once nothing more will come."""
        checkpoints = {p.name: (self._shadow_last, 0) for p in self._projections}
        pipeline = Pipeline(conn, self._projections, self._memories, checkpoints)
        ends = time.perf_counter() + _CHUNK_S
        more = True
        async with conn.transaction():
            try:
                while more and time.perf_counter() < ends:
                    batch = await self._next_batch(target)
                    if not batch:
                        more = batch is not None
                        break
                    await pipeline.add(batch)
                    if (self._batches + 1) & self._batches == 0:  # this batch ANALYZEs after it
                        await pipeline.drain()
                    await self._applied_batch(conn, batch)
                    self._progress(target)
                await pipeline.drain()
            finally:
                await pipeline.close()  # before the transaction ends: nothing may be in flight
        return more

    async def _restart_reader(self) -> None:
        if self._reader is not None:
            await self._reader.close()
        self._reader = LogReader(self._nc, self._families, self._shadow_last + 1, self._log)
        await self._reader.start()

    async def _catch_up(self, conn: asyncpg.Connection, live: str) -> None:
        """Replay into the shadow until it is within one batch of the live checkpoint, with a line of
        progress every `progress_every_s`.

        Batches are replayed pipelined; when that fails for the data's sake (an event a projection
        cannot apply), the shadow goes back to its last commit and the next batch is applied alone
        by `apply_batch`, which finds and records the bad event."""
        while True:
            target = await self._live_target(conn, live, lock=False)
            self._progress(target)
            if target - self._shadow_last <= self._batch:
                return
            applied = self._applied
            try:
                more = await self._replay(conn, target)
            except PIPELINE_FAILURES as exc:
                self._memories.rollback()
                if not pipeline_gives_way(exc, conn):
                    raise
                self._applied = applied
                await self._rewind(conn)
                resume = self._shadow_last + 1
                self._log.info("replay applies batches one by one from seq %d: %s", resume, exc)
                try:
                    async with conn.transaction():
                        more = await self._apply_upto(conn, target)
                except BaseException:
                    self._memories.rollback()
                    raise
            except BaseException:
                self._memories.rollback()
                raise
            self._memories.commit()
            if not more:
                return

    def _progress(self, target: int) -> None:
        now = time.perf_counter()
        if now - self._reported < self._progress_every_s:
            return
        self._reported = now
        rate = self._applied / (now - self._started) if now > self._started else 0.0
        self._log.info(
            "replayed %d events, log sequence %d of %d (%.0f%%), %.0f events/s",
            self._applied, self._shadow_last, target, 100 * self._shadow_last / max(target, 1), rate,
        )  # fmt: skip

    async def _swap(self, conn: asyncpg.Connection, live: str, tables: tuple[str, ...]) -> int:
        for attempt in range(1, self._swap_attempts + 1):
            try:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = {self._lock_timeout_ms}")
                    target = await self._live_target(conn, live, lock=True)  # the live projector waits
                    while await self._apply_upto(conn, target):
                        pass
                    for table in tables:
                        await conn.execute(f"LOCK TABLE {live}.{table} IN ACCESS EXCLUSIVE MODE")
                    await conn.execute(f"DROP SCHEMA IF EXISTS {RETIRED_SCHEMA} CASCADE")
                    await conn.execute(f"CREATE SCHEMA {RETIRED_SCHEMA}")
                    for table in tables:
                        await conn.execute(
                            f"ALTER TABLE IF EXISTS {live}.{table} SET SCHEMA {RETIRED_SCHEMA}"
                        )
                        await conn.execute(f"ALTER TABLE {SHADOW_SCHEMA}.{table} SET SCHEMA {live}")
                    await conn.execute(
                        f"UPDATE {live}.projection_checkpoints l SET last_seq = s.last_seq"
                        f" FROM {SHADOW_SCHEMA}.projection_checkpoints s"
                        " WHERE l.name = s.name AND l.name = ANY($1::text[])"
                        + ("" if self._new_log is not None else " AND s.last_seq > l.last_seq"),
                        self._names,
                    )

                    await conn.execute(  # the live runner forgets what it remembered of the old tables
                        f"UPDATE {live}.projection_checkpoints SET epoch = epoch + 1"
                        " WHERE name = ANY($1::text[])",
                        self._names,
                    )
                    await self._swap_errors(conn, live)
                    await conn.execute(f"DROP SCHEMA {RETIRED_SCHEMA} CASCADE")
                    await conn.execute(f"DROP SCHEMA {SHADOW_SCHEMA} CASCADE")
                    await conn.execute(f"SET search_path TO {live}")
                    if self._new_log is not None:  # the live projector takes this log from here on
                        await log_identity.record(conn, self._new_log[0])
                return await self._live_target(conn, live, lock=False)
            except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError) as exc:
                # A deadlock is a backstop: the live runner's one-statement batch, holding the tables,
                # gives up waiting for the checkpoints this swap holds within 50 ms (decision 36).
                self._log.warning("swap attempt %d: tables busy (%s); retrying", attempt, type(exc).__name__)
                await self._rewind(conn)
        raise RebuildError(f"could not swap after {self._swap_attempts} attempts: tables stayed busy")

    async def _swap_errors(self, conn: asyncpg.Connection, live: str) -> None:
        """The rebuilt projections' skipped events are the ones the rebuild skipped (same code, same
        events: normally the same rows); other projections' entries stay."""
        await conn.execute(
            f"DELETE FROM {live}.projection_errors WHERE projection = ANY($1::text[])", self._names
        )
        await conn.execute(
            f"INSERT INTO {live}.projection_errors SELECT * FROM {SHADOW_SCHEMA}.projection_errors"
            " WHERE projection = ANY($1::text[]) ON CONFLICT DO NOTHING",
            self._names,
        )

    async def _rewind(self, conn: asyncpg.Connection) -> None:
        """After a rolled-back swap: the shadow is where its committed checkpoints say; read from there."""
        self._memories.clear()
        self._shadow_last = int(
            await conn.fetchval(
                "SELECT min(last_seq) FROM projection_checkpoints WHERE name = ANY($1::text[])", self._names
            )
            or 0
        )
        await self._restart_reader()


async def rebuild(
    nc: NATS, dsn: str, names: Sequence[str] | None = None, batch_size: int = 1000
) -> RebuildReport:
    """Rebuild the named projections (all when empty) and swap them in."""
    return await Rebuilder(nc, dsn, select(names), batch_size=batch_size).run()
