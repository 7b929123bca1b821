"""Live SSE delivery: one tail reader per gateway fans committed task events out in memory.

Why: a stream that queried PostgreSQL on every projector commit cost O(streams × commits) queries;
at 1,100 streams the gateway saturated and most events arrived late or never (docs/benchmarks.md).
Here the gateway reads each commit once, for every tenant, encodes each frame once, and hands the
frames to the streams whose filter (tenant, task, queue, event types) they match.

How it stays exact (a stream's ids are log sequences; "contiguous" means the filtered log):
- `TailHub.position` is a log sequence: every task event at or below it has been read and handed to
  the subscribers registered at that moment. It moves only right after a hand-out, with no await
  in between, and a subscriber registers with no await between reading the position and joining.
- A stream resuming from `after` joins at the hub's position P (from then on the hub buffers every
  matching event past P for it), reads (after, P] from the read model in pages, then takes its
  buffer: no gap, no duplicate. A resume point ahead of P first waits for the hub to pass it.
- The single projector commits task events in sequence order and NOTIFYs the batch's last sequence
  with the commit (projections/runner.py), so every row up to a notified sequence is visible. A
  missed notification (the LISTEN connection lost) is made up by re-reading the checkpoint when idle.
- After the commit the projector also publishes the batch's task events, as frames, on the committed
  feed (projections/committed_feed.py): chunks naming the log range they cover. A chunk that starts
  at or before the hub's position is handed out without a query; a range no chunk covers (a chunk
  lost, an isolated batch, a projector that does not publish) is read from the read model, after
  waiting `feed_grace_s` for its chunk while the feed is alive.
- The projector publishes the feed only while a gateway asks for it: a hub with streams sends
  `ordo.committed.want` when its first stream joins and every `want_every_s` after. The feed counts
  as alive only once a chunk came after the hub began asking, so the commits before the projector
  heard the request are read from the read model at once, not after a grace wait.

Slow clients: a subscriber's buffer is bounded (`max_buffer_bytes`, plus one hand-out: at most a
tail page). Past it the subscriber is cut: its buffer is dropped and its stream ends; the client
(EventSource) reconnects with the last id it received and catches up from the read model. The hub
never waits for a client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.client import Client as NATS

from ordo.infra.metrics import Counter, Registry
from ordo.infra.pg import Pool, ReadModelUnavailable
from ordo.infra.raw_client import subscribe_payloads, unsubscribe
from ordo.infra.tasks import cancel_and_wait
from ordo.projections import committed_feed, task_events
from ordo.projections.committed_feed import Chunk, Row, frame
from ordo.projections.runner import checkpoint

__all__ = ["HubConfig", "Notifier", "Subscriber", "TailHub", "frame"]

log = logging.getLogger("ordo.gateway.live")
_RETRY_MIN_S = 0.2
_RETRY_MAX_S = 5.0


class Notifier:
    """Announces a growing log sequence (the projector's commits, the hub's position) to waiters.

    No lock: each announcement sets the current event and replaces it, so a waiter that times out
    or is cancelled leaves nothing behind (a Condition's lock must be re-acquired on cancel, and a
    thousand streams cancelled at once could wait on it for good)."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self.last_seq = 0

    def notify(self, seq: int) -> None:
        self.last_seq = max(self.last_seq, seq)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_beyond(self, seq: int, timeout: float) -> None:
        """Return when a sequence past `seq` was announced, or after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.last_seq <= seq:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


@dataclass(frozen=True)
class HubConfig:
    tail_page: int = 2000  # rows per tail query (a bigger commit is read in several)
    catch_up_page: int = 500  # rows per catch-up query of one stream
    # Log sequences one catch-up query of a stream without a task examines at most: the tenant,
    # queue and type filters are checked on the rows of that stretch (no index serves them in
    # sequence order), so a filter that matches little costs queries of bounded size, not one scan
    # of every event since the resume point.
    catch_up_stretch: int = 20_000
    max_buffer_bytes: int = 1 << 20  # frames waiting for one client; past this it is cut
    idle_s: float = 5.0  # no NOTIFY for this long: re-read the checkpoint; idle streams wake (keys)
    # A committed range waits this long for its chunk of the committed feed before it is read from
    # the read model (only while the feed was heard within `feed_alive_s`).
    feed_grace_s: float = 0.25
    feed_alive_s: float = 60.0
    feed_chunks: int = 256  # chunks kept ahead of the hub's position; past this the oldest go
    want_every_s: float = committed_feed.WANT_EVERY_S  # while it has streams, ask for the feed this often

    def __post_init__(self) -> None:
        if (
            min(self.tail_page, self.catch_up_page, self.catch_up_stretch, self.max_buffer_bytes) < 1
            or self.idle_s <= 0
        ):
            raise ValueError(
                "tail_page, catch_up_page, catch_up_stretch, max_buffer_bytes >= 1 and idle_s > 0 required"
            )
        if self.feed_grace_s < 0 or self.feed_alive_s < 0 or self.feed_chunks < 1 or self.want_every_s <= 0:
            raise ValueError(
                "feed_grace_s, feed_alive_s >= 0, feed_chunks >= 1 and want_every_s > 0 required"
            )


class HubMetrics:
    """The hub's counters, process-wide; `export` puts them on a /metrics registry."""

    def __init__(self) -> None:
        self.tail_queries = Counter(
            "ordo_sse_tail_queries_total",
            "Read-model queries of the SSE tail reader (ranges the committed feed missed)",
        )
        self.catch_up_queries = Counter(
            "ordo_sse_catch_up_queries_total", "Read-model pages read by SSE streams catching up"
        )
        self.cuts = Counter(
            "ordo_sse_cuts_total", "SSE streams ended because their client fell behind (they resume)"
        )
        self.feed_chunks = Counter(
            "ordo_sse_feed_chunks_total", "Committed ranges SSE handed out from the committed feed (no query)"
        )

    def export(self, registry: Registry) -> None:
        for attr in ("tail_queries", "catch_up_queries", "cuts", "feed_chunks"):
            mine: Counter = getattr(self, attr)
            shared = registry.counter(mine.name, mine.help, mine.label_names)
            for labels, value in mine.values.items():
                shared.inc(*labels, by=value)
            setattr(self, attr, shared)


