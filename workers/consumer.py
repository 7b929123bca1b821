"""The adapter over the JetStream work consumers: the only worker module that touches nats errors.

One durable pull consumer per (queue, band) on the event-log stream. Tickets are acked explicitly;
MaxDeliver is unlimited because the domain counts attempts; the ack wait is the lease. A consumer
that disappears under a running worker is re-created on the next fetch (see `fetch`).
Every message operation here is best effort and returns whether it was sent: a lost ack or nak only
means the ticket comes back later, and a stale ticket is acked and skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from ordo.infra import subjects as sj
from ordo.infra.nats_conn import ProvisioningError, ensure_consumer
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


@dataclass(frozen=True, eq=False)
class Pull:
    """A bound pull subscription and the definition of its durable, kept to re-create it."""

    js: JetStreamContext
    config: ConsumerConfig
    sub: PullSubscription

    @property
    def name(self) -> str:
        assert self.config.name is not None
        return self.config.name


async def open_work_consumer(nc: NATS, queue: str, band: int, settings: Settings) -> Pull:
    """Create (or update in place) the durable consumer of (queue, band) and bind a pull sub to it.

    The server's create call updates an existing durable when the change is allowed; a consumer
    that exists with a config that cannot be updated is used as it is, with a warning.
    """
    return await open_consumer(nc, work_consumer_config(queue, band, settings))


async def open_consumer(nc: NATS, config: ConsumerConfig) -> Pull:
    """Create or update a durable pull consumer on the event-log stream and bind to it."""
    js = nc.jetstream()
    await ensure_consumer(js, sj.EVENTS_STREAM, config)
    assert config.name is not None
    return Pull(js, config, await js.pull_subscribe_bind(config.name, stream=sj.EVENTS_STREAM))


async def fetch(pull: Pull, batch: int, wait_s: float) -> list[Msg]:
    """Up to `batch` tickets; [] when none arrived within `wait_s` or the connection is down.

    A fetch that fails because the durable is gone (deleted by an operator, or lost with a
    stream restore) re-creates it from its definition: its tickets are in the stream, and the
    new durable delivers every one that is not stale.
    """
    try:
        return await pull.sub.fetch(batch, timeout=wait_s)
    except (TimeoutError, nats.errors.TimeoutError):
        return []
    except nats.errors.Error as exc:
        log.warning("fetch from %s failed: %s", pull.name, exc)
        await _recreate_if_missing(pull, wait_s)
        await asyncio.sleep(wait_s)  # the connection is reconnecting: do not spin
        return []


async def _recreate_if_missing(pull: Pull, wait_s: float) -> None:
    try:
        await pull.js.consumer_info(sj.EVENTS_STREAM, pull.name)
        return
    except NotFoundError:
        pass
    except nats.errors.Error:
        return  # NATS is unreachable or busy: the next failed fetch looks again
    log.warning("work consumer %s is missing: re-creating it", pull.name)
    try:
        await ensure_consumer(pull.js, sj.EVENTS_STREAM, pull.config, timeout=max(wait_s, 1.0))
    except (nats.errors.Error, ProvisioningError) as exc:
        log.warning("could not re-create %s yet: %s", pull.name, exc)


async def close(pull: Pull) -> None:
    try:
        await pull.sub.unsubscribe()
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
