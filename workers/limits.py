"""Per-type concurrency limits across all workers, that a crashed worker cannot leak.

How a limited type is routed: runnable events are written on the band subjects of their queue as
usual (the writer does not know about limits). A worker configured with a limit for type T that
takes the dispatch of a T task from a band forwards a copy of it (its bytes, its origin subject and
sequence: infra/dispatch.py) to the type's lane `ordo.work.<tenant>.<queue>.lim.<lane>` (same
stream; `lane` is a hash of T) and acks the band message. Each lane has one durable consumer with
MaxAckPending = the limit, shared by every worker, so the server never hands out more than `limit`
tickets of T at once. A worker that dies holding one stops extending it; after the ack deadline the
ticket is redelivered and the slot is free again.
The forward carries a Nats-Msg-Id of (task, origin sequence), so a dispatch delivered twice is
forwarded once (within the duplicate window; a second copy would be a stale or held ticket anyway).

Every worker of a queue must be given the same limits (`ORDO_TYPE_LIMITS`, or `--type-limit`): a
worker without the limit runs the type directly from the band.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ordo.infra import subjects as sj
from ordo.infra.dispatch import Dispatch
from ordo.infra.settings import Settings

log = logging.getLogger("ordo.worker.limits")


def parse_type_limits(text: str) -> dict[str, int]:
    """`"demo.sleep=2,report.build=1"` -> {"demo.sleep": 2, "report.build": 1}."""
    limits: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.rpartition("=")
        if not sep or not name.strip():
            raise ValueError(f"type limit {item!r} must look like TYPE=N")
        try:
            limit = int(value)
        except ValueError as exc:
            raise ValueError(f"type limit {item!r}: {value!r} is not an integer") from exc
        if limit < 1:
            raise ValueError(f"type limit {item!r} must be >= 1")
        limits[name.strip()] = limit
    return limits


def lane_for(task_type: str) -> str:
    """A subject- and consumer-name-safe token for a task type."""
    return hashlib.sha256(task_type.encode()).hexdigest()[:16]


def lane_consumer_config(queue: str, task_type: str, limit: int, settings: Settings) -> ConsumerConfig:
    lane = lane_for(task_type)
    name = sj.limited_work_consumer(queue, lane)
    return ConsumerConfig(
        name=name,
        durable_name=name,
        description=f"Ordo tickets of type {task_type} in queue {queue}, at most {limit} at once",
        filter_subject=sj.limited_work_filter(queue, lane),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=-1,
        max_ack_pending=limit,
    )


class TypeLimits:
    """The limited types of one worker and the forwarding of their tickets to their lanes."""

    def __init__(self, limits: Mapping[str, int]) -> None:
        for name, limit in limits.items():
            if not name or limit < 1:
                raise ValueError(f"invalid type limit {name!r}={limit}")
        self.limits = dict(limits)

    def __bool__(self) -> bool:
        return bool(self.limits)

    def limited(self, task_type: str) -> bool:
        return task_type in self.limits

    async def forward(self, nc: NATS, dispatch: Dispatch, msg: Msg, task_type: str) -> bool:
        """Publish a copy of the dispatch on its type's lane; True once stored."""
        subject = sj.limited_work_subject(dispatch.tenant, dispatch.queue, lane_for(task_type))
        headers = copy_headers(msg, dispatch)
        headers[sj.MSG_ID] = f"lim-{dispatch.tenant}-{dispatch.task_id}-{dispatch.seq}"
        try:
            await nc.jetstream().publish(subject, msg.data, headers=headers)
        except nats.errors.Error as exc:
            log.warning("ticket of %s not forwarded to its lane: %s", dispatch.task_id, exc)
            return False
        return True


def copy_headers(msg: Msg, dispatch: Dispatch) -> dict[str, str]:
    """The headers of a copy of a dispatch: the event's own (trace context, ids) and its origin."""
    headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
    headers.pop(sj.HELD_FROM, None)
    origin = sj.event_subject(
        dispatch.tenant, dispatch.queue, dispatch.task_id, dispatch.event, dispatch.band
    )
    headers[sj.DISPATCH_SUBJECT] = origin
    headers[sj.DISPATCH_SEQ] = str(dispatch.seq)
    return headers


def is_lane_message(msg: Msg) -> bool:
    return sj.is_limited_work_subject(msg.subject)
