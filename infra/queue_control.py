"""Pausing and resuming a queue: an event in the log (the record) and JetStream consumer pause (the effect).

`PauseQueue` appends `paused` on `ordo.queue.<tenant>.<queue>.paused` with the same optimistic
concurrency as tasks, then pauses every work consumer of that queue (the priority bands and any
type-limit lanes: every consumer whose filter is `ordo.work.*.<queue>.…`). A paused consumer
delivers nothing, so workers start nothing from the queue; tickets already delivered run to the end.
Band consumers that do not exist yet are created paused, so a worker starting later stays idle
(a create-or-update without `pause_until` keeps a consumer's pause). The effect is re-applied on
every call, even when the event is already there, so repeating a request repairs a half-done one.

Limitation: work consumers are per queue name, shared by tenants (infra/subjects.work_consumer), so
with several tenants a queue pause stops that queue name for all of them (docs/decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from ordo.domain.priority import BANDS
from ordo.domain.queue_control import (
    PauseQueue,
    QueueState,
    ResumeQueue,
    decide,
    decode_queue_event,
    encode_queue_event,
    evolve,
    queue_event_name,
)
from ordo.infra import subjects as sj
from ordo.infra.event_store import ConcurrencyError, EventStore, EventStoreUnavailable
from ordo.infra.settings import Settings

PAUSE_UNTIL = "2999-01-01T00:00:00Z"  # "until resumed"


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
            state = evolve(state, decode_queue_event(raw.data))
        return state, last_seq

    async def execute(self, tenant: str, command: PauseQueue | ResumeQueue) -> QueueOutcome:
        for _ in range(8):
            state, last_seq = await self.load(tenant, command.queue)
            events = decide(command, state)
            new = state
            for event in events:
                new = evolve(new, event)
            if events:
                msgs: list[tuple[str, bytes, dict[str, str]]] = [
                    (
                        sj.queue_event_subject(tenant, command.queue, queue_event_name(e)),
                        encode_queue_event(e),
                        {},
                    )
                    for e in events
                ]
                try:
                    seqs = await self._store.append_raw(
                        msgs, last_seq, sj.queue_events_filter(tenant, command.queue)
                    )
                except ConcurrencyError:
                    continue
                last_seq = seqs[-1]
            consumers = await self._apply(command.queue, new.paused)
            return QueueOutcome(new, bool(events), last_seq, consumers)
        raise ConcurrencyError(f"queue {command.queue}: too many concurrent changes")

    async def _apply(self, queue: str, paused: bool) -> list[str]:
        """Pause or resume every work consumer of `queue`; returns their names."""
        try:
            names = await self._work_consumers(queue)
            if paused:
                names |= await self._create_missing_bands(queue, names)
            for name in sorted(names):
                if paused:
                    await self._js.pause_consumer(sj.EVENTS_STREAM, name, PAUSE_UNTIL)
                else:
                    await self._js.resume_consumer(sj.EVENTS_STREAM, name)
        except nats.errors.Error as exc:
            raise EventStoreUnavailable(f"consumer pause failed: {exc}") from exc
        return sorted(names)

    async def _work_consumers(self, queue: str) -> set[str]:
        names: set[str] = set()
        for info in await self._js.consumers_info(sj.EVENTS_STREAM):
            cfg = info.config
            filters = [cfg.filter_subject] if cfg.filter_subject else list(cfg.filter_subjects or [])
            for f in filters:
                tokens = f.split(".")
                if f.startswith(sj.WORK_PREFIX + ".") and len(tokens) > 3 and tokens[3] == queue:
                    names.add(info.name)
        return names

    async def _create_missing_bands(self, queue: str, existing: set[str]) -> set[str]:
        from ordo.workers.consumer import work_consumer_config  # the workers' own consumer definition

        created: set[str] = set()
        for band in range(len(BANDS)):
            name = sj.work_consumer(queue, band)
            if name in existing:
                continue
            config = work_consumer_config(queue, band, self._settings)
            config.pause_until = PAUSE_UNTIL
            try:
                await self._js.add_consumer(sj.EVENTS_STREAM, config=config)
            except NotFoundError:
                continue
            created.add(name)
        return created

    async def paused_consumers(self, queue: str) -> dict[str, bool]:
        """Each work consumer of `queue` and whether the server has it paused (for the API)."""
        out: dict[str, bool] = {}
        for name in sorted(await self._work_consumers(queue)):
            info = await self._js.consumer_info(sj.EVENTS_STREAM, name)
            out[name] = bool(info.paused)
        return out