METRICS = HubMetrics()


class Subscriber:
    """One stream: its filter, and the chunks the hub handed it that its writer has not taken."""

    def __init__(
        self,
        tenant: str,
        task_id: str | None = None,
        queue: str | None = None,
        types: tuple[str, ...] | None = None,
    ) -> None:
        self.tenant = tenant
        self.task_id = task_id
        self.queue = queue
        self.types = types  # None: every type; (): nothing can match
        self.filter = _Filter(queue, None if types is None else frozenset(types))
        self._chunks: list[bytes] = []
        self.buffered = 0
        self.cut = False
        self._ready = asyncio.Event()

    def _push(self, chunk: bytes, limit: int) -> bool:
        """False when the client is behind: chunks not yet taken, and this one would pass `limit`.
        An empty buffer takes one hand-out of any size (a big commit is not a slow client; the
        chunk is shared with every other stream of the same filter until taken)."""
        size = len(chunk)
        if self._chunks and self.buffered + size > limit:
            return False
        self._chunks.append(chunk)
        self.buffered += size
        self._ready.set()
        return True

    def _end(self) -> None:
        self.cut = True
        self._chunks.clear()
        self.buffered = 0
        self._ready.set()

    async def take(self) -> bytes:
        """Every chunk handed out since the last take, joined for one write; b"" when the hub's
        idle tick (`TailHub._ticks`) woke it with nothing."""
        if not self._chunks and not self.cut:
            self._ready.clear()
            await self._ready.wait()
        chunks = self._chunks
        if len(chunks) == 1:  # the usual case: one hand-out, written as the hub joined it
            chunk = chunks[0]
        else:
            chunk = b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        return chunk

    def _wake(self) -> None:
        self._ready.set()


@dataclass(frozen=True)
class _Filter:
    """What a stream selects besides tenant and task: equal filters share one hand-out."""

    queue: str | None
    types: frozenset[str] | None  # None: every type

    def matches(self, queue: str, type_: str) -> bool:
        """The task is checked by the hub's index; queue and types here."""
        return (self.queue is None or queue == self.queue) and (self.types is None or type_ in self.types)


