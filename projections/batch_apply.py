"""Applying one batch of log records to the projections, with the checkpoints, in one transaction.

The batch is tried whole: every projection with a `plan` contributes a write to one statement that
also moves the checkpoints (projections/batch_statement.py), taking per-task states from the
runner's memory (projections/memory.py); other projections apply on their own. A projection is
total (DESIGN Revision 2): when an event's data makes the whole batch fail, it is applied again
projection by projection, halving the failing projection's records until the events it cannot apply
are found; those are recorded in `projection_errors` and skipped. An outage propagates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import asyncpg

from ordo.projections import poison
from ordo.projections.batch_statement import CheckpointsMoved, Write, execute
from ordo.projections.memory import Memories, NotNew
from ordo.projections.poison import Undecodable
from ordo.projections.reader import Record
from ordo.projections.registry import Projection

__all__ = [
    "PIPELINE_FAILURES",
    "Committed",
    "Pipeline",
    "UndecodableInBatch",
    "apply_batch",
    "apply_batch_committed",
    "lock_checkpoints",
    "pipeline_gives_way",
]

_log = logging.getLogger("ordo.projector")


async def apply_batch(
    conn: asyncpg.Connection,
    projections: Sequence[Projection],
    batch: list[Record],
    memories: Memories | None = None,
    notify: str | None = None,
) -> tuple[int, int]:
    """Apply `batch` to every projection and move each checkpoint, in the caller's transaction.

    Records at or below a projection's checkpoint are skipped (a redelivery). Tables and checkpoints
    are named without a schema, so the connection's search_path decides where they live: the live
    tables, or a rebuild's shadow schema. Returns (records applied, records skipped as duplicates).

    With `memories`, projections that can take their per-key states from memory do (the caller
    commits or rolls the memories back with its transaction); with `notify`, the checkpoint statement
    also NOTIFYs that channel with the batch's last sequence. The checkpoints are locked by one
    statement and moved by one, whatever the number of projections.

    The whole batch is tried at once under a savepoint. When an event's data makes a projection
    fail, the batch is applied again projection by projection, halving the failing projection's
    records until the events it cannot apply are found; those are recorded and skipped. Applying a
    batch in pieces, in order, equals applying it whole (projections are idempotent by sequence), so
    the live projector and a rebuild end with the same tables whatever the batch boundaries were.
    """
    if _whole(batch):
        try:
            async with conn.transaction():  # a savepoint in the caller's transaction
                applied, skipped, _ = await _apply_batch(
                    conn, projections, batch, memories, notify, isolate=False
                )
                return applied, skipped
        except _FAILURES as exc:
            if not _isolate_after(exc, conn, batch, memories):
                raise
    applied, skipped, _ = await _apply_batch(conn, projections, batch, None, notify, isolate=True)
    return applied, skipped


class Committed(NamedTuple):
    applied: int  # records applied
    skipped: int  # records skipped as duplicates
    whole: bool  # every record was applied (none isolated as one a projection cannot apply)


async def apply_batch_committed(
    conn: asyncpg.Connection,
    projections: Sequence[Projection],
    batch: list[Record],
    memories: Memories,
    notify: str | None = None,
) -> Committed:
    """`apply_batch` in a transaction of its own, committed, and `memories` committed with it (the
    live runner).

    When the memories know where the runner's last commit left every checkpoint, the batch is one
    statement and nothing else: no BEGIN, no lock, no COMMIT (one round trip instead of four). The
    statement moves the checkpoints only from exactly there and checks that it did (and every
    presumption of its plans) before it ends, so a check that fails aborts all of it; it is then
    applied again the long way, with the checkpoints locked. Otherwise, the whole batch is tried in a
    transaction without a savepoint; when it fails for the data's sake the transaction is rolled back
    and the batch applied again, isolated, in a new one."""
    try:
        whole = _whole(batch)
        known = _known_checkpoints(projections, batch, memories) if whole else None
        if known is not None:
            try:
                applied, skipped = await _apply_unlocked(conn, projections, batch, memories, notify, known)
                memories.commit()
                return Committed(applied, skipped, whole=True)
            except (CheckpointsMoved, asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError) as exc:
                # Another writer (a rebuild's swap) moved them, or holds them (and may wait for a
                # table this statement holds): start again from the locked checkpoints.
                _log.info("batch up to seq %d applied again, checkpoints locked: %s", batch[-1][1].seq, exc)
                memories.clear()
            except _FAILURES as exc:
                if not _isolate_after(exc, conn, batch, memories):
                    raise
                whole = False
        if whole:
            try:
                async with conn.transaction():
                    applied, skipped, moved = await _apply_batch(
                        conn, projections, batch, memories, notify, isolate=False
                    )
                memories.moved_checkpoints(moved)
                memories.commit()
                return Committed(applied, skipped, whole=True)
            except _FAILURES as exc:
                if not _isolate_after(exc, conn, batch, memories):
                    raise
        async with conn.transaction():
            applied, skipped, moved = await _apply_batch(conn, projections, batch, None, notify, isolate=True)
    except BaseException:
        memories.rollback()
        raise
    memories.moved_checkpoints(moved)
    memories.commit()
    return Committed(applied, skipped, whole=False)


def _known_checkpoints(
    projections: Sequence[Projection], batch: list[Record], memories: Memories
) -> dict[str, tuple[int, int]] | None:
    """Where the runner's last commit left every checkpoint, when the batch can be applied without
    locking them: every projection it concerns plans its writes into the one statement (one that
    runs statements of its own needs a transaction around them)."""
    known = memories.checkpoints
    if known is None or any(p.name not in known for p in projections):
        return None
    planless = {p.family for p in projections if p.plan is None}
    if planless and any(family in planless for family, _ in batch):
        return None
    return known


async def _apply_unlocked(
    conn: asyncpg.Connection,
    projections: Sequence[Projection],
    batch: list[Record],
    memories: Memories,
    notify: str | None,
    known: dict[str, tuple[int, int]],
) -> tuple[int, int]:
    """The batch as one statement outside any transaction, moving the checkpoints from `known`."""
    last = batch[-1][1].seq
    writes, applied, skipped = await _plan(conn, conn, projections, batch, memories, known, isolate=False)
    moving = [(name, done, epoch) for name, (done, epoch) in known.items() if done < last]
    await execute(conn, [*writes, _held_checkpoints_write(moving, last, notify)])
    memories.moved_checkpoints(_moved(list(known), known, last))
    return applied, skipped


_FAILURES: tuple[type[BaseException], ...] = (NotNew, *poison.DATA_ERRORS)


async def lock_checkpoints(conn: asyncpg.Connection, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """name -> (sequence, epoch) of the checkpoints of `names`, locked until the transaction ends."""
    return {r["name"]: (r["last_seq"], r["epoch"]) for r in await conn.fetch(_LOCK_CHECKPOINTS, list(names))}


def _whole(batch: list[Record]) -> bool:
    """Whether the batch is worth trying whole (an undecodable record is known to need isolating)."""
    return not any(isinstance(r, Undecodable) for _, r in batch)


def _isolate_after(
    exc: BaseException, conn: asyncpg.Connection, batch: list[Record], memories: Memories | None
) -> bool:
    """After the whole batch failed with `exc`: True when it is to be applied again, isolated (a data
    error, a key presumed new that was not); False for an outage, which propagates."""
    if not pipeline_gives_way(exc, conn):
        return False
    if isinstance(exc, NotNew):
        _log.info("batch up to seq %d applied again reading every key: %s", batch[-1][1].seq, exc)
    if memories is not None:
        memories.clear()  # the isolated path reads every key and leaves nothing in memory
    return True


_LOCK_CHECKPOINTS = (
    "SELECT name, last_seq, epoch FROM projection_checkpoints WHERE name = ANY($1::text[]) FOR UPDATE"
)
_MOVE_CHECKPOINTS = """checkpoints_moved AS (
    UPDATE projection_checkpoints SET last_seq=$2 WHERE name = ANY($1::text[]) AND last_seq < $2
)"""


def _checkpoints_write(names: list[str], last: int, notify: str | None) -> Write:
    if notify is None:
        return Write(_MOVE_CHECKPOINTS, [names, last])
    return Write(_MOVE_CHECKPOINTS, [names, last, notify], "pg_notify($3, $2::text)")


# Each checkpoint moved only from where the runner left it (sequence and epoch), and the statement
# aborted unless every one was (projections/schema.py, `ordo_checkpoints_held`). The statement holds
# its tables before it reaches these rows, the opposite order of a rebuild's swap (the rows, then the
# tables): it waits for rows a swap holds at most `_ROWS_WAIT` (set for this statement alone, before
# its first row is locked), then gives way (LockNotAvailableError) long before a deadlock would be
# detected, and the swap goes on.
_ROWS_WAIT = "50ms"
_HOLD_CHECKPOINTS = f"""checkpoints_moved AS (
    UPDATE projection_checkpoints c SET last_seq=$4
    FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS k(name, seq, epoch)
    WHERE c.name = k.name AND c.last_seq = k.seq AND c.epoch = k.epoch
      AND (SELECT set_config('lock_timeout', '{_ROWS_WAIT}', true)) IS NOT NULL
    RETURNING 1
)"""
_HELD = "ordo_checkpoints_held((SELECT count(*) FROM checkpoints_moved), $5::bigint)"


def _held_checkpoints_write(moving: list[tuple[str, int, int]], last: int, notify: str | None) -> Write:
    args: list[Any] = [
        [m[0] for m in moving],
        [m[1] for m in moving],
        [m[2] for m in moving],
        last,
        len(moving),
    ]
    if notify is None:
        return Write(_HOLD_CHECKPOINTS, args, _HELD)
    return Write(_HOLD_CHECKPOINTS, [*args, notify], f"{_HELD}, pg_notify($6, $4::text)")


async def _apply_batch(
    conn: asyncpg.Connection,
    projections: Sequence[Projection],
    batch: list[Record],
    memories: Memories | None,
    notify: str | None,
    isolate: bool,
) -> tuple[int, int, dict[str, tuple[int, int]] | None]:
    last = batch[-1][1].seq
    names = [p.name for p in projections]
    checkpoints = await lock_checkpoints(conn, names)
    writes, applied, skipped = await _plan(conn, conn, projections, batch, memories, checkpoints, isolate)
    # Every planned write and the checkpoints: one statement.
    await execute(conn, [*writes, _checkpoints_write(names, last, notify)])
    return applied, skipped, _moved(names, checkpoints, last)


def _moved(
    names: Sequence[str], checkpoints: dict[str, tuple[int, int]], last: int
) -> dict[str, tuple[int, int]] | None:
    """Where moving `checkpoints` of `names` to `last` leaves them (None when a row is missing: the
    move does not create it)."""
    if any(name not in checkpoints for name in names):
        return None
    return {name: (max(checkpoints[name][0], last), checkpoints[name][1]) for name in names}


async def _plan(
    conn: asyncpg.Connection,
    reads: Any,
    projections: Sequence[Projection],
    batch: list[Record],
    memories: Memories | None,
    checkpoints: dict[str, tuple[int, int]],
    isolate: bool,
) -> tuple[list[Write], int, int]:
    """The batch's planned writes, (records applied, records skipped); projections without a plan
    (and every projection when isolating) are applied on `conn` on the way. Plans read through
    `reads` (its `fetch`)."""
    last = batch[-1][1].seq
    applied = skipped = 0
    writes: list[Write] = []
    for projection in projections:
        done, epoch = checkpoints.get(projection.name, (0, 0))
        memory = None
        if memories is not None and projection.plan is not None:
            memory = memories.of(projection.name)
            memory.align((done, epoch))
            memory.moved((max(done, last), epoch))
        if last <= done:
            skipped += len(batch)
            continue
        mine = [r for fam, r in batch if fam == projection.family]
        fresh = [r for r in mine if r.seq > done]
        skipped += len(mine) - len(fresh)
        applied += len(fresh)
        if fresh and isolate:
            await _apply_total(conn, projection, fresh)
        elif fresh and projection.plan is not None:
            write = await projection.plan(reads, fresh, memory)
            if write is not None:
                writes.append(write)
        elif fresh:
            await projection.apply(conn, fresh)
    return writes, applied, skipped


class Pipeline:
    """Batches applied back to back in the caller's transaction, each planned (in Python) while the
    statement of the one before runs (in PostgreSQL): a rebuild's replay, and the live runner when it
    is behind. The caller holds the checkpoints (`checkpoints`: name -> (sequence, epoch), locked by
    the live runner, its own in a rebuild); each batch moves them as `apply_batch` would.

    A plan that must read a table first waits for the statement in flight, and so does a projection
    without a plan (it runs statements of its own). A failure surfaces from `add` or `drain`; the
    caller rolls back the transaction and the memories, and applies those batches again with
    `apply_batch`, which isolates a bad event."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        projections: Sequence[Projection],
        memories: Memories,
        checkpoints: dict[str, tuple[int, int]],
        notify: str | None = None,
    ) -> None:
        self._conn = conn
        self._projections = tuple(projections)
        self._names = [p.name for p in self._projections]
        self._planless = {p.family for p in self._projections if p.plan is None}
        self._memories = memories
        self._checkpoints = {name: checkpoints.get(name, (0, 0)) for name in self._names}
        self._complete = all(name in checkpoints for name in self._names)
        self._notify = notify
        self._pending: asyncio.Future[None] | None = None

    async def add(self, batch: list[Record]) -> tuple[int, int]:
        """Plan `batch` and send its statement; returns (records applied, records skipped)."""
        if not _whole(batch):
            raise UndecodableInBatch(batch[0][1].seq)
        if any(family in self._planless for family, _ in batch):
            await self.drain()
        reads = _AfterPending(self._conn, self._pending)
        writes, applied, skipped = await _plan(
            self._conn, reads, self._projections, batch, self._memories, self._checkpoints, isolate=False
        )
        last = batch[-1][1].seq
        statement = [*writes, _checkpoints_write(self._names, last, self._notify)]
        await self.drain()
        self._pending = asyncio.ensure_future(execute(self._conn, statement))
        moved = self._checkpoints.items()
        self._checkpoints = {name: (max(done, last), epoch) for name, (done, epoch) in moved}
        await asyncio.sleep(0)  # the statement is sent now, not when the caller next waits
        return applied, skipped

    @property
    def checkpoints(self) -> dict[str, tuple[int, int]] | None:
        """name -> (sequence, epoch) where the batches added so far leave the checkpoints (None when
        a checkpoint row was missing: the moves do not create it)."""
        return dict(self._checkpoints) if self._complete else None

    async def drain(self) -> None:
        """Wait for the statement in flight (its failure is raised here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    async def close(self) -> None:
        """After a failure: let the statement in flight end, whatever its outcome."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await asyncio.gather(pending, return_exceptions=True)


