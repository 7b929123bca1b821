"""The worker runtime: the fetch loop across queues and priority bands, limits, graceful shutdown.

One pull subscription per (queue, band), and one per (queue, band) for the copies of the band's
tickets a paused queue held, fetched with the band's weight. Bands are fetched in smooth weighted
round-robin (6:3:1 by default), so a busy high band never starves a low one. A sweep never asks for
more tickets than there are free concurrency slots, so every swept ticket starts at once; a park
request, sent only when every band was empty, may bring a band up to `consumer.PARK_SHARE` tickets
beyond them, handed out as slots free up (and handed back at once on shutdown). A ticket of a
tenant that paused its queue is held, not run (workers/queue_pause.py). Cancel requests arrive on
core NATS (at most once; the lease loop also notices a `cancelling` task on its next extension), and
so do the notices of a ticket another worker had no handler for: the loop takes such copies first
(workers/handover.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ordo.domain.priority import BAND_WEIGHTS
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.heartbeats import DEFAULT_HEARTBEAT_S
from ordo.infra.settings import NAME_RE, Settings
from ordo.infra.tasks import cancel_and_wait
from ordo.workers import consumer, handover
from ordo.workers.executor import Executor, utc_now
from ordo.workers.handlers import Registry
from ordo.workers.limits import TypeLimits, lane_consumer_config, lane_for
from ordo.workers.queue_pause import DEFAULT_REFRESH_S, QueuePauses
from ordo.workers.registry import Announcer
from ordo.workers.stats import WorkerStats

# How long the loop parks when every band was empty. A parked band returns as soon as a ticket
# arrives, so this bounds only how often an idle worker renews its long polls (one per band per
# period) and how long a ticket may sit with a worker that filled up meanwhile (see consumer.park).
DEFAULT_FETCH_WAIT_S = 1.0
CANCEL_REQUESTED = "cancel_requested"

# How long the fetch loop may spend creating a handover durable (workers/handover.py) on a notice.
_HANDOVER_OPEN_S = 2.0
# (queue, band); a band's copies (a paused queue's tickets moved back) get COPY_BASE + band, the
# copies of every band of older versions and each type-limit lane a number >= LANE_BASE.
Key = tuple[str, int]
COPY_BASE = 10
LANE_BASE = 100


def cancel_requested_filter() -> str:
    """Every task's cancel_requested event, all tenants and queues (built from infra.subjects)."""
    return sj.events_named_filter(CANCEL_REQUESTED)


