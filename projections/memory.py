"""What a projection remembers per key (a task, an attempt) between batches, in the elected runner.

A projection that folds a task's events needs that task's state from earlier batches. Reading it back
from PostgreSQL costs a statement per batch and per projection; the runner that wrote it already knew
it. A `Memory` keeps those states in process, most recently used last, bounded.

It must never disagree with the tables, so it only ever holds what was committed:
  - a batch `put`s into a staged layer; `commit()` (after the transaction committed) promotes it,
    `rollback()` (after any failure) drops it;
  - `get` hands out the committed state itself, not a copy (copying every state a batch touched was
    about 8 % of the projector's CPU under W1): a fold may mutate it, so `rollback()` also
    forgets every committed state handed out since the last commit (read from the table next time);
  - the runner `clear()`s everything when it is (re)elected and when a checkpoint is not where its
    own last commit left it or its epoch moved (another writer, a rebuild's swap).
The memory also notes the checkpoint (sequence, epoch) its states reflect; `align` clears it when the
checkpoint row says otherwise.

A state `put` with `pin=True` is kept outside the least-recently-used order, up to `capacity` pinned
keys more: a projection pins the keys whose next events are certain and whose reading back costs
more than a row (the rollups' marks of a running task, folded again from its whole history, which
grows by a `lease_extended` every few seconds: decision 46). Under a load that touches more than
`capacity` keys between two of a running task's heartbeats, an unpinned task would be read back at
every heartbeat.

A key the memory does not hold is read from the table, as before. A key whose first event in a batch
creates it (`submitted`) is presumed new and not read at all; the projection's write checks the
presumption and raises `NotNew` when a row was there after all (a forged second `submitted`), and the
runner applies that batch again reading every key.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

import asyncpg

from ordo.domain import events as ev
from ordo.infra.event_store import StoredEvent

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

DEFAULT_CAPACITY = 20_000  # keys per projection: far more than the tasks in flight under W1
Position = tuple[int, int]  # (checkpoint sequence, checkpoint epoch)


_FORGOTTEN = object()


class NotNew(Exception):
    """A key a batch presumed new (no row, not remembered) had a row: apply the batch reading every key."""


class Memory:
    """Committed per-key states of one projection, and the current batch's staged ones."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity >= 1 required")
        self._capacity = capacity
        self._committed: OrderedDict[Hashable, Any] = OrderedDict()
        self._pinned: dict[Hashable, Any] = {}  # committed, outside the LRU order (oldest pin first)
        self._staged: dict[Hashable, Any] = {}
        self._staged_pins: set[Hashable] = set()
        self._lent: list[Hashable] = []  # committed states handed out since the last commit
        self._position: Position | None = None
        self._staged_position: Position | None = None

    def __len__(self) -> int:
        return len(self._committed) + len(self._pinned)

    def get(self, key: Hashable) -> Any | None:
        """The state of `key` as this batch left it so far, or as last committed; None when it is
        not remembered. What it hands out belongs to the batch: a rollback forgets it."""
        if key in self._staged:
            staged = self._staged[key]
            return None if staged is _FORGOTTEN else staged
        value = self._committed.get(key)
        if value is None:
            value = self._pinned.get(key)
        if value is not None:
            self._lent.append(key)
        return value

    def put(self, key: Hashable, value: Any, pin: bool = False) -> None:
        """Stage `key`'s state; `pin`: keep it out of the least-recently-used eviction once committed."""
        self._staged[key] = value
        if pin:
            self._staged_pins.add(key)
        else:
            self._staged_pins.discard(key)

    def align(self, position: Position) -> None:
        """Forget everything unless the committed states reflect exactly the checkpoint `position`."""
        current = self._staged_position if self._staged_position is not None else self._position
        if current != position:
            self.clear()
            self._position = position

    def moved(self, position: Position) -> None:
        """The checkpoint this batch will commit."""
        self._staged_position = position

    def forget(self, key: Hashable) -> None:
        """Read `key` from its table next time (staged: undone by a rollback like any put)."""
        self._staged[key] = _FORGOTTEN

    def commit(self) -> None:
        if self._staged_position is not None:
            self._position, self._staged_position = self._staged_position, None
        committed, pinned = self._committed, self._pinned
        for key, value in self._staged.items():
            committed.pop(key, None)
            pinned.pop(key, None)
            if value is not _FORGOTTEN:  # (re)inserted: the most recent of its kind
                (pinned if key in self._staged_pins else committed)[key] = value
        self._staged.clear()
        self._staged_pins.clear()
        self._lent.clear()
        while len(committed) > self._capacity:
            committed.popitem(last=False)
        while len(pinned) > self._capacity:
            del pinned[next(iter(pinned))]

    def rollback(self) -> None:
        """Drop the batch's states, and forget the committed ones it was handed (it may have
        changed them)."""
        committed, pinned = self._committed, self._pinned
        for key in self._lent:
            committed.pop(key, None)
            pinned.pop(key, None)
        self._lent.clear()
        self._staged.clear()
        self._staged_pins.clear()
        self._staged_position = None

    def clear(self) -> None:
        self.rollback()
        self._committed.clear()
        self._pinned.clear()
        self._position = None


