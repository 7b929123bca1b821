"""Pausing and resuming a queue for one tenant: an event in the log, which the workers act on.

`PauseQueue` appends `paused` on `ordo.queue.<tenant>.<queue>.paused` with the same optimistic
concurrency as tasks; `ResumeQueue` appends `resumed`. That is all: the workers of the queue follow
these events and hold the tickets of a paused (tenant, queue) instead of running them, then put
them back on resume (workers/queue_pause.py). Work consumers are shared by tenants and are never
paused, so one tenant's pause does not touch another's dispatch (docs/decisions.md 20).

Versions before that paused the queue's work consumers themselves; a resume still resumes any work
consumer left paused that way (listed in the outcome), so an upgrade never strands a queue.
"""

from __future__ import annotations

from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig

from ordo.domain.queue_control import (
    PauseQueue,
    QueueEvent,
    QueueState,
    ResumeQueue,
    decide,
    decode_queue_event,
    encode_queue_event,
    evolve,
    queue_event_name,
)
from ordo.infra import subjects as sj
from ordo.infra.decider_runner import Decision, run_decider
from ordo.infra.event_store import EventStore, EventStoreUnavailable, readable
from ordo.infra.settings import Settings


@dataclass(frozen=True)
class QueueOutcome:
    state: QueueState
    appended: bool
    last_seq: int
    consumers: list[str]


class QueueController:
    def __init__(self, nc: NATS, store: EventStore, settings: Settings) -> None:
        self._js = nc.jetstream()
        self._store = store
        self._settings = settings

    async def load(self, tenant: str, queue: str) -> tuple[QueueState, int]:
        history, last_seq = await self._store.load_raw(sj.queue_events_filter(tenant, queue))
        state = QueueState(queue=queue)
        for raw in history:
            event = readable(raw, decode_queue_event, "a queue event")  # docs/decisions.md 56
            if event is not None:
                state = evolve(state, event)
        return state, last_seq

    async def execute(self, tenant: str, command: PauseQueue | ResumeQueue) -> QueueOutcome:
        queue = command.queue

        async def decide_on(state: QueueState) -> list[QueueEvent]:
            return decide(command, state)

        async def store(d: Decision[QueueState, QueueEvent]) -> QueueOutcome:
            msgs: list[tuple[str, bytes, dict[str, str]]] = [
                (sj.queue_event_subject(tenant, queue, queue_event_name(e)), encode_queue_event(e), {})
                for e in d.events
            ]
            seqs = await self._store.append_raw(msgs, d.last_seq, sj.queue_events_filter(tenant, queue))
            return QueueOutcome(d.after, True, seqs[-1], await self._apply(queue, d.after.paused))

        async def unchanged(d: Decision[QueueState, QueueEvent]) -> QueueOutcome:
            return QueueOutcome(d.after, False, d.last_seq, await self._apply(queue, d.after.paused))

        return await run_decider(
            f"queue {queue}", lambda: self.load(tenant, queue), decide_on, evolve, store, unchanged
        )

    async def _apply(self, queue: str, paused: bool) -> list[str]:
        """On resume, resume the queue's work consumers an older version paused; their names."""
        if paused:
            return []
        try:
            names = []
            for info in await self._js.consumers_info(sj.EVENTS_STREAM):
                if info.paused and _is_work_consumer_of(info.config, queue):
                    await self._js.resume_consumer(sj.EVENTS_STREAM, info.name)
                    names.append(info.name)
        except nats.errors.Error as exc:
            raise EventStoreUnavailable(f"consumer resume failed: {exc}") from exc
        return sorted(names)


def _is_work_consumer_of(config: ConsumerConfig, queue: str) -> bool:
    filters = [config.filter_subject] if config.filter_subject else list(config.filter_subjects or [])
    return any(f.startswith(sj.WORK_PREFIX + ".") and f.split(".")[3:4] == [queue] for f in filters)
