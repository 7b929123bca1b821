"""The runnable event as a dispatch: what a worker reads from a band message (or a copy of one).

The event that makes a task runnable with a new dispatch number is its own dispatch ticket
(docs/decisions.md 27): its subject carries the band token, and the band consumers filter the log.
It carries what the worker needs to start without loading the task: `submitted` is enough on its
own (the state follows from the event), any other runnable event carries the state after it as an
extra `snapshot` key beside the event's fields (the event types ignore unknown keys). A snapshot is
left out when the payload is large; the worker then loads the task.

A worker starting a dispatch appends `attempt_started` expecting the task's last sequence to be the
runnable event's own sequence: if anything was appended to the task since, the append conflicts and
the worker loads the task and decides again, so a fast start never decides on a stale state.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from ordo.domain.events import Submitted, decode_event
from ordo.domain.state import TaskState, evolve, initial
from ordo.domain.status import TaskStatus
from ordo.infra import subjects as sj

# Above this payload size a runnable event carries no snapshot (it would store the payload twice).
SNAPSHOT_MAX_PAYLOAD = 16 * 1024

_state_encoder = msgspec.json.Encoder()


class _Body(msgspec.Struct):
    snapshot: TaskState | None = None


_body_decoder = msgspec.json.Decoder(_Body)


class Dispatch(msgspec.Struct, frozen=True):
    """One runnable event as a worker received it.

    `seq` is the stream sequence of the runnable event itself (for a copy: of its origin), the
    task's last sequence when it was written. `state` is the task's state right after it, when the
    message carries it (None: load the task).
    """

    tenant: str
    queue: str
    task_id: str
    event: str
    band: int
    seq: int
    state: TaskState | None = None


def snapshot_for(new: TaskState, last_event_is_submit: bool) -> bytes | None:
    """The snapshot a runnable append carries on its last event (None: not needed, or too big)."""
    if last_event_is_submit or len(new.payload) > SNAPSHOT_MAX_PAYLOAD:
        return None
    return _state_encoder.encode(new)


def with_snapshot(event_json: bytes, snapshot: bytes | None) -> bytes:
    """The event's JSON object with the snapshot added as one more key."""
    if snapshot is None:
        return event_json
    if not event_json.endswith(b"}") or event_json == b"{}":
        raise ValueError("an event encodes as a non-empty JSON object")
    return event_json[:-1] + b',"snapshot":' + snapshot + b"}"


def read_dispatch(subject: str, headers: Mapping[str, str] | None, data: bytes, seq: int) -> Dispatch:
    """The dispatch in a band message or a copy of one; ValueError for anything that is not one.

    A state the message carries that does not name this task as queued is ignored (the worker then
    loads the task): it can cost a load, never a wrong start.
    """
    hdrs = headers or {}
    origin = hdrs.get(sj.DISPATCH_SUBJECT, subject)
    band = sj.dispatch_band(origin)
    if band is None:
        raise ValueError(f"not a runnable event: {origin}")
    if origin != subject:
        try:
            seq = int(hdrs[sj.DISPATCH_SEQ])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"a copy of {origin} without its sequence") from exc
    tenant, queue, task_id, name = sj.parse_event_subject(origin)
    try:
        event = decode_event(data)
        state = _body_decoder.decode(data).snapshot
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"undecodable runnable event: {exc}") from exc
    if isinstance(event, Submitted):
        state = evolve(initial(task_id), event)
    if state is not None and not _fits(state, tenant, queue, task_id):
        state = None
    return Dispatch(tenant, queue, task_id, name, band, seq, state)


def _fits(state: TaskState, tenant: str, queue: str, task_id: str) -> bool:
    return (
        state.exists
        and state.status is TaskStatus.QUEUED
        and (state.tenant, state.queue, state.task_id) == (tenant, queue, task_id)
    )