class _Group:
    """The subscribers of one index key (a tenant, or one task) with one filter: a commit's frames
    are matched and joined once per group, and every member gets the same bytes."""

    __slots__ = ("filter", "members")

    def __init__(self, flt: _Filter) -> None:
        self.filter = flt
        self.members: set[Subscriber] = set()


class TailHub:
    """The gateway's one tail reader of `task_events` and its subscribers (see the module doc)."""

    def __init__(
        self,
        pool: Pool,
        commits: Notifier,
        config: HubConfig | None = None,
        logger: logging.Logger | None = None,
        nc: NATS | None = None,
    ) -> None:
        """With `nc`, committed ranges come from the committed feed where it has them."""
        self._pool = pool
        self._commits = commits
        self._nc = nc
        self._feed: collections.deque[Chunk] = collections.deque()
        self._fed = Notifier()  # announces the end of the newest chunk received
        self._feed_heard = float("-inf")
        self._feed_sub: Any = None
        # Since when this hub has had streams (and asked for the feed); +inf while it has none.
        self._wanting_since = float("inf")
        self._want_now = asyncio.Event()
        self.config = config or HubConfig()
        self._log = logger or log
        self.position = 0
        self._moved = Notifier()  # announces the position (resume points ahead of it wait on it)
        # index key -> filter -> group: tenant-wide streams by tenant, per-task ones by (tenant, task)
        self._by_tenant: dict[str, dict[_Filter, _Group]] = {}
        self._by_task: dict[tuple[str, str], dict[_Filter, _Group]] = {}
        self._stop = asyncio.Event()
        # This hub's own counts (METRICS are process-wide).
        self.tail_queries = 0
        self.cuts = 0
        self.feed_chunks = 0

    @property
    def subscribers(self) -> int:
        return sum(
            len(g.members)
            for index in (self._by_tenant, self._by_task)
            for groups in index.values()
            for g in groups.values()
        )

    async def start(self) -> None:
        """Begin at the committed position: earlier events reach streams through their catch-up."""
        if self._nc is not None and self._feed_sub is None:
            self._feed_sub = await subscribe_payloads(self._nc, committed_feed.SUBJECT, self._take_chunk)
        self._move_to(await checkpoint(self._pool, task_events.NAME))

    def _take_chunk(self, data: bytes) -> None:
        try:
            chunk = committed_feed.decode_chunk(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._log.warning("committed feed chunk not readable (the range is read back): %s", exc)
            return
        if chunk.upto <= self.position:
            return  # read already (from the read model)
        self._feed.append(chunk)
        while len(self._feed) > self.config.feed_chunks:
            self._feed.popleft()  # no one took them: the range is read back if needed
        self._feed_heard = asyncio.get_running_loop().time()
        self._fed.notify(chunk.upto)

    async def run(self) -> None:
        """Read and hand out every commit until `shutdown()`; PostgreSQL away only pauses it."""
        ticks = asyncio.create_task(self._ticks(), name="sse-idle-ticks")
        wants = asyncio.create_task(self._wants(), name="sse-feed-wants")
        try:
            await self._read_loop()
        finally:
            await cancel_and_wait(ticks, wants)

    async def _wants(self) -> None:
        """While this hub has streams: ask for the committed feed when the first one joins, and
        every `want_every_s` after (best effort: unheard, the commits are read back)."""
        if self._nc is None:
            return
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._want_now.wait(), self.config.want_every_s)
            self._want_now.clear()
            if self._by_tenant or self._by_task:
                try:
                    await self._nc.publish(committed_feed.WANT_SUBJECT, b"")
                except Exception as exc:  # noqa: BLE001 - a lost request only means read-backs
                    self._log.debug("committed feed not asked for: %s", exc)

    async def _read_loop(self) -> None:
        pause = _RETRY_MIN_S
        while not self._stop.is_set():
            try:
                await self._advance(await self._next_target())
                pause = _RETRY_MIN_S
            except ReadModelUnavailable as exc:
                self._log.warning("SSE tail paused (streams wait): %s", exc)
            except Exception:  # the tail must outlive one bad read; streams only wait meanwhile
                self._log.exception("SSE tail read failed; retrying")
            else:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), pause)
            pause = min(2 * pause, _RETRY_MAX_S)

    async def shutdown(self) -> None:
        """Stop reading and end every stream (its client resumes elsewhere from its last id)."""
        self._stop.set()
        if self._feed_sub is not None and self._nc is not None:
            await unsubscribe(self._nc, self._feed_sub)
            self._feed_sub = None
        for groups in (*self._by_tenant.values(), *self._by_task.values()):
            for group in groups.values():
                for sub in group.members:
                    sub._end()
        self._by_tenant.clear()
        self._by_task.clear()

    async def follow(self, sub: Subscriber, after: int) -> AsyncGenerator[bytes, None]:
        """`sub`'s frames after log sequence `after`, a chunk per write: caught up from the read
        model, then live. Yields b"" when idle, every `idle_s` or so (the caller may re-check its key); ends
        when `sub` is cut (a slow client) or the hub shuts down."""
        try:
            while self.position < after:  # the resume point is ahead of this gateway's view
                if self._stop.is_set():
                    return
                await self._moved.wait_beyond(after - 1, self.config.idle_s)
                yield b""
            if self._stop.is_set():
                return
            reached = self.position
            self._join(sub)  # from here the hub buffers every match past `reached` for `sub`
            while after < reached and sub.types != ():
                # A task's events are read by its index; any other stream a stretch at a time.
                upto = (
                    reached if sub.task_id is not None else min(reached, after + self.config.catch_up_stretch)
                )
                page = await task_events.events_after(
                    self._pool,
                    sub.tenant,
                    after,
                    self.config.catch_up_page,
                    task_id=sub.task_id,
                    queue=sub.queue,
                    types=sub.types,
                    upto=upto,
                )
                METRICS.catch_up_queries.inc()
                if page:
                    yield b"".join(frame(e) for e in page)
                if sub.cut:
                    break
                # A full page goes on after its last event; a short one read its whole stretch.
                after = page[-1]["seq"] if len(page) == self.config.catch_up_page else upto
            while not sub.cut:
                chunk = await sub.take()
                if sub.cut:
                    return
                yield chunk
        finally:
            self._leave(sub)

    async def _ticks(self) -> None:
        """Every `idle_s`: wake the streams with nothing to write, so that each yields b"" (its
        caller re-checks its key). One timer per hub instead of one per stream and write."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.idle_s)
            for index in (self._by_tenant, self._by_task):
                for groups in index.values():
                    for group in groups.values():
                        for sub in group.members:
                            if not sub._chunks:
                                sub._wake()

    async def _next_target(self) -> int:
        """The sequence to read up to: the newest notified commit, or, after `idle_s` without one,
        the checkpoint (a notification may have been missed while LISTEN reconnected)."""
        if max(self._commits.last_seq, self._fed.last_seq) <= self.position:
            waits = [
                asyncio.ensure_future(self._commits.wait_beyond(self.position, self.config.idle_s)),
                asyncio.ensure_future(self._fed.wait_beyond(self.position, self.config.idle_s)),
                asyncio.ensure_future(self._stop.wait()),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        newest = max(self._commits.last_seq, self._fed.last_seq)
        if newest > self.position or self._stop.is_set():
            return newest
        return await checkpoint(self._pool, task_events.NAME)

    async def _advance(self, target: int) -> None:
        while self.position < target and not self._stop.is_set():
            if not self._by_tenant and not self._by_task:
                self._move_to(target)  # nobody listens: later streams catch up from the read model
                self._drop_fed()
                return
            chunk = self._covering()
            if chunk is None and self._feed_alive():
                # The commit's notification may come before its chunk: give the chunk a moment.
                await self._fed.wait_beyond(self.position, self.config.feed_grace_s)
                chunk = self._covering()
            if chunk is not None:
                position = self.position
                self._hand_out([row for row in chunk.rows if row.seq > position])
                self._move_to(chunk.upto)  # no await since the hand-out
                self.feed_chunks += 1
                METRICS.feed_chunks.inc()
                continue
            # No chunk for this range: read it from the read model, up to where the feed resumes.
            bound = min(target, self._feed[0].after) if self._feed else target
            if bound <= self.position:
                continue  # a chunk arrived meanwhile
            recs = await task_events.committed_between(
                self._pool, self.position, bound, self.config.tail_page
            )
            self.tail_queries += 1
            METRICS.tail_queries.inc()
            upto = recs[-1][1]["seq"] if len(recs) == self.config.tail_page else bound
            self._hand_out([_row(tenant, entry) for tenant, entry in recs])
            self._move_to(upto)  # no await since the hand-out: joins see both or neither
            self._drop_fed()

    def _covering(self) -> Chunk | None:
        """The received chunk that continues from the hub's position, if there is one (chunks
        wholly behind the position are dropped)."""
        self._drop_fed()
        if self._feed and self._feed[0].after <= self.position:
            return self._feed.popleft()
        return None

    def _drop_fed(self) -> None:
        while self._feed and self._feed[0].upto <= self.position:
            self._feed.popleft()

    def _feed_alive(self) -> bool:
        """A chunk came within `feed_alive_s`, and since this hub began asking for the feed."""
        heard = self._feed_heard
        if heard < self._wanting_since:
            return False
        return asyncio.get_running_loop().time() - heard <= self.config.feed_alive_s

    def _hand_out(self, rows: list[Row]) -> None:
        """Match each row against each group (not each stream) of its tenant and its task, join
        every group's frames once, then hand each member the group's bytes."""
        out: dict[_Group, list[bytes]] = {}
        by_tenant, by_task = self._by_tenant, self._by_task
        for row in rows:
            encoded = row.frame
            for groups in (by_tenant.get(row.tenant), by_task.get((row.tenant, row.task_id))):
                if not groups:
                    continue
                for flt, group in groups.items():
                    if flt.matches(row.queue, row.type):
                        frames = out.get(group)
                        if frames is None:
                            out[group] = [encoded]
                        else:
                            frames.append(encoded)
        limit = self.config.max_buffer_bytes
        for group, frames in out.items():
            chunk = frames[0] if len(frames) == 1 else b"".join(frames)
            behind = [sub for sub in group.members if not sub._push(chunk, limit)]
            for sub in behind:
                self._leave(sub)
                sub._end()
                self.cuts += 1
                METRICS.cuts.inc()

    def _move_to(self, seq: int) -> None:
        self.position = max(self.position, seq)
        self._moved.notify(self.position)

    def _join(self, sub: Subscriber) -> None:
        if not self._by_tenant and not self._by_task:  # the first stream: ask for the feed now
            self._wanting_since = asyncio.get_running_loop().time()
            self._want_now.set()
        groups = self._groups(sub, create=True)
        assert groups is not None
        group = groups.get(sub.filter)
        if group is None:
            group = groups[sub.filter] = _Group(sub.filter)
        group.members.add(sub)

    def _leave(self, sub: Subscriber) -> None:
        groups = self._groups(sub, create=False)
        group = None if groups is None else groups.get(sub.filter)
        if groups is None or group is None:
            return
        group.members.discard(sub)
        if not group.members:
            del groups[sub.filter]
            if not groups:
                if sub.task_id is None:
                    del self._by_tenant[sub.tenant]
                else:
                    del self._by_task[(sub.tenant, sub.task_id)]
                if not self._by_tenant and not self._by_task:
                    self._wanting_since = float("inf")  # no streams: the projector may stop the feed

    def _groups(self, sub: Subscriber, create: bool) -> dict[_Filter, _Group] | None:
        if sub.task_id is None:
            if create:
                return self._by_tenant.setdefault(sub.tenant, {})
            return self._by_tenant.get(sub.tenant)
        if create:
            return self._by_task.setdefault((sub.tenant, sub.task_id), {})
        return self._by_task.get((sub.tenant, sub.task_id))


def _row(tenant: str, entry: dict[str, Any]) -> Row:
    """A row read back from the read model, as the committed feed carries it."""
    return Row(tenant, entry["task_id"], entry["queue"], entry["type"], entry["seq"], frame(entry))
