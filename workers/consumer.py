"""The adapter over the JetStream work consumers: the only worker module that touches nats errors.

One durable pull consumer per (queue, band) on the event-log stream. Tickets are acked explicitly;
MaxDeliver is unlimited because the domain counts attempts; the ack wait is the lease.
Every message operation here is best effort and returns whether it was sent: a lost ack or nak only
means the ticket comes back later, and a stale ticket is acked and skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from ordo.infra import subjects as sj
from ordo.infra.nats_conn import ensure_consumer
from ordo.infra.settings import Settings

MAX_ACK_PENDING = 10_000
PullSubscription = JetStreamContext.PullSubscription

log = logging.getLogger("ordo.worker.consumer")


def work_consumer_config(queue: str, band: int, settings: Settings) -> ConsumerConfig:
    name = sj.work_consumer(queue, band)
    return ConsumerConfig(
        name=name,
        durable_name=name,
        description=f"Ordo dispatch tickets of queue {queue}, band {band}",
        filter_subject=sj.work_filter(queue, band),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=-1,
        max_ack_pending=MAX_ACK_PENDING,
    )


async def open_work_consumer(nc: NATS, queue: str, band: int, settings: Settings) -> PullSubscription:
    """Create (or update in place) the durable consumer of (queue, band) and bind a pull sub to it.

    The server's create call updates an existing durable when the change is allowed; a consumer
    that exists with a config that cannot be updated is used as it is, with a warning.
    """
    return await open_consumer(nc, work_consumer_config(queue, band, settings))


async def open_consumer(nc: NATS, config: ConsumerConfig) -> PullSubscription:
    """Create or update a durable pull consumer on the event-log stream and bind to it."""
    js = nc.jetstream()
    await ensure_consumer(js, sj.EVENTS_STREAM, config)
    assert config.name is not None
    return await js.pull_subscribe_bind(config.name, stream=sj.EVENTS_STREAM)


async def fetch(sub: PullSubscription, batch: int, wait_s: float) -> list[Msg]:
    """Up to `batch` tickets; [] when none arrived within `wait_s` or the connection is down."""
    try:
        return await sub.fetch(batch, timeout=wait_s)
    except (TimeoutError, nats.errors.TimeoutError):
        return []
    except nats.errors.Error as exc:
        log.warning("fetch failed: %s", exc)
        await asyncio.sleep(wait_s)  # the connection is reconnecting: do not spin
        return []


async def close(sub: PullSubscription) -> None:
    try:
        await sub.unsubscribe()
    except nats.errors.Error as exc:
        log.debug("unsubscribe failed: %s", exc)


async def ack(msg: Msg) -> bool:
    return await _send(msg.ack(), "ack")


async def nak(msg: Msg, delay: float | None = None) -> bool:
    return await _send(msg.nak(delay=delay), "nak")


async def in_progress(msg: Msg) -> bool:
    return await _send(msg.in_progress(), "in_progress")


async def term(msg: Msg, reason: str = "") -> bool:
    """Stop redelivery for good; the reason reaches the server's MSG_TERMINATED advisory."""
    if not reason or not msg.reply:
        return await _send(msg.term(), "term")
    # nats-py's term() takes no reason: send the same protocol message with one.
    body = f"+TERM {reason[:200]}".encode()
    return await _send(msg._client.publish(msg.reply, body), "term")


async def _send(op: Awaitable[None], what: str) -> bool:
    try:
        await op
    except nats.errors.Error as exc:
        log.warning("%s not sent: %s", what, exc)
        return False
    return True