WORKER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def default_worker_id() -> str:
    """host-pid-random, made safe for a subject token (host names may contain dots)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64]
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _weight(key: Key) -> int:
    """Bands by BAND_WEIGHTS, and a band's copies like the band (held tickets moved back on resume
    are taken in priority order, against each other and against newer tickets: decisions.md 57); a
    type-limit lane like the middle band (its tickets were already taken from a band once, in
    priority order), and so the copies of every band that older versions wrote."""
    band = key[1]
    if band < COPY_BASE:
        return BAND_WEIGHTS[band]
    if band < LANE_BASE:
        return BAND_WEIGHTS[band - COPY_BASE]
    return BAND_WEIGHTS[len(BAND_WEIGHTS) // 2]


class WeightedPicker:
    """Smooth weighted round-robin (nginx's): 6:3:1 gives 0,1,0,0,2,0,1,0,0,1 ... evenly spread."""

    def __init__(self, weights: dict[Key, int]) -> None:
        if not weights or any(w < 1 for w in weights.values()):
            raise ValueError("weights must be a non-empty map of positive integers")
        self._weights = dict(weights)
        self._current = dict.fromkeys(weights, 0)
        self._total = sum(weights.values())

    def next(self) -> Key:
        for key, weight in self._weights.items():
            self._current[key] += weight
        best = max(self._current, key=lambda k: self._current[k])
        self._current[best] -= self._total
        return best


class Worker:
    """Pulls dispatch tickets for `queues` and runs them. `run()`, `shutdown()`: idempotent."""

    def __init__(
        self,
        nc: NATS,
        handler: CommandHandler,
        registry: Registry,
        settings: Settings,
        queues: Sequence[str] = ("default",),
        worker_id: str | None = None,
        logger: logging.Logger | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        fetch_wait_s: float = DEFAULT_FETCH_WAIT_S,
        type_limits: Mapping[str, int] | None = None,
        heartbeat_every_s: float = DEFAULT_HEARTBEAT_S,
        pause_refresh_s: float = DEFAULT_REFRESH_S,
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        for queue in queues:
            if not NAME_RE.fullmatch(queue):
                raise ValueError(f"queue {queue!r} must match {NAME_RE.pattern}")
        if fetch_wait_s <= 0:
            raise ValueError("fetch_wait_s must be > 0")
        self.worker_id = worker_id or default_worker_id()
        if not WORKER_ID_RE.fullmatch(self.worker_id):
            raise ValueError(f"worker id {self.worker_id!r} must match {WORKER_ID_RE.pattern}")
        self.queues = tuple(dict.fromkeys(queues))
        self._registry = registry
        self._limits = TypeLimits(type_limits or {})
        self.stats = WorkerStats()
        self._draining = asyncio.Event()
        self._announcer = Announcer(nc, self, self.stats, heartbeat_every_s)
        self._nc = nc
        self._settings = settings
        self._log = logger or logging.getLogger("ordo.worker")
        self._fetch_wait_s = fetch_wait_s
        self._pace = handler.pace
        self._executor = Executor(
            handler,
            registry,
            settings,
            self.worker_id,
            self._log,
            clock=clock,
            stats=self.stats,
            limits=self._limits,
            nc=nc,
        )
        self._pauses = QueuePauses(
            nc, handler.store, self.queues, settings, refresh_s=pause_refresh_s, logger=self._log
        )
        # Free concurrency slots: a plain count (a fetch takes what is free at once, without a
        # semaphore operation per slot) and the event that wakes a fetch loop waiting for one.
        self._free = settings.worker_concurrency
        self._slot_freed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # Handed-over copies waiting for a handler here: noticed (queue, type), their durables.
        self._handovers: set[tuple[str, str]] = set()
        self._handover_noticed = asyncio.Event()
        self._handover_pulls: dict[tuple[str, str], consumer.Pull] = {}
        self._started = False
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()

    @property
    def running(self) -> int:
        """Tickets being executed now."""
        return len(self._tasks)

    @property
    def state(self) -> str:
        """online, draining (takes no new work), or stopping (shutting down)."""
        if self._stopping.is_set():
            return "stopping"
        return "draining" if self._draining.is_set() else "online"

    def queue_paused(self, tenant: str, queue: str) -> bool:
        """Whether this worker holds the tickets of `tenant` on `queue` (its queue is paused)."""
        return self._pauses.paused(tenant, queue)

    def drain(self) -> None:
        """Stop taking work; running attempts finish normally. The worker stays up (idempotent)."""
        if not self._draining.is_set():
            self._log.info("worker %s draining: no new work", self.worker_id)
            self._draining.set()
            self._announcer.poke()

    def snapshot(self) -> dict[str, Any]:
        """The live figures the registry heartbeat carries."""
        return {
            "handlers": self._registry.names(),
            "concurrency": self._settings.worker_concurrency,
            "type_limits": self._limits.limits,
            "tasks": self._executor.attempts(),
            # Takes of tickets that waited for the read model, and the seconds waited (decision 60).
            "paced_waits": self._pace.waits if self._pace is not None else 0,
            "paced_s": round(self._pace.waited_s, 3) if self._pace is not None else 0.0,
        }

    async def run(self) -> None:
        """Fetch and execute until shutdown. A second call waits for the first to end."""
        if self._started:
            await self._done.wait()
            return
        self._started = True
        try:
            if not self._stopping.is_set():
                await self._serve()
        finally:
            self._done.set()

    async def shutdown(self) -> None:
        """Stop fetching; let running tasks finish for up to shutdown_grace_s, then hand the
        rest back (lease released, ticket nak'ed) so another worker takes them at once."""
        self._stopping.set()
        self._announcer.poke()
        if self._started:
            await self._done.wait()

    async def _serve(self) -> None:
        subs: dict[Key, consumer.Pull] = {}
        cancel_sub: Subscription | None = None
        notice_subs: list[Subscription] = []
        announced = False
        try:
            await self._pauses.start()
            for queue in self.queues:
                for band in range(len(BAND_WEIGHTS)):
                    subs[(queue, band)] = await consumer.open_work_consumer(
                        self._nc, queue, band, self._settings
                    )
                for band in range(len(BAND_WEIGHTS)):
                    copies = consumer.copy_consumer_config(queue, band, self._settings)
                    subs[(queue, COPY_BASE + band)] = await consumer.open_consumer(self._nc, copies)
                legacy = consumer.legacy_copy_consumer_config(queue, self._settings)
                subs[(queue, LANE_BASE + len(subs))] = await consumer.open_consumer(self._nc, legacy)
                for task_type, limit in self._limits.limits.items():
                    config = lane_consumer_config(queue, task_type, limit, self._settings)
                    subs[(queue, LANE_BASE + len(subs))] = await consumer.open_consumer(self._nc, config)
            cancel_sub = await self._nc.subscribe(cancel_requested_filter(), cb=self._on_cancel)
            lanes = {lane_for(name): name for name in self._registry.names()}
            for queue in self.queues:
                notices = sj.handover_notices_filter(queue)
                notice_subs.append(await self._nc.subscribe(notices, cb=self._notice_handler(lanes)))
            self._log.info("worker %s serving %s", self.worker_id, ", ".join(self.queues))
            await self._announcer.start()
            announced = True
            await self._fetch_loop(subs)
        finally:
            await self._drain()
            await self._pauses.stop()
            if announced:
                await self._announcer.stop()
            if cancel_sub is not None:
                await cancel_sub.unsubscribe()
            for notice_sub in notice_subs:
                await notice_sub.unsubscribe()
            for sub in (*subs.values(), *self._handover_pulls.values()):
                await consumer.close(sub)
            self._log.info("worker %s stopped", self.worker_id)

    async def _fetch_loop(self, subs: dict[Key, consumer.Pull]) -> None:
        picker = WeightedPicker({key: _weight(key) for key in subs})
        by_weight = sorted(subs, key=lambda key: -_weight(key))  # stable: ties keep their order
        batch = self._settings.fetch_batch
        while not self._stopping.is_set():
            if self._draining.is_set():
                await self._stopping.wait()
                break
            if self._pace is not None:  # the read model shows this worker's events (decision 60)
                await self._pace.keep_up()
            free = await self._take_slots(batch)
            if free == 0:
                continue  # stopping
            msgs: list[Msg] = []
            try:
                if self._handovers:  # copies another worker had no handler for come first
                    msgs = await self._take_handovers(free)
                if not msgs:
                    # Without waiting: the picked band, else the first other band with tickets by
                    # weight. Only when all were empty, wait for the first ticket on any of them.
                    picked = picker.next()
                    for key in (picked, *(k for k in by_weight if k != picked)):
                        msgs = await consumer.sweep(subs[key], free)
                        if msgs:
                            break
                    else:
                        pulls = [subs[k] for k in by_weight]
                        until = (self._stopping, self._draining, self._handover_noticed)
                        msgs = await consumer.park(pulls, free, self._fetch_wait_s, until=until)
            finally:
                self._release(free - len(msgs))
            if msgs and (self._draining.is_set() or self._stopping.is_set()):
                # Drain or shutdown began during the fetch: hand these back untouched, at once.
                for msg in msgs:
                    await consumer.nak(msg)
                    self._release()
                continue
            for msg in msgs:
                pair = sj.parse_work_subject(msg.subject)
                if pair is not None and self._pauses.paused(*pair):
                    try:
                        await self._pauses.hold(msg, *pair)  # the tenant paused this queue
                    finally:
                        self._release()
                    continue
                self._spawn(msg)
            if msgs:
                # The attempts just spawned run first, up to their start's append (one turn of the
                # loop), and the client's flusher writes those appends (the next turn), before this
                # loop prepares and sends its next pull request.
                await asyncio.sleep(0)
                await asyncio.sleep(0)

    def _notice_handler(self, lanes: Mapping[str, str]) -> Callable[[Msg], Any]:
        """The callback of handover notices: note those of a type this worker has a handler for."""

        async def on_notice(msg: Msg) -> None:
            queue, _, lane = msg.subject.rpartition(".")
            queue = queue.rpartition(".")[2]
            task_type = lanes.get(lane)
            if task_type is not None and queue in self.queues and not self._draining.is_set():
                self._handovers.add((queue, task_type))
                self._handover_noticed.set()

        return on_notice

    async def _take_handovers(self, most: int) -> list[Msg]:
        """Up to `most` handed-over copies waiting now on the noticed durables, without waiting."""
        got: list[Msg] = []
        noticed, self._handovers = self._handovers, set()
        self._handover_noticed.clear()
        for key in noticed:
            if len(got) >= most:
                self._handovers.add(key)  # the next turn takes the rest
                self._handover_noticed.set()
                continue
            pull = self._handover_pulls.get(key)
            if pull is None:
                if self._stopping.is_set():
                    break
                try:  # briefly: the fetch loop waits meanwhile; the next notice tries again
                    config = handover.consumer_config(*key, self._settings)
                    pull = await consumer.open_consumer(self._nc, config, timeout=_HANDOVER_OPEN_S)
                except Exception as exc:  # the band ticket still carries the task: log, go on
                    self._log.warning("handed-over tickets of %s not read: %s", key[1], exc)
                    continue
                self._handover_pulls[key] = pull
            got += await consumer.sweep(pull, most - len(got))
        return got

    async def _take_slots(self, most: int) -> int:
        """Wait for one free slot (or shutdown), then take up to `most` of the free ones."""
        while self._free == 0 and not self._stopping.is_set():
            self._slot_freed.clear()
            freed = asyncio.ensure_future(self._slot_freed.wait())
            stop = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({freed, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                freed.cancel()
                stop.cancel()
        if self._stopping.is_set():
            return 0
        taken = min(most, self._free)
        self._free -= taken
        return taken

    def _release(self, count: int = 1) -> None:
        if count > 0:
            self._free += count
            self._slot_freed.set()

    def _spawn(self, msg: Msg) -> None:
        task = asyncio.create_task(self._execute(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, msg: Msg) -> None:
        try:
            await self._executor.execute(msg)
        except Exception:
            # The executor decides every ack itself; a bug here must not kill the worker. The
            # ticket then comes back after the ack wait.
            self._log.exception("executor failed on %s", msg.subject)
        finally:
            self._release()

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            tenant, queue, task_id, _ = sj.parse_event_subject(msg.subject)
        except ValueError:
            return
        if queue in self.queues:
            self._executor.request_cancel(tenant, task_id)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        grace = self._settings.shutdown_grace_s
        self._log.info("waiting up to %gs for %d running tasks", grace, len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        if not pending:
            return
        count = self._executor.abandon_all()
        self._log.warning("handing back %d tasks still running after %gs", count, grace)
        # Abandoning cancels each handler (up to cancel_grace_s) and stores the lease release.
        _, stuck = await asyncio.wait(pending, timeout=self._settings.cancel_grace_s + 5.0)
        await cancel_and_wait(*stuck)
