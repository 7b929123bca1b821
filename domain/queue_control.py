"""Queue control: pausing and resuming dispatch from a queue, as events (pure decider).

Stored on `ordo.queue.<tenant>.<queue>.<event>`. The state is per tenant: a tenant's paused queue
starts none of that tenant's tasks (workers hold its tickets until it is resumed) and leaves other
tenants' tasks on the same queue name alone; tasks keep being accepted and running tasks finish.
"""

from __future__ import annotations

import msgspec

from ordo.domain.codec import Codec


class QueueEvent(msgspec.Struct, frozen=True, tag_field="event"):
    """Base of every queue event."""


class QueuePaused(QueueEvent, frozen=True, tag="paused"):
    reason: str = ""


class QueueResumed(QueueEvent, frozen=True, tag="resumed"):
    pass


AnyQueueEvent = QueuePaused | QueueResumed


class PauseQueue(msgspec.Struct, frozen=True, kw_only=True):
    queue: str
    reason: str = ""


class ResumeQueue(msgspec.Struct, frozen=True, kw_only=True):
    queue: str


class QueueState(msgspec.Struct, frozen=True, kw_only=True):
    queue: str
    paused: bool = False
    version: int = 0


def evolve(state: QueueState, event: QueueEvent) -> QueueState:
    paused = isinstance(event, QueuePaused) or (state.paused and not isinstance(event, QueueResumed))
    return msgspec.structs.replace(state, paused=paused, version=state.version + 1)


def decide(command: PauseQueue | ResumeQueue, state: QueueState) -> list[QueueEvent]:
    """Pausing a paused queue or resuming a running one appends nothing."""
    if isinstance(command, PauseQueue):
        return [] if state.paused else [QueuePaused(reason=command.reason)]
    return [QueueResumed()] if state.paused else []


_codec: Codec[AnyQueueEvent] = Codec(AnyQueueEvent)


def queue_event_name(event: QueueEvent) -> str:
    return _codec.name(event)


def encode_queue_event(event: QueueEvent) -> bytes:
    return _codec.encode(event)


def decode_queue_event(data: bytes) -> AnyQueueEvent:
    return _codec.decode(data)
