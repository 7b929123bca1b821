"""The scheduler: turns fired durable timers into `EnqueueDue` commands, punctually.

A timer fires `timer_lead_s` before the due time (the server's scheduler ticks at >= 250 ms under
load); the scheduler holds the message with a local timer until the due time, then enqueues the task
and acks. Several schedulers may share the durable consumer: each message goes to one of them, and a
duplicate is ignored by the decider (the task no longer has that due time).

Cron schedules use the same consumer: a schedule's tick lands on `ordo.due.sched.<tenant>.<id>`, is
held until its nominal time the same way, and runs through the schedule handler, which decides
fired / skipped / buffered / missed / caught_up and submits the tick's task idempotently. A tick
that arrives late (the whole system was down) carries the catch-up decision. A tick buffered behind a
running task (overlap `buffer_one`) is NAKed and comes back every `buffer_recheck_s`.

Punctuality: the hold sleeps on the event loop's monotonic clock to ~`final_wait_s` before the due
time, then waits the last stretch in short sleeps and checks the wall clock, so a task is never
enqueued before its time and rarely more than a millisecond after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, FetchTimeoutError

from ordo.domain.commands import EnqueueDue
from ordo.domain.errors import DomainError, TaskNotFound
from ordo.domain.schedule_commands import Tick
from ordo.domain.schedule_events import ScheduleBuffered
from ordo.domain.schedule_state import ScheduleState
from ordo.domain.state import TaskState
from ordo.domain.status import TaskStatus
from ordo.infra import subjects as sj
from ordo.infra import wiring
from ordo.infra.command_handler import CommandHandler, Prepared
from ordo.infra.event_store import EventStoreError
from ordo.infra.nats_conn import ensure_consumer
from ordo.infra.schedule_handler import Preloaded, ScheduleHandler
from ordo.infra.schedule_timers import decode_tick
from ordo.infra.tasks import cancel_and_wait
from ordo.infra.timers import Due, decode_due

# A timer held at least this long is read ahead of its due time (see Scheduler._preload).
_PRELOAD_MIN_S = 0.05
# A retry timer that found its attempt still running comes back after 10 ms, 20 ms, 40 ms, ... (its
# failure is being appended: a `Retry(after=0)`'s timer fires at once, before that append), and
# says so in the log only once that takes longer than the race it expects.
_EARLY_RETRY_S = 0.01
_EARLY_RETRY_QUIET = 5
# A timer that came before the append it was armed for comes back after 0.25, 0.5, ... s
# (`_not_yet`): a task's found paused this many times in all (about 4 s; a resume's timer can
# arrive before the resume is stored), a schedule's tick this many (about 7 s; see _hold_tick).
_NOT_YET_STEP_S = 0.25
_PAUSED_TRIES = 6
_AHEAD_TRIES = 8


@dataclass(frozen=True)
class SchedulerConfig:
    # Short: a timer held by a scheduler that died is redelivered after this long.
    ack_wait_s: float = 5.0
    fetch_batch: int = 256
    max_held: int = 100_000
    # The last stretch before a due time is waited in short sleeps (see the module doc).
    final_wait_s: float = 0.002
    buffer_recheck_s: float = 0.5
    # A schedule is read this long before its tick (see Scheduler._hold_tick), and so is a task
    # whose timer arrived before the append it was armed for was stored (see Scheduler._hold_one).
    read_ahead_s: float = 0.25
    # On shutdown, a command already under way gets this long to finish (then it is cancelled).
    finish_s: float = 10.0
    # Commands run at once (the rest wait their turn): a burst of due timers must not flood
    # JetStream with thousands of concurrent loads and time them all out.
    max_inflight: int = 32
    # A timer read ahead while held is one append at its due time, not a load and an append: a wave
    # of them (100 tasks due at one instant) goes out together, up to this many at once.
    max_inflight_appends: int = 1024
    # A timer whose task (or schedule) has no history yet is a read served by a replica that is
    # behind: the timer proves the aggregate exists (armed before its first event is stored, or for
    # an event already stored). It comes back this often, this far apart, before it is dropped.
    unknown_tries: int = 20
    unknown_delay_s: float = 1.0

    def __post_init__(self) -> None:
        if self.ack_wait_s <= 0 or self.fetch_batch < 1 or self.max_held < self.fetch_batch:
            raise ValueError("invalid scheduler config")
        if self.read_ahead_s < 0:
            raise ValueError("invalid scheduler config: read_ahead_s >= 0")
        if min(self.max_inflight, self.max_inflight_appends) < 1:
            raise ValueError("invalid scheduler config: max_inflight, max_inflight_appends >= 1")
        if self.unknown_tries < 1 or self.unknown_delay_s <= 0:
            raise ValueError("invalid scheduler config: unknown_tries >= 1, unknown_delay_s > 0")


class Scheduler:
    def __init__(
        self,
        nc: NATS,
        handler: CommandHandler,
        config: SchedulerConfig | None = None,
        logger: logging.Logger | None = None,
        schedules: ScheduleHandler | None = None,
    ) -> None:
        self._nc = nc
        self._handler = handler
        if schedules is None:
            schedules = wiring.schedule_handler(nc, handler)
        self._schedules = schedules
        self._config = config or SchedulerConfig()
        self._log = logger or logging.getLogger("ordo.scheduler")
        self._stop = asyncio.Event()
        self._held: set[asyncio.Task[None]] = set()
        self._acting: set[asyncio.Task[None]] = set()  # held timers past their due time
        self._inflight = asyncio.Semaphore(self._config.max_inflight)
        self._appends = asyncio.Semaphore(self._config.max_inflight_appends)

    async def shutdown(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        js = self._nc.jetstream()
        cfg = ConsumerConfig(
            durable_name=sj.SCHEDULER_CONSUMER,
            filter_subject=sj.due_filter(),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self._config.ack_wait_s,
            max_ack_pending=self._config.max_held,
        )
        await ensure_consumer(js, sj.TIMERS_STREAM, cfg)
        await self._purge_done(js)
        sub = await js.pull_subscribe_bind(sj.SCHEDULER_CONSUMER, sj.TIMERS_STREAM)
        try:
            while not self._stop.is_set():
                room = self._config.max_held - len(self._held)
                if room <= 0:
                    await asyncio.sleep(0.05)
                    continue
                try:
                    msgs = await sub.fetch(min(room, self._config.fetch_batch), timeout=1.0)
                except (FetchTimeoutError, NatsTimeout, TimeoutError):
                    continue  # nothing due (nats-py raises a bare TimeoutError on an empty pull)
                except nats.errors.Error as exc:
                    self._log.warning("fetch failed (reconnecting?): %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                for msg in msgs:
                    task = asyncio.create_task(self._hold(msg))
                    self._held.add(task)
                    task.add_done_callback(self._held.discard)
        finally:
            # Timers still held are handed back at once; a command already under way (a tick's
            # task submitted, its `fired` not yet appended) finishes first, within a bound.
            for task in list(self._held):
                if task not in self._acting:
                    task.cancel()
            if self._acting:
                await asyncio.wait(set(self._acting), timeout=self._config.finish_s)
            await cancel_and_wait(*self._held)
            await sub.unsubscribe()

    async def _purge_done(self, js: JetStreamContext) -> None:
        """Purge the fired timers below the consumer's ack floor: they are done. Those fired since
        per-message TTLs expire by themselves; those stored by an older version (when the stream
        had a max age) would otherwise stay for good. Best effort, once per start."""
        try:
            info = await js.consumer_info(sj.TIMERS_STREAM, sj.SCHEDULER_CONSUMER)
            floor = info.ack_floor.stream_seq if info.ack_floor is not None else None
            if floor:
                await js.purge_stream(sj.TIMERS_STREAM, seq=floor + 1, subject=sj.due_filter())
        except (nats.errors.Error, APIError) as exc:
            self._log.info("fired timers not purged (next start will): %s", exc)

    @contextlib.asynccontextmanager
    async def _slot(self, msg: Msg, preloaded: bool = False) -> AsyncIterator[None]:
        """One of `max_inflight` command slots (`max_inflight_appends` for a command whose aggregate
        was read ahead: one append). While queued for one, keep the message's ack deadline
        extended: a redelivery storm under overload would only add duplicate work."""
        slots = self._appends if preloaded else self._inflight
        if slots.locked():
            while True:
                try:
                    await asyncio.wait_for(slots.acquire(), self._config.ack_wait_s / 3)
                    break
                except TimeoutError:
                    await msg.in_progress()
        else:
            await slots.acquire()  # free: no wait_for (a task and a timer per command)
        try:
            yield
        finally:
            slots.release()

    async def _wait_until(self, due: datetime, msg: Msg) -> None:
        """Return at `due` (wall clock), never before; extend the ack deadline while holding."""
        loop = asyncio.get_running_loop()
        while True:
            wait = (due - datetime.now(UTC)).total_seconds()
            if wait <= 0:
                return
            deadline = loop.time() + wait
            coarse = wait - self._config.final_wait_s
            if coarse > 0:
                step = min(coarse, self._config.ack_wait_s / 3)
                await asyncio.sleep(step)
                if step < coarse:
                    await msg.in_progress()
                    continue
            left = deadline - loop.time()
            if left > 0:
                await asyncio.sleep(left)  # the outer loop re-checks the wall clock

    def _act(self) -> None:
        """The current timer is due: from now on a shutdown lets its command finish."""
        task = asyncio.current_task()
        if task is not None:
            self._acting.add(task)
            task.add_done_callback(self._acting.discard)

    async def _hold(self, msg: Msg) -> None:
        try:
            await self._hold_one(msg)
        except asyncio.CancelledError:
            # Stopping: hand the timer back at once (else it waits out the ack deadline).
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception:  # noqa: BLE001 - one timer's failure must not go unseen nor stop the others
            # E.g. a schedule stored before its task's queue name was checked: its task cannot be
            # published. Said once per delivery, then the timer comes back later, less often each time.
            delay = min(_FAILED_TIMER_MAX_S, 2.0 ** min(_deliveries(msg), 8))
            self._log.exception("timer on %s failed; it comes back in %gs", msg.subject, delay)
            with contextlib.suppress(Exception):
                await msg.nak(delay=delay)

    async def _hold_one(self, msg: Msg) -> None:
        if sj.is_schedule_due(msg.subject):
            await self._hold_tick(msg)
            return
        try:
            due = decode_due(msg.data)
        except Exception:  # noqa: BLE001 - a foreign message must not block the timers
            self._log.error("undecodable timer message on %s: terminated", msg.subject)
            await msg.term()
            return
        # Read the task while the timer is held, and decide and encode its enqueue then, so the due
        # moment costs one publish, not a load, a decision and an append (the append expects this
        # sequence: a change meanwhile only means a reload and a new decision).
        command = EnqueueDue(task_id=due.task_id, due_at=due.due_at)
        known, prepared = await self._prepare(due, command)
        if known is not None and prepared is None:
            # Nothing to enqueue on what was read. A timer is armed before the append it is for (a
            # submit's, a failure's), and one due soon fires at once: it may arrive before that
            # append is stored. Read again shortly before the due time, or the due moment costs a
            # load (a scan of the log) instead of one publish.
            await self._wait_until(due.due_at - timedelta(seconds=self._config.read_ahead_s), msg)
            known, prepared = await self._prepare(due, command)
        await self._wait_until(due.due_at, msg)
        self._act()
        try:
            async with self._slot(msg, preloaded=known is not None):
                out = await self._handler.execute(due.tenant, command, known=known, prepared=prepared)
            # A retry's timer is armed before the failure that needs it is appended: a timer due
            # before that append lands finds the attempt still running. It comes back (bounded, as
            # for a task not visible yet) rather than being acked away: the retry would be stranded.
            early = not out.events and out.state.status is TaskStatus.RUNNING
            what = f"retry timer for {due.tenant}/{due.task_id}"
            if early and await self._back_later(msg, what, "its attempt is still running", _EARLY_RETRY_S):
                return
            # A resume past the due time arms a timer that fires at once, before the `resumed` it
            # is for is appended: on a busy host it can find the task still paused, and acked away
            # it would leave the resumed task waiting for ever. A paused task's own timer comes back
            # a few times too, and is dropped quietly.
            held = not out.events and out.state.status is TaskStatus.PAUSED and out.state.due_at == due.due_at
            if held and await _not_yet(msg, _PAUSED_TRIES) is not None:
                return
        except TaskNotFound:
            if await self._back_later(msg, f"timer for task {due.tenant}/{due.task_id}"):
                return
        except DomainError as exc:
            self._log.info("timer for %s ignored: %s", due.task_id, exc)
        except EventStoreError as exc:
            self._log.warning("timer for %s will retry: %s", due.task_id, exc)
            await msg.nak(delay=1.0)
            return
        await msg.ack()

    async def _back_later(
        self,
        msg: Msg,
        what: str,
        why: str = "no history yet (a replica behind?)",
        step_s: float | None = None,
    ) -> bool:
        """NAK a timer whose aggregate has no history yet (a lagging replica), or is not yet in the
        state the timer was armed for; True if NAKed.

        Bounded: a timer armed for a submit whose append then failed never finds its task, and
        is dropped (acked) after `unknown_tries` deliveries. With `step_s`, the n-th return comes
        step_s * 2**(n-1) later (at most `unknown_delay_s`), and the first `_EARLY_RETRY_QUIET`
        are logged at debug level: soon first, for a race expected to end soon."""
        n = _deliveries(msg)
        if n < self._config.unknown_tries:
            delay = self._config.unknown_delay_s
            level = logging.WARNING
            if step_s is not None:
                delay = min(delay, step_s * 2 ** min(n - 1, 30))
                level = logging.DEBUG if n <= _EARLY_RETRY_QUIET else logging.WARNING
            self._log.log(level, "%s: %s; back later", what, why)
            await msg.nak(delay=delay)
            return True
        self._log.error("%s: still no history after %d deliveries; dropped", what, _deliveries(msg))
        return False

    async def _prepare(
        self, due: Due, command: EnqueueDue
    ) -> tuple[tuple[TaskState, int] | None, Prepared | None]:
        """The task read ahead, and its enqueue decided and encoded on it (None: nothing to send)."""
        known = await self._preload(due.tenant, due.task_id, due.due_at)
        return known, None if known is None else self._handler.prepare(due.tenant, command, known)

    async def _preload(self, tenant: str, task_id: str, due_at: datetime) -> tuple[TaskState, int] | None:
        if (due_at - datetime.now(UTC)).total_seconds() < _PRELOAD_MIN_S:
            return None  # due now: the command loads it anyway
        try:
            state, _, last_seq = await self._handler.load(tenant, task_id)
        except EventStoreError:
            return None
        return state, last_seq

    async def _read_ahead(self, tenant: str, schedule_id: str, tick_at: datetime) -> Preloaded | None:
        """Read the schedule (and its previous run) while the tick is held: at the tick, its task
        is then one append away (a change meanwhile only means a reload)."""
        if (tick_at - datetime.now(UTC)).total_seconds() < _PRELOAD_MIN_S:
            return None
        try:
            return await self._schedules.read_ahead(tenant, schedule_id)
        except EventStoreError:
            return None

    async def _arm_buffered(self, tenant: str, schedule_id: str, tick_at: datetime) -> None:
        try:
            await self._schedules.timers.arm(tenant, schedule_id, tick_at)
        except nats.errors.Error as exc:  # the next regular tick starts it instead
            self._log.warning("buffered tick of schedule %s/%s not armed: %s", tenant, schedule_id, exc)

    async def _hold_tick(self, msg: Msg) -> None:
        try:
            tick = decode_tick(msg.data)
        except Exception:  # noqa: BLE001
            self._log.error("undecodable schedule tick on %s: terminated", msg.subject)
            await msg.term()
            return
        # Read ahead shortly before the tick, not as soon as it arrives: a timer published fired
        # arrives while the previous tick is still being stored, and would be read stale.
        await self._wait_until(tick.tick_at - timedelta(seconds=self._config.read_ahead_s), msg)
        known = await self._read_ahead(tick.tenant, tick.schedule_id, tick.tick_at)
        await self._wait_until(tick.tick_at, msg)
        self._act()
        command = Tick(
            schedule_id=tick.schedule_id, tenant=tick.tenant, tick_at=tick.tick_at, now=datetime.now(UTC)
        )
        try:
            async with self._slot(msg, preloaded=known is not None):
                outcome = await self._schedules.execute(tick.tenant, command, known=known)
        except DomainError as exc:
            self._log.info("tick of schedule %s ignored: %s", tick.schedule_id, exc)
        except EventStoreError as exc:
            self._log.warning("tick of schedule %s will retry: %s", tick.schedule_id, exc)
            await msg.nak(delay=1.0)
            return
        else:
            unknown = not outcome.state.exists and not outcome.state.deleted
            if unknown and await self._back_later(msg, f"tick of schedule {tick.tenant}/{tick.schedule_id}"):
                return
            if outcome.state.buffered_at == tick.tick_at:
                await msg.nak(delay=self._config.buffer_recheck_s)  # waits for the running task
                return
            if outcome.state.buffered_at is not None and any(
                isinstance(e, ScheduleBuffered) for e in outcome.events
            ):
                # A catch-up buffered a later tick than this message's: that tick gets a timer of
                # its own, due at once, to be rechecked like any buffered tick (not only at the next
                # regular tick, up to a period late).
                await self._arm_buffered(tick.tenant, tick.schedule_id, outcome.state.buffered_at)
            if not outcome.events and _ahead_of(tick.tick_at, outcome.state):
                # A schedule's next tick is armed before the event that sets it (fired, resumed,
                # updated, created) is appended. A tick already due when armed (a late tick on a busy
                # host, a resume) fires at once and can find the schedule before that event: its
                # `next_at` still an earlier tick, or paused. Acked away, the schedule would never
                # fire again. It comes back; one the schedule never reaches is dropped after a few.
                delay = await _not_yet(msg, _AHEAD_TRIES)
                if delay is not None:
                    self._log.info(
                        "tick %s of schedule %s/%s: the schedule is not there yet (next %s); back in %gs",
                        tick.tick_at.isoformat(),
                        tick.tenant,
                        tick.schedule_id,
                        outcome.state.next_at,
                        delay,
                    )
                    return
        await msg.ack()


async def _not_yet(msg: Msg, tries: int) -> float | None:
    """NAK a timer that came before the append it was armed for, the n-th time n steps later: the
    delay, or None (not NAKed) once it has come `tries` times."""
    if _deliveries(msg) >= tries:
        return None
    delay = _NOT_YET_STEP_S * _deliveries(msg)
    await msg.nak(delay=delay)
    return delay


def _ahead_of(tick_at: datetime, state: ScheduleState) -> bool:
    """Whether a tick that decided nothing may be one the schedule has not reached yet: the schedule
    exists, and is paused or armed for an earlier tick. (A tick before `next_at` is stale or a
    duplicate: the schedule is past it for good.)"""
    if not state.exists or state.deleted:
        return False
    return state.next_at is None or state.next_at < tick_at


# The longest a failed timer waits before it is tried again.
_FAILED_TIMER_MAX_S = 60.0


def _deliveries(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # noqa: BLE001 - not a JetStream message: count it as its first delivery
        return 1
