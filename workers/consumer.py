"""The adapter over the JetStream work consumers: the only worker module that touches nats errors.

One durable pull consumer per (queue, band) on the event-log stream, filtering the queue's runnable
events of that band (each is its own dispatch ticket), one per (queue, band) for copied dispatches
(a paused queue's, moved back on resume), and the one per queue those had before (docs/decisions.md 57).
Tickets are acked explicitly;
MaxDeliver is unlimited because the domain counts attempts; the ack wait is the lease. A consumer
that disappears under a running worker is re-created on the next fetch (see `fetch`).
Every message operation here is best effort and returns whether it was sent: a lost ack or nak only
means the ticket comes back later, and a stale ticket is acked and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
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
    """A band consumer: it filters the runnable events of its queue and band from the event log."""
    name = sj.work_consumer(queue, band)
    return dispatch_consumer_config(
        name, f"Ordo runnable events of queue {queue}, band {band}", sj.runnable_filter(queue, band), settings
    )


def copy_consumer_config(queue: str, band: int, settings: Settings) -> ConsumerConfig:
    """The consumer of a queue's copied dispatches of one band (a paused queue's, moved back on
    resume), fetched with that band's weight."""
    name = sj.copy_work_consumer(queue, band)
    description = f"Ordo copied dispatches of queue {queue}, band {band}"
    return dispatch_consumer_config(name, description, sj.copy_work_filter(queue, band), settings)


def legacy_copy_consumer_config(queue: str, settings: Settings) -> ConsumerConfig:
    """The consumer of the one copy subject of every band that versions before docs/decisions.md 57
    moved a paused queue's dispatches back to: still read, for the tickets an upgrade finds there."""
    name = sj.legacy_copy_work_consumer(queue)
    return dispatch_consumer_config(
        name, f"Ordo copied dispatches of queue {queue}", sj.legacy_copy_work_filter(queue), settings
    )


def dispatch_consumer_config(
    name: str, description: str, filter_subject: str, settings: Settings
) -> ConsumerConfig:
    return ConsumerConfig(
        name=name,
        durable_name=name,
        description=description,
        filter_subject=filter_subject,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=-1,
        max_ack_pending=MAX_ACK_PENDING,
    )


@dataclass(eq=False)
class PullState:
    """What `sweep` and `park` keep between calls: tickets taken off the subscription but not yet
    handed out, and the park request this durable may still have on the server (at most one)."""

    held: deque[Msg] = field(default_factory=deque)
    parked_until: float = 0.0  # loop time by which the park request surely ended; 0.0: none
    outstanding: int = 0  # tickets the park request out may still deliver


@dataclass(frozen=True, eq=False)
class Pull:
    """A bound pull subscription and the definition of its durable, kept to re-create it."""

    js: JetStreamContext
    config: ConsumerConfig
    sub: PullSubscription
    state: PullState = field(default_factory=PullState, repr=False)

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


async def open_consumer(nc: NATS, config: ConsumerConfig, timeout: float = 60.0) -> Pull:
    """Create or update a durable pull consumer on the event-log stream and bind to it (retrying
    for up to `timeout` while the cluster is not ready)."""
    js = nc.jetstream()
    await ensure_consumer(js, sj.EVENTS_STREAM, config, timeout=timeout)
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


# Zero-wait fetching. nats-py's fetch(batch > 1) sends no_wait with expires, which the server
# treats as a long poll: an empty band costs the whole wait. Instead the runtime sweeps each band
# with a bare no_wait pull (answered at once: tickets, then 404 when fewer were there), and only
# when every band was empty parks ONE long poll per band and waits for the first ticket. A park
# request asks for a few tickets (PARK_SHARE, at most an even share of the free slots), so at a
# trickle it stays out across tickets: each one arrives without a new request, instead of costing a
# no_wait pull (answered 404) and a new long poll, two requests and two wake-ups per ticket.
# A park request outlives the call that sent it until it got its tickets or expires (408); its
# tickets land in the subscription's queue and the next sweep or park hands them out, so a band
# holds at most PARK_SHARE tickets beyond the slots asked for. While it is out, no other is sent and
# the band is not swept on the server either (the server would give the park request any ticket
# there). Statuses tell the requests apart: 404 only ends a sweep, 408 only a park request.
SWEEP_REPLY_S = 1.0  # a no_wait pull is answered at once; this only bounds a lost reply
PARK_GRACE_S = 0.5  # a park request's 408 this late after its expiry is presumed lost
PARK_SHARE = 4  # tickets one park request asks for, at most (and at most batch // bands)
ERROR_PAUSE_S = 0.1  # after a failed request: the connection may be reconnecting, do not spin

_NO_MESSAGES = "404"
_TIMED_OUT = "408"
_CONFLICT = "409"
_HEARTBEAT = "100"


class _Failed(Exception):
    def __init__(self, pull: Pull, error: nats.errors.Error) -> None:
        super().__init__(str(error))
        self.pull = pull
        self.error = error