class Memories:
    """One `Memory` per projection name, committed, rolled back and cleared together; and where the
    checkpoints of every projection stand after the runner's last commit (None when not known)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._by_name: dict[str, Memory] = {}
        self._checkpoints: dict[str, Position] | None = None
        self._staged_checkpoints: dict[str, Position] | None = None

    @property
    def checkpoints(self) -> dict[str, Position] | None:
        """name -> (sequence, epoch) as this runner's last commit left them, or None."""
        return self._checkpoints

    def moved_checkpoints(self, checkpoints: dict[str, Position] | None) -> None:
        """Where the batch being committed leaves the checkpoints (None: not known). A commit that was
        not told forgets them."""
        self._staged_checkpoints = None if checkpoints is None else dict(checkpoints)

    def of(self, name: str) -> Memory:
        memory = self._by_name.get(name)
        if memory is None:
            memory = self._by_name[name] = Memory(self._capacity)
        return memory

    def commit(self) -> None:
        for memory in self._by_name.values():
            memory.commit()
        self._checkpoints, self._staged_checkpoints = self._staged_checkpoints, None

    def rollback(self) -> None:
        for memory in self._by_name.values():
            memory.rollback()
        self._staged_checkpoints = None

    def clear(self, names: Iterable[str] | None = None) -> None:
        for name in self._by_name if names is None else names:
            if name in self._by_name:
                self._by_name[name].clear()
        self._checkpoints = self._staged_checkpoints = None


def first_events(records: Iterable[R], key: Callable[[R], K]) -> dict[K, R]:
    """Each key's first record in a batch, keys in order of first appearance."""
    out: dict[K, R] = {}
    for record in records:
        out.setdefault(key(record), record)
    return out


TaskKey = tuple[str, str]  # (tenant, task id)


def sort_tasks(
    events: Iterable[StoredEvent], memory: Memory | None
) -> tuple[dict[TaskKey, Any], set[TaskKey], list[TaskKey]]:
    """The batch's tasks in order of first appearance, sorted three ways: remembered (key -> what
    the memory keeps), presumed new (first event `submitted`, not remembered) and unknown (to be
    read from the table). Without a memory every task is unknown."""
    remembered: dict[TaskKey, Any] = {}
    new: set[TaskKey] = set()
    unknown: list[TaskKey] = []
    for key, first in first_events(events, lambda e: (e.tenant, e.task_id)).items():
        if memory is not None:
            kept = memory.get(key)
            if kept is not None:
                remembered[key] = kept
                continue
            if isinstance(first.event, ev.Submitted):
                new.add(key)
                continue
        unknown.append(key)
    return remembered, new, unknown


async def fetch_tasks(
    conn: asyncpg.Connection, select: str, keys: list[TaskKey], id_column: str = "task_id"
) -> list[asyncpg.Record]:
    """The rows of `select` (`SELECT … FROM table`) for the (tenant, id) `keys`, in one statement."""
    return list(
        await conn.fetch(
            f"{select} WHERE (tenant, {id_column}) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
    )
