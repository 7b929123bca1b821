"""The schedule command handler: load -> fold -> decide -> effects -> append with the expected sequence.

Mirrors infra/command_handler.py for the schedule aggregate (`ordo.sched.<tenant>.<id>.*`). The order
of writes follows the timers rule (docs/decisions.md §4): the tasks a tick creates are submitted first
(idempotently: id and idempotency key derived from schedule + tick; they are what must start on
time), then the next tick's timer is armed, then the `fired` event that needs both is appended. A
crash at any point leaves at worst a timer or a task the redelivered tick finds again — never a
`fired` without its task. The overlap check loads the previous run's task from the event log, never
from a read model (a run read ahead as ended is not read again: an ended task stays ended).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import nats.errors

from ordo.domain import schedule_commands as sc
from ordo.domain import schedule_events as se
from ordo.domain.commands import CancelTask, SubmitTask
from ordo.domain.errors import DomainError
from ordo.domain.schedule_decide import decide
from ordo.domain.schedule_state import ScheduleState, evolve, initial
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.decider_runner import Decision, run_decider
from ordo.infra.event_store import EventStoreUnavailable, RawStored, readable
from ordo.infra.schedule_timers import ScheduleTimers


@dataclass(frozen=True)
class ScheduleOutcome:
    state: ScheduleState
    events: list[se.ScheduleEvent]
    seqs: list[int]
    last_seq: int

    @property
    def waiting(self) -> bool:
        """The tick is buffered behind a running task: deliver it again later."""
        return self.state.buffered_at is not None


@dataclass(frozen=True)
class Preloaded:
    """A schedule read ahead of a tick: its state, last sequence, and its previous run if that
    had already ended (an active one is read again at the tick)."""

    state: ScheduleState
    last_seq: int
    previous: sc.PreviousRun | None


@dataclass(frozen=True)
class TaskDefaults:
    max_attempts: int = 3
    timeout_s: float = 300.0


class ScheduleHandler:
    def __init__(
        self,
        tasks: CommandHandler,
        timers: ScheduleTimers,
        defaults: TaskDefaults | None = None,
        max_retries: int = 8,
    ) -> None:
        self.tasks = tasks
        self.store = tasks.store
        self.timers = timers
        self._defaults = defaults or TaskDefaults()
        self._max_retries = max_retries

    async def load(self, tenant: str, schedule_id: str) -> tuple[ScheduleState, list[RawStored], int]:
        """The schedule's state, its events (a message that is not one is left out, as a task's
        load leaves it out: infra/event_store.py) and the last sequence of its subjects."""
        stored, last_seq = await self.store.load_raw(sj.schedule_events_filter(tenant, schedule_id))
        state = initial(schedule_id)
        history: list[RawStored] = []
        for raw in stored:
            event = readable(raw, se.decode_schedule_event, "a schedule event")
            if event is not None:
                state = evolve(state, event)
                history.append(raw)
        return state, history, last_seq

    async def execute(
        self, tenant: str, command: sc.AnyScheduleCommand, known: Preloaded | None = None
    ) -> ScheduleOutcome:
        """Run one command; on a concurrent append, reload and decide again (bounded).

        `known` is what the caller read ahead (the scheduler, while it held the tick). If nothing
        was appended to the schedule since (one direct get over the log's tail, not a load of its
        history), the first try decides on it; otherwise the schedule is loaded as usual.
        """
        sid = command.schedule_id
        ahead: list[Preloaded] = []
        if known is not None:
            since = await self.store.next_seq_after(sj.schedule_events_filter(tenant, sid), known.last_seq)
            ahead = [known] if since == 0 else []
        ended = ahead[0].previous if ahead else None

        async def load() -> tuple[ScheduleState, int]:
            if ahead:
                first = ahead.pop()
                return first.state, first.last_seq
            state, _, last_seq = await self.load(tenant, sid)
            return state, last_seq

        async def decide_on(state: ScheduleState) -> list[se.ScheduleEvent]:
            if isinstance(command, sc.Tick):  # a tick decides on its previous run's state too
                previous = await self._previous(tenant, state, ended)
                return decide(msgspec.structs.replace(command, previous=previous), state)
            return decide(command, state)

        async def store(d: Decision[ScheduleState, se.ScheduleEvent]) -> ScheduleOutcome:
            return await self._apply(tenant, d.before, d.after, d.events, d.last_seq)

        async def unchanged(d: Decision[ScheduleState, se.ScheduleEvent]) -> ScheduleOutcome:
            return ScheduleOutcome(d.before, [], [], d.last_seq)

        return await run_decider(
            f"schedule {sid}", load, decide_on, evolve, store, unchanged, self._max_retries
        )

    async def read_ahead(self, tenant: str, schedule_id: str) -> Preloaded:
        """The schedule and its previous run, read before a tick is due (see `execute`)."""
        state, _, last_seq = await self.load(tenant, schedule_id)
        previous = await self._previous(tenant, state)
        return Preloaded(state, last_seq, previous if previous is not None and not previous.active else None)

    async def _previous(
        self, tenant: str, state: ScheduleState, ended: sc.PreviousRun | None = None
    ) -> sc.PreviousRun | None:
        if state.last_task_id is None:
            return None
        allow = state.spec is not None and state.spec.overlap is se.OverlapPolicy.ALLOW
        if allow and state.buffered_at is None:
            return None  # runs may overlap and none waits: whether the last one runs is not asked
        if ended is not None and ended.task_id == state.last_task_id:
            return ended  # read ahead and already over: an ended task stays ended
        task, _, _ = await self.tasks.load(tenant, state.last_task_id)
        active = task.exists and not task.status.terminal
        return sc.PreviousRun(task_id=state.last_task_id, active=active)

    async def _apply(
        self,
        tenant: str,
        old: ScheduleState,
        new: ScheduleState,
        events: list[se.ScheduleEvent],
        last_seq: int,
    ) -> ScheduleOutcome:
        sid = new.schedule_id
        assert new.spec is not None or not any(_creates_task(e) for e in events)
        # The tick's task first (it is what must start on time), then the next tick's timer (armed
        # even if the task was refused: the chain of ticks never breaks), then the events.
        try:
            for event in events:
                if isinstance(event, se.ScheduleFired) and event.cancelled_task_id:
                    await self._cancel(tenant, event.cancelled_task_id)
                if isinstance(event, (se.ScheduleFired, se.ScheduleCaughtUp)):
                    assert new.spec is not None
                    await self._submit(tenant, sid, new.spec, event.task_id, event.tick_at.isoformat())
                elif isinstance(event, se.ScheduleTriggered):
                    assert new.spec is not None
                    await self._submit(tenant, sid, new.spec, event.task_id, "trigger:" + event.task_id)
        finally:
            try:
                if new.next_at is not None and (new.next_at != old.next_at or not old.active):
                    await self.timers.arm(tenant, sid, new.next_at)
            except nats.errors.Error as exc:
                raise EventStoreUnavailable(f"arming the schedule timer failed: {exc}") from exc
        msgs: list[tuple[str, bytes, dict[str, str]]] = [
            (
                sj.schedule_event_subject(tenant, sid, se.schedule_event_name(e)),
                se.encode_schedule_event(e),
                {},
            )
            for e in events
        ]
        seqs = await self.store.append_raw(msgs, last_seq, sj.schedule_events_filter(tenant, sid))
        if new.next_at is None and old.next_at is not None:
            try:
                await self.timers.disarm(tenant, sid, old.next_at)
            except nats.errors.Error:
                pass  # best effort: a stale tick is ignored
        return ScheduleOutcome(new, events, seqs, seqs[-1])

    async def _cancel(self, tenant: str, task_id: str) -> None:
        try:
            await self.tasks.execute(tenant, CancelTask(task_id=task_id, reason="schedule: cancel_previous"))
        except DomainError:
            pass  # it ended meanwhile: nothing to cancel

    async def _submit(
        self, tenant: str, schedule_id: str, spec: se.ScheduleSpec, task_id: str, run_key: str
    ) -> None:
        """Submit the run's task; a repeat (redelivered tick, second scheduler) appends nothing."""
        t = spec.task
        key = f"schedule:{schedule_id}:{run_key}"
        await self.tasks.execute(
            tenant,
            SubmitTask(
                task_id=task_id,
                tenant=tenant,
                queue=t.queue,
                task_type=t.type,
                now=datetime.now(UTC),
                payload=t.payload,
                priority=t.priority,
                max_attempts=t.max_attempts or self._defaults.max_attempts,
                timeout_s=t.timeout or self._defaults.timeout_s,
                tags=(*t.tags, f"schedule:{schedule_id}")[:20],
                idempotency_key=key,
                body_hash=hashlib.sha256(key.encode()).hexdigest(),
            ),
        )


def _creates_task(event: se.ScheduleEvent) -> bool:
    return isinstance(event, (se.ScheduleFired, se.ScheduleCaughtUp, se.ScheduleTriggered))