class UndecodableInBatch(Exception):
    """A batch holds a record that cannot be decoded: it is applied by `apply_batch`, which isolates it."""


# What makes a pipeline give way to `apply_batch` (when not an outage: see `pipeline_gives_way`).
PIPELINE_FAILURES: tuple[type[BaseException], ...] = (*_FAILURES, UndecodableInBatch)


def pipeline_gives_way(exc: BaseException, conn: asyncpg.Connection) -> bool:
    """After a batch (or a pipeline of them) failed with one of PIPELINE_FAILURES: True when it is to
    be applied again, isolating (bad data, a presumption that did not hold); False for an outage."""
    return isinstance(exc, (NotNew, UndecodableInBatch)) or poison.caused_by_data(exc, conn)


class _AfterPending:
    """A plan's reads: they wait for the statement in flight, whose writes they must see."""

    def __init__(self, conn: asyncpg.Connection, pending: asyncio.Future[None] | None) -> None:
        self._conn = conn
        self._pending = pending

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        if self._pending is not None:
            await self._pending
        return list(await self._conn.fetch(query, *args))


async def _apply_total(conn: asyncpg.Connection, projection: Projection, records: list[Any]) -> None:
    """Apply `records`, recording and skipping each one `projection` cannot apply."""
    good = []
    for rec in records:
        if isinstance(rec, Undecodable):
            await poison.record(conn, projection.name, projection.family, rec, rec.error)
            _log.error("projection %s skips seq %d: %s", projection.name, rec.seq, rec.error)
        else:
            good.append(rec)
    await _isolate(conn, projection, good)


async def _isolate(conn: asyncpg.Connection, projection: Projection, records: list[Any]) -> None:
    if not records:
        return
    try:
        async with conn.transaction():
            await projection.apply(conn, records)
        return
    except poison.DATA_ERRORS as exc:
        if not poison.caused_by_data(exc, conn):
            raise
        if len(records) == 1:
            await poison.record(conn, projection.name, projection.family, records[0], exc)
            _log.error("projection %s skips seq %d: %s", projection.name, records[0].seq, exc)
            return
    half = len(records) // 2
    await _isolate(conn, projection, records[:half])
    await _isolate(conn, projection, records[half:])
