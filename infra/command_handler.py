"""The one command handler: load -> fold -> decide -> append with the expected sequence.

The gateway, the NATS command API, the workers and the scheduler all change tasks through it; nothing
else appends task events. The event that makes a task runnable is its own dispatch ticket (its
subject carries the band, infra/dispatch.py); a durable timer is armed before the event that needs
it. Timers are per due time (infra/timers.py), so a timer armed for a decision that was then not
stored (a duplicate, a conflict, a failed append) is only a stale timer, which the decider ignores:
it never replaces the timer of the due time the log holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ordo.domain.commands import EnqueueDue, SubmitTask, TaskCommand
from ordo.domain.decide import decide
from ordo.domain.errors import DomainError, TaskAlreadyExists
from ordo.domain.events import Event, Submitted
from ordo.domain.priority import band_for
from ordo.domain.state import TaskState, evolve, initial
from ordo.domain.status import TaskStatus
from ordo.infra.dispatch import snapshot_for
from ordo.infra.event_store import (
    MAX_ATOMIC_BATCH,
    AppendItem,
    ConcurrencyError,
    EventStore,
    EventStoreError,
    Metadata,
    Runnable,
    StoredEvent,
)
from ordo.infra.read_gate import ReadGate
from ordo.infra.timers import Timers


class AtomicBatchTooLarge(ValueError):
    """An atomic submit of more messages than one atomic batch holds (nothing was appended)."""

    def __init__(self, messages: int) -> None:
        super().__init__(
            f"an atomic batch holds at most {MAX_ATOMIC_BATCH} events, these tasks are {messages}"
            " (a delayed task is two)"
        )
        self.messages = messages


@dataclass(frozen=True)
class Prepared:
    """A command decided ahead on a known state, its messages encoded: at its time, one publish."""

    command: TaskCommand
    state: TaskState  # after the events
    events: list[Event]
    msgs: list[tuple[str, bytes, dict[str, str]]]


@dataclass(frozen=True)
class Outcome:
    """What a command did: the state after it, the events it appended and their sequences."""

    state: TaskState
    events: list[Event]
    seqs: list[int]
    last_seq: int


class CommandHandler:
    """`pipelined_batches`: a batch submit of tasks that are not delayed goes out as one message per
    task (decision 45). False where nats-server fsyncs every write (`sync_interval: always`): each
    message is then an fsync of its own and one atomic batch per 1,000 is the cheaper way.
    `gate`: a batch submit goes out in pieces, each waiting while the read model trails the log
    (infra/read_gate.py, decision 59); None: unpaced. `pace` (a worker's): every event `execute`
    appends is timed until the read model shows it, and the worker takes new tickets only while
    `pace.keep_up()` lets it (decision 60); None: not timed."""

    def __init__(
        self,
        store: EventStore,
        timers: Timers,
        max_retries: int = 8,
        *,
        pipelined_batches: bool = True,
        gate: ReadGate | None = None,
        pace: ReadGate | None = None,
    ) -> None:
        self.store = store
        self.timers = timers
        self._max_retries = max_retries
        self.pipelined_batches = pipelined_batches
        self.gate = gate
        self.pace = pace
        # The last sequence a batch submit of this handler stored (what the gate measures against).
        self._log_end = 0

    async def load(self, tenant: str, task_id: str) -> tuple[TaskState, list[StoredEvent], int]:
        history, last_seq = await self.store.load(tenant, task_id)
        state = initial(task_id)
        for stored in history:
            state = evolve(state, stored.event)
        return state, history, last_seq

    async def load_at(self, tenant: str, task_id: str, seq: int) -> tuple[TaskState, TaskState, int]:
        """The task's state right after sequence `seq` (e.g. a dispatch's own event), its state
        now and its last sequence: one load (a worker's slow path; the fast one loads nothing)."""
        state, history, last_seq = await self.load(tenant, task_id)
        then = initial(task_id)
        for stored in history:
            if stored.seq > seq:
                break
            then = evolve(then, stored.event)
        return then, state, last_seq

    async def execute(
        self,
        tenant: str,
        command: TaskCommand,
        meta: Metadata | None = None,
        known: tuple[TaskState, int] | None = None,
        prepared: Prepared | None = None,
    ) -> Outcome:
        """Run one command; on a concurrent append, reload and decide again (bounded).

        `known` is the caller's latest (state, last sequence) of the task, e.g. a worker's own last
        outcome: the first try decides on it without a load. Stale, it costs nothing but a conflict
        (the append expects its sequence) and a reload; a no-op or a refusal decided on it is decided
        again on the log, so a stale state never answers for the task. `prepared` (from `prepare`,
        on that same `known`) is the first try already decided and encoded: it is only published.
        What it appended is timed by `pace`, where there is one.
        """
        out = await self._execute(tenant, command, meta, known, prepared)
        if self.pace is not None and out.events:
            self.pace.stored(out.last_seq)
        return out

    async def _execute(
        self,
        tenant: str,
        command: TaskCommand,
        meta: Metadata | None,
        known: tuple[TaskState, int] | None,
        prepared: Prepared | None,
    ) -> Outcome:
        """`execute` without the timing."""
        if prepared is not None and prepared.command is command:
            try:
                seqs = await self.store.publish(prepared.msgs)
                return Outcome(prepared.state, prepared.events, seqs, seqs[-1])
            except ConcurrencyError:
                known = None  # the task moved since: decide again on the log
        for _ in range(self._max_retries):
            guessed = known is not None
            if known is not None:
                (state, last_seq), known = known, None
            elif isinstance(command, SubmitTask):
                # The first try assumes a new task: no round trip for the common case.
                state, last_seq = initial(command.task_id), 0
            else:
                state, _, last_seq = await self.load(tenant, command.task_id)
            try:
                out = await self._apply(tenant, command, state, last_seq, meta)
            except ConcurrencyError:
                if isinstance(command, SubmitTask) and not guessed:
                    state, history, last_seq = await self.load(tenant, command.task_id)
                    try:
                        return await self._apply(tenant, command, state, last_seq, meta)
                    except ConcurrencyError:
                        continue
                    except TaskAlreadyExists:
                        own = _own_submit(command, state, history, last_seq)
                        if own is None:
                            raise
                        return own
                continue
            except DomainError:
                if guessed:
                    continue  # refused on a possibly stale state: decide again on the log
                raise
            if guessed and not out.events:
                continue  # decide again on the log
            return out
        raise ConcurrencyError(f"task {command.task_id}: too many concurrent changes")

    def prepare(self, tenant: str, command: TaskCommand, known: tuple[TaskState, int]) -> Prepared | None:
        """Decide `command` on `known` and encode its append, ahead of its time (a timer held until
        its due time: at the due time it is one publish). None when it would append nothing, be
        refused, or need more than the append (a timer to arm, an old one to disarm): `execute`
        then decides at the time as usual."""
        state, last_seq = known
        try:
            d = _decided(command, state)
        except DomainError:
            return None
        if not d.events or d.arm is not None or d.disarm is not None:
            return None
        msgs = self.store.messages(tenant, d.state.queue, d.state.task_id, d.events, last_seq, d.runnable)
        return Prepared(command, d.state, d.events, msgs)

    async def submit_many(
        self,
        tenant: str,
        commands: Sequence[SubmitTask],
        meta: Metadata | None = None,
        *,
        atomic: bool = False,
    ) -> list[Outcome]:
        """Submit new tasks in chunks of at most MAX_ATOMIC_BATCH messages.

        `atomic`: all of them in one atomic batch, stored together or not at all (AtomicBatchTooLarge,
        before anything is appended, when they are more than MAX_ATOMIC_BATCH messages).

        Every task appends with expected sequence 0. A chunk of one-event tasks (a submit that is
        not delayed) goes out as pipelined single messages, each task stored or not by itself; a
        chunk holding a task of several events (a delayed submit) is one atomic batch. What
        conflicts (an idempotency key already used, or our own earlier write whose reply was lost)
        is replayed task by task through `execute`, which decides each against its real history
        (a conflicting atomic chunk stored nothing: all of it is replayed).
        The caller validated every command (decide raises nothing for a new task).
        """
        decided: list[tuple[SubmitTask, TaskState, list[Event], AppendItem]] = []
        for command in commands:
            state = initial(command.task_id)
            events = decide(command, state)
            new = state
            for event in events:
                new = evolve(new, event)
            item = AppendItem(new.queue, new.task_id, events, 0, _runnable(state, new, events), meta)
            decided.append((command, new, events, item))
        if atomic and (messages := sum(len(events) for _, _, events, _ in decided)) > MAX_ATOMIC_BATCH:
            raise AtomicBatchTooLarge(messages)
        limit = MAX_ATOMIC_BATCH if atomic or self.gate is None else min(MAX_ATOMIC_BATCH, self.gate.piece)
        budget = self.gate.max_wait_s if self.gate is not None else 0.0  # the call's waiting, left
        outcomes: list[Outcome] = []
        for chunk in _chunks(decided, limit):
            if self.gate is not None and budget > 0:  # the read model near enough what we stored
                budget -= await self.gate.admit(self._log_end, budget)
            done = await self._flush(tenant, chunk, meta, atomic)
            self._log_end = max([self._log_end, *(o.last_seq for o in done)])
            if self.gate is not None:
                self.gate.stored(self._log_end)  # timed until the read model shows it
            outcomes += done
        return outcomes

    async def _flush(
        self,
        tenant: str,
        chunk: list[tuple[SubmitTask, TaskState, list[Event], AppendItem]],
        meta: Metadata | None,
        atomic: bool,
    ) -> list[Outcome]:
        for _, new, _, _ in chunk:
            if new.status in (TaskStatus.SCHEDULED, TaskStatus.RETRYING) and new.due_at is not None:
                await self.timers.arm(tenant, new.task_id, new.due_at)
        if self.pipelined_batches and not atomic and all(len(events) == 1 for _, _, events, _ in chunk):
            return await self._flush_singles(tenant, chunk, meta)
        try:
            seqs = await self.store.append_many(tenant, [item for *_, item in chunk])
        except ConcurrencyError:
            if atomic:
                return await self._atomic_again(tenant, [command for command, *_ in chunk], meta)
            return [await self.execute(tenant, command, meta) for command, *_ in chunk]
        return [Outcome(new, events, s, s[-1]) for (_, new, events, _), s in zip(chunk, seqs, strict=True)]

    async def _atomic_again(
        self, tenant: str, commands: list[SubmitTask], meta: Metadata | None
    ) -> list[Outcome]:
        """An atomic batch that conflicted stored nothing. The tasks that exist now are answered first
        through `execute` (a repeated key or our own write whose reply was lost appends nothing; a
        clash raises before anything is stored), then the others go out again as one atomic batch."""
        exists = {c.task_id for c in commands if (await self.load(tenant, c.task_id))[0].exists}
        answered = {c.task_id: await self.execute(tenant, c, meta) for c in commands if c.task_id in exists}
        fresh = [c for c in commands if c.task_id not in exists]
        if fresh:
            outcomes = await self.submit_many(tenant, fresh, meta, atomic=True)
            answered.update((c.task_id, o) for c, o in zip(fresh, outcomes, strict=True))
        return [answered[c.task_id] for c in commands]

    async def _flush_singles(
        self,
        tenant: str,
        chunk: list[tuple[SubmitTask, TaskState, list[Event], AppendItem]],
        meta: Metadata | None,
    ) -> list[Outcome]:
        """A chunk of one-event submits: each task its own message, all pipelined (decision 45).
        A task that conflicts (its id already used, or our own write whose reply was lost) is decided
        again through `execute`; any other failure is raised once every append has answered (what
        was stored stays stored: a retried request finds those tasks and reports them)."""
        results = await self.store.append_singles(tenant, [item for *_, item in chunk])
        failed = next(
            (r for r in results if isinstance(r, EventStoreError) and not isinstance(r, ConcurrencyError)),
            None,
        )
        if failed is not None:
            raise failed
        outcomes = []
        for (command, new, events, _), result in zip(chunk, results, strict=True):
            if isinstance(result, EventStoreError):
                outcomes.append(await self.execute(tenant, command, meta))
            else:
                outcomes.append(Outcome(new, events, result, result[-1]))
        return outcomes

    async def _apply(
        self,
        tenant: str,
        command: TaskCommand,
        state: TaskState,
        last_seq: int,
        meta: Metadata | None,
    ) -> Outcome:
        d = _decided(command, state)
        if not d.events:
            return Outcome(state, [], [], last_seq)
        new = d.state
        if d.arm is not None:
            await self.timers.arm(tenant, new.task_id, d.arm)
        seqs = await self.store.append(
            tenant, new.queue, new.task_id, d.events, last_seq, runnable=d.runnable, meta=meta
        )
        if d.disarm is not None:
            await self.timers.disarm(tenant, new.task_id, d.disarm)
        return Outcome(new, d.events, seqs, seqs[-1])


@dataclass(frozen=True)
class _Decision:
    """A command decided on a state: its events, the state after them, and what the append needs
    around it (the timer to arm before it, the one to disarm after it)."""

    events: list[Event]
    state: TaskState
    runnable: Runnable | None
    arm: datetime | None
    disarm: datetime | None


def _decided(command: TaskCommand, state: TaskState) -> _Decision:
    events = decide(command, state)
    new = state
    for event in events:
        new = evolve(new, event)
    waits = new.status in (TaskStatus.SCHEDULED, TaskStatus.RETRYING)
    # (Re-)arm when the due time changes or the task comes back to waiting (resume): a timer
    # that fired while the task was paused was ignored.
    rearm = new.due_at != state.due_at or new.status is not state.status
    arm = new.due_at if waits and rearm else None
    # The old due time's timer is cleaned up once the log no longer needs it (best effort: a
    # stale timer is ignored). A timer that enqueued the task has fired already.
    moved = state.due_at is not None and new.due_at != state.due_at and not isinstance(command, EnqueueDue)
    disarm = state.due_at if moved else None
    runnable = _runnable(state, new, events) if events else None
    return _Decision(events, new, runnable, arm, disarm)


_Decided = tuple[SubmitTask, TaskState, list[Event], AppendItem]


def _chunks(decided: list[_Decided], limit: int) -> list[list[_Decided]]:
    """`decided` in order, in chunks of at most `limit` events (a task's events stay together)."""
    chunks: list[list[_Decided]] = []
    size = 0
    for entry in decided:
        count = len(entry[2])
        if not chunks or size + count > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += count
    return chunks


def _runnable(state: TaskState, new: TaskState, events: list[Event]) -> Runnable | None:
    """The append makes the task runnable with a new dispatch number: its last event is the
    dispatch, on the band of the task's priority, with the snapshot a worker starts from."""
    if new.status is TaskStatus.QUEUED and new.dispatch != state.dispatch:
        return Runnable(band_for(new.priority), snapshot_for(new, isinstance(events[-1], Submitted)))
    return None


def _own_submit(
    command: SubmitTask, state: TaskState, history: list[StoredEvent], last_seq: int
) -> Outcome | None:
    """The outcome of `command` if the task it names is the one it created itself.

    A submit whose reply was lost is retried with the same message ids; when the first try did land,
    the retry conflicts and the reload finds the task. A fresh random id (no idempotency key) that
    exists with this command's content can only be our own write: answer with it as created, never
    as "already exists" (a client that took a 409 for "not created" would submit it again).
    """
    if command.idempotency_key is not None or not state.exists:
        return None
    if (state.task_type, state.queue, state.payload) != (command.task_type, command.queue, command.payload):
        return None
    count = len(decide(command, initial(command.task_id)))
    mine = history[:count]
    return Outcome(state, [e.event for e in mine], [e.seq for e in mine], last_seq)
