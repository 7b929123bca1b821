"""Queue pause per tenant, on the worker side: hold a paused tenant's tickets, put them back on resume.

Work consumers are per (queue, band) and shared by every tenant, so pausing a consumer would stop
the queue for all of them (docs/decisions.md 20). Instead each worker knows which (tenant, queue)
pairs of its queues are paused: the queue events (`ordo.queue.<tenant>.<queue>.<event>`), folded
from the log at start and every `refresh_s`, and followed live on core NATS in between.

- A dispatch of a paused pair is not run: a copy of it (infra/dispatch.py: its bytes, its origin
  event's subject and sequence) goes to `ordo.work.<tenant>.<queue>.held`, with header
  `Ordo-Held-From` saying where it goes back to (the copy subject of its band for a runnable event,
  read next to that band with its weight; the lane or copy it came from for a lane's or a copy's),
  and then it is acked. The copy's Nats-Msg-Id is the original's
  stream sequence, so a dispatch delivered twice is held once.
- A pair that is not paused has its held tickets moved back to where they came from, by any worker
  of the queue (one durable per pair, shared): publish first, then ack the held copy. A crash in
  between leaves a duplicate ticket, which the decider treats as stale; nothing is ever dropped.
  Pairs are released when a worker sees them resumed, and all of them every `sweep_s` (a ticket
  held by a worker that died before it saw the resume). One copy subject per band keeps the priority
  order after a resume: the held backlog does not run in arrival order before everything after it
  (docs/decisions.md 57); a ticket held by an older version for the one copy subject of every band
  goes back to its band's.

A worker that missed the live pause event holds at most what it fetched before the next refresh;
tickets it had already started run to the end, exactly like running tasks of a paused queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ordo.domain.queue_control import QueueState, decode_queue_event, evolve
from ordo.infra import subjects as sj
from ordo.infra.event_store import EventStore, EventStoreError, readable
from ordo.infra.settings import Settings
from ordo.infra.tasks import cancel_and_wait
from ordo.workers import consumer

DEFAULT_REFRESH_S = 1.0
DEFAULT_SWEEP_S = 30.0
RELEASE_BATCH = 100
MAX_HELD_PENDING = 1000

Pair = tuple[str, str]  # (tenant, queue)

log = logging.getLogger("ordo.worker.queue_pause")


def held_consumer_config(tenant: str, queue: str, settings: Settings) -> ConsumerConfig:
    name = sj.held_work_consumer(tenant, queue)
    return ConsumerConfig(
        name=name,
        durable_name=name,
        description=f"Ordo tickets of tenant {tenant} held while its queue {queue} is paused",
        filter_subject=sj.held_work_subject(tenant, queue),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait_s,
        max_deliver=-1,
        max_ack_pending=MAX_HELD_PENDING,
    )


def _copy_for(tenant: str, queue: str, dispatch_subject: str) -> str:
    """The copy subject a held dispatch goes back to: its band's, by the runnable event it copies
    (the older subject of every band only for a ticket that names no band, which Ordo never wrote)."""
    band = sj.dispatch_band(dispatch_subject)
    if band is None:
        return sj.legacy_copy_work_subject(tenant, queue)
    return sj.copy_work_subject(tenant, queue, band)


def _carried(msg: Msg) -> dict[str, str]:
    """The ticket's own headers (trace context), without the server's and the dedup id."""
    return {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-") and k != sj.HELD_FROM}


class QueuePauses:
    """The pause state of the (tenant, queue) pairs of `queues`; `start()`/`stop()` idempotent."""

    def __init__(
        self,
        nc: NATS,
        store: EventStore,
        queues: Sequence[str],
        settings: Settings,
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
        sweep_s: float = DEFAULT_SWEEP_S,
        logger: logging.Logger | None = None,
    ) -> None:
        if refresh_s <= 0 or sweep_s <= 0:
            raise ValueError("refresh_s and sweep_s must be > 0")
        self._nc = nc
        self._js = nc.jetstream()
        self._store = store
        self._queues = tuple(queues)
        self._settings = settings
        self._refresh_s = refresh_s
        self._sweep_s = sweep_s
        self._log = logger or log
        self._states: dict[Pair, bool] = {}
        # Live events seen per pair: a refresh that read the log before one of them must not undo it.
        self._live: dict[Pair, int] = {}
        self._to_release: set[Pair] = set()
        self._held: dict[Pair, consumer.Pull] = {}
        self._subs: list[Subscription] = []
        self._loop_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def paused(self, tenant: str, queue: str) -> bool:
        return self._states.get((tenant, queue), False)

    async def start(self) -> None:
        """Fold the pause state from the log, follow it live, and run the release loop."""
        if self._loop_task is not None:
            return
        for queue in self._queues:
            self._subs.append(await self._nc.subscribe(sj.queue_events_filter("*", queue), cb=self._on_event))
        await self._first_refresh()
        self._to_release |= {pair for pair, paused in self._states.items() if not paused}
        self._loop_task = asyncio.create_task(self._loop())

    async def _first_refresh(self, timeout: float = 60.0) -> None:
        """No ticket is fetched before the pause state is known: retry while NATS is not ready."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self.refresh()
                return
            except (EventStoreError, nats.errors.Error) as exc:
                if loop.time() > deadline:
                    raise
                self._log.info("queue pause state not readable yet (%s); retrying", exc)
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        task, self._loop_task = self._loop_task, None
        if task is not None:
            await cancel_and_wait(task)
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        self._subs.clear()
        for pull in self._held.values():
            await consumer.close(pull)
        self._held.clear()

    async def refresh(self) -> None:
        """The pause state of every pair of our queues, folded from the log (the authority)."""
        for queue in self._queues:
            live = dict(self._live)
            history, _ = await self._store.load_raw(sj.queue_events_filter("*", queue))
            states: dict[str, QueueState] = {}
            for raw in history:
                event = readable(raw, decode_queue_event, "a queue event")  # docs/decisions.md 56
                if event is None:
                    continue  # one tenant's junk must not stop the workers of every tenant
                tenant, _, _ = sj.parse_queue_subject(raw.subject)
                state = states.get(tenant) or QueueState(queue=queue)
                states[tenant] = evolve(state, event)
            for tenant, state in states.items():
                pair = (tenant, queue)
                if self._live.get(pair, 0) == live.get(pair, 0):  # else: the next refresh decides
                    self._set(pair, state.paused)

    def _set(self, pair: Pair, paused: bool) -> None:
        if self._states.get(pair) and not paused:
            self._to_release.add(pair)
            self._wake.set()
        self._states[pair] = paused

    async def _on_event(self, msg: Msg) -> None:
        try:
            tenant, queue, _ = sj.parse_queue_subject(msg.subject)
            event = decode_queue_event(msg.data)
        except Exception:  # noqa: BLE001 - a foreign message: the next refresh reads the log anyway
            return
        self._live[(tenant, queue)] = self._live.get((tenant, queue), 0) + 1
        self._set((tenant, queue), evolve(QueueState(queue=queue), event).paused)

    async def hold(self, msg: Msg, tenant: str, queue: str) -> None:
        """Park a ticket of a paused pair; on a failed publish it comes back after a short delay."""
        headers = _carried(msg)
        with contextlib.suppress(Exception):
            seq = str(msg.metadata.sequence.stream)
            headers[sj.MSG_ID] = f"held-{seq}"
            if sj.DISPATCH_SUBJECT not in headers:  # the runnable event itself: name it
                headers[sj.DISPATCH_SUBJECT] = msg.subject
                headers[sj.DISPATCH_SEQ] = seq
        if sj.is_work_subject(msg.subject) and msg.subject != sj.legacy_copy_work_subject(tenant, queue):
            back = msg.subject  # a lane's, a band copy's or a handover's ticket goes back there
        else:
            back = _copy_for(tenant, queue, headers.get(sj.DISPATCH_SUBJECT, msg.subject))
        headers[sj.HELD_FROM] = back
        try:
            await self._js.publish(sj.held_work_subject(tenant, queue), msg.data, headers=headers)
        except nats.errors.Error as exc:
            self._log.warning("ticket on %s not held: %s", msg.subject, exc)
            await consumer.nak(msg, delay=self._refresh_s)
            return
        await consumer.ack(msg)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self._sweep_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._refresh_s)
            self._wake.clear()
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure
                self._log.warning("queue pause state not refreshed: %s", exc)
            if loop.time() >= next_sweep:
                next_sweep = loop.time() + self._sweep_s
                self._to_release |= {pair for pair, paused in self._states.items() if not paused}
            for pair in sorted(self._to_release):
                try:
                    if await self._release(pair):
                        self._to_release.discard(pair)
                except Exception as exc:  # noqa: BLE001 - retried on the next round
                    self._log.warning("held tickets of %s not released yet: %s", pair, exc)

    async def _release(self, pair: Pair) -> bool:
        """Move the pair's held tickets back; True once none is left (or it was paused again)."""
        pull = self._held.get(pair)
        if pull is None:
            pull = await consumer.open_consumer(self._nc, held_consumer_config(*pair, self._settings))
            self._held[pair] = pull
        while True:
            if self.paused(*pair):
                return True
            msgs = await consumer.fetch(pull, RELEASE_BATCH, 0.05)
            if not msgs:
                return True
            for msg in msgs:
                if self.paused(*pair):
                    await consumer.nak(msg)  # paused again meanwhile: it stays held
                    continue
                origin = (msg.headers or {}).get(sj.HELD_FROM)
                if (
                    origin is None
                    or not sj.is_work_subject(origin)  # never an event: a copy goes back as a copy
                    or sj.parse_work_subject(origin) != pair
                    or origin == msg.subject
                ):
                    self._log.warning("dropping a held message without a ticket origin: %s", origin)
                    await consumer.term(msg, "no Ordo-Held-From of this tenant and queue")
                    continue
                headers = {**_carried(msg), sj.MSG_ID: f"unheld-{msg.metadata.sequence.stream}"}
                if origin == sj.legacy_copy_work_subject(*pair):  # held by an older version
                    origin = _copy_for(*pair, headers.get(sj.DISPATCH_SUBJECT, ""))
                await self._js.publish(origin, msg.data, headers=headers)
                await consumer.ack(msg)
            self._log.info("released %d held tickets of %s/%s", len(msgs), *pair)