async def sweep(pull: Pull, batch: int) -> list[Msg]:
    """Up to `batch` tickets that are there now, without waiting for any; [] at once when none.

    Tickets already delivered (to an earlier park request) come first; the server is asked for
    the rest with a no_wait pull unless a park request of this band is still out.
    """
    got: list[Msg] = []
    if batch < 1:
        return got
    try:
        _take_held(pull, batch, got)
        if len(got) < batch and not _parked(pull):
            await _pull_now(pull, batch - len(got), got)
    except _Failed as failed:
        await _failed(failed, pause=not got)
    return got


async def park(
    pulls: Sequence[Pull], batch: int, wait_s: float, *, until: Sequence[asyncio.Event] = ()
) -> list[Msg]:
    """Wait up to `wait_s` for the first ticket on any of `pulls` (all found empty by `sweep`).

    Each pull without a park request out gets one: a long poll of up to PARK_SHARE tickets (an even
    share of `batch` at most, one at least) that expires after `wait_s`, renewed when it expires
    during the wait. Returns what arrived, up to `batch`, as soon as anything did; [] after `wait_s`
    or as soon as one of `until` is set.
    """
    got: list[Msg] = []
    if batch < 1 or not pulls:
        return got
    share = max(1, min(PARK_SHARE, batch // len(pulls)))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    try:
        for pull in pulls:
            _take_held(pull, batch, got)
        if got or any(event.is_set() for event in until):
            return got
        for pull in pulls:
            if not _parked(pull):
                await _park_one(pull, wait_s, share)
        while not got:
            remaining = deadline - loop.time()
            if remaining <= 0 or any(event.is_set() for event in until):
                return got
            for pull, msg in await _arrivals(pulls, remaining, until):
                status = _sort(pull, msg)
                if status == _TIMED_OUT and not _parked(pull) and loop.time() < deadline:
                    await _park_one(pull, wait_s, share)  # its park request expired: renew it
                elif status is not None:
                    continue  # a stale 404, or a 409: the next park asks again (no spinning)
                elif len(got) < batch:
                    got.append(msg)
                else:
                    pull.state.held.append(msg)  # a second band's ticket at the same moment
        for pull in pulls:
            _take_held(pull, batch, got)
    except _Failed as failed:
        await _failed(failed, pause=not got)
    return got


def _parked(pull: Pull) -> bool:
    return pull.state.parked_until > asyncio.get_running_loop().time()


def _pending(pull: Pull) -> asyncio.Queue[Msg]:
    return pull.sub._sub._pending_queue


def _taken(pull: Pull, msg: Msg) -> Msg:
    """Account for a message taken off the subscription's queue the way nats-py's next_msg does."""
    pull.sub._sub._pending_size -= len(msg.data)
    _pending(pull).task_done()
    return msg


def _sort(pull: Pull, msg: Msg) -> str | None:
    """None for a ticket, else its status; notes the end of a park request; raises on an error.

    A ticket while a park request is out is that request's: only a park request is out then. The
    request ends with its last ticket, or with its 408 (expired) or a 409.
    """
    status = (msg.headers or {}).get("Status")
    state = pull.state
    if status is None and state.outstanding > 0:
        state.outstanding -= 1
        if state.outstanding == 0:
            state.parked_until = 0.0
    elif status in (_TIMED_OUT, _CONFLICT):
        state.parked_until, state.outstanding = 0.0, 0
    if status is None or status in (_NO_MESSAGES, _TIMED_OUT, _HEARTBEAT):
        return status
    if status == _CONFLICT and "deleted" not in (msg.headers or {}).get("Description", "").lower():
        return status  # e.g. a leadership change or MaxWaiting: that request is over, retry later
    try:
        nats.js.errors.APIError.from_msg(msg)  # 503 (no consumer), 409 Consumer Deleted, ...
    except nats.errors.Error as exc:
        raise _Failed(pull, exc) from None


def _take_held(pull: Pull, most: int, got: list[Msg]) -> None:
    """Move tickets already delivered (held, then queued) into `got`, up to `most` in it."""
    held, pending = pull.state.held, _pending(pull)
    while len(got) < most and held:
        got.append(held.popleft())
    while len(got) < most and not pending.empty():
        msg = _taken(pull, pending.get_nowait())
        if _sort(pull, msg) is None:
            got.append(msg)


async def _publish(pull: Pull, request: dict[str, object]) -> None:
    try:
        await pull.sub._nc.publish(pull.sub._nms, json.dumps(request).encode(), reply=pull.sub._deliver)
    except nats.errors.Error as exc:
        raise _Failed(pull, exc) from None


async def _pull_now(pull: Pull, batch: int, got: list[Msg]) -> None:
    """A no_wait pull of `batch` tickets into `got`: the server answers at once."""
    loop = asyncio.get_running_loop()
    want = len(got) + batch
    await _publish(pull, {"batch": batch, "no_wait": True})
    deadline = loop.time() + SWEEP_REPLY_S
    while len(got) < want:
        if _pending(pull).empty():
            remaining = deadline - loop.time()
            arrived = await _arrivals([pull], remaining, ()) if remaining > 0 else []
            if not arrived:
                log.debug("no answer to a pull from %s within %gs", pull.name, SWEEP_REPLY_S)
                return  # whatever comes later waits in the queue for the next sweep
            msg = arrived[0][1]
        else:
            msg = _taken(pull, _pending(pull).get_nowait())
        status = _sort(pull, msg)
        if status is None:
            got.append(msg)
        elif status in (_NO_MESSAGES, _CONFLICT):
            return  # that was all there is (a 409 may be another request's: the rest stays queued)


async def _park_one(pull: Pull, wait_s: float, tickets: int) -> None:
    expires = max(int(wait_s * 1e9), 1_000_000)
    pull.state.parked_until = asyncio.get_running_loop().time() + wait_s + PARK_GRACE_S
    pull.state.outstanding = tickets
    try:
        await _publish(pull, {"batch": tickets, "expires": expires})
    except _Failed:
        pull.state.parked_until, pull.state.outstanding = 0.0, 0
        raise


async def _arrivals(
    pulls: Sequence[Pull], timeout: float, until: Sequence[asyncio.Event]
) -> list[tuple[Pull, Msg]]:
    """The first message(s) on any of `pulls` within `timeout`, or [] (also once `until` is set).

    One future waits for all of them: it is put among the waiters of each pull's queue and of each
    event, which wake it as they wake a `get()` or a `wait()`, and a timer ends the wait. No task
    per queue and per event is made and cancelled on every wake-up (on an idle worker, about 50 µs
    of the 1.4 ms from a ticket's arrival to its handler running). Messages are taken off the queues only
    after the wait, so a cancelled wait takes nothing: nothing is lost.
    """
    loop = asyncio.get_running_loop()
    if not any(_pending(pull).qsize() for pull in pulls) and not any(e.is_set() for e in until):
        woken: asyncio.Future[None] = loop.create_future()
        queues = [_getters(_pending(pull)) for pull in pulls]
        events = [_waiters(event) for event in until]
        for waiters in (*queues, *events):
            waiters.append(woken)
        timer = loop.call_later(timeout, _wake, woken)
        try:
            await woken
        finally:
            timer.cancel()
            for waiters in (*queues, *events):
                if woken in waiters:  # not in the one whose wake-up took it out: no ValueError
                    waiters.remove(woken)
            if not woken.done():
                woken.cancel()
    out: list[tuple[Pull, Msg]] = []
    for pull in pulls:
        if not _pending(pull).empty():
            out.append((pull, _taken(pull, _pending(pull).get_nowait())))
    return out


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _getters(queue: asyncio.Queue[Msg]) -> deque[asyncio.Future[None]]:
    """The futures a put wakes (the first not done): asyncio.Queue's own, a CPython detail."""
    getters: deque[asyncio.Future[None]] = queue._getters  # type: ignore[attr-defined]
    return getters


def _waiters(event: asyncio.Event) -> deque[asyncio.Future[None]]:
    """The futures `set()` wakes: asyncio.Event's own, a CPython detail."""
    waiters: deque[asyncio.Future[None]] = event._waiters
    return waiters


async def _failed(failed: _Failed, pause: bool) -> None:
    """Today's fetch failure handling: log, re-create a missing durable, do not spin."""
    log.warning("fetch from %s failed: %s", failed.pull.name, failed.error)
    await _recreate_if_missing(failed.pull, ERROR_PAUSE_S)
    if pause:
        await asyncio.sleep(ERROR_PAUSE_S)


async def close(pull: Pull) -> None:
    """Unsubscribe, then hand back at once the tickets delivered but never handed out (a park
    request's), instead of letting them wait out the ack wait."""
    try:
        await pull.sub.unsubscribe()
    except nats.errors.Error as exc:
        log.debug("unsubscribe failed: %s", exc)
    left: list[Msg] = []
    with contextlib.suppress(_Failed):
        _take_held(pull, len(pull.state.held) + _pending(pull).qsize(), left)
    for msg in left:
        await nak(msg)


def delivery(msg: Msg) -> tuple[int, int] | None:
    """(stream sequence, times delivered) of a JetStream delivery, or None for any other message.

    Read off the ack subject as nats-py's `msg.metadata` reads them, without the rest it builds for
    every call site's first look (a datetime, a sequence pair, the names): on an idle worker that
    was 30 µs of the path from a ticket's arrival to its start's append."""
    tokens = (msg.reply or "").split(".")
    at = sj.ack_delivered_at(len(tokens))
    if at is None or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    try:
        return int(tokens[at + 1]), int(tokens[at])
    except ValueError:
        return None


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
