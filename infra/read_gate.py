"""Batch submits keep pace with the read side (decision 59).

A batch submit can store events far faster than the projector folds them: 20,000 tasks reach the
log in under a second, and the read model then trails it by over a second for every tenant (every
read, timeline and live update) until the backlog drains. The workers do not run the tasks any
sooner for it: they take a few thousand a second either way.

So a batch submit goes out in pieces, and before each piece it waits while the read model is more
than a window of events behind the last event this process stored. The window moves between a
quarter of `backlog` and `backlog`, as a congestion window does: the gate times each piece from its
store to the announcement that covers it, and
- a piece shown within `lag_s` (50 ms) widens the window by a sixteenth of `backlog`;
- a piece shown later narrows it by a third, once for all the pieces stored before that (they were
  on their way already): a host or a read side slower than the backlog assumed keeps its lag
  instead of its backlog (W1 on a slow hour: lag p99 well over 100 ms at a fixed 400 events);
- a burst after a quiet second starts at the quarter: the read side may be cold (its first batch
  took 45-80 ms for 400-750 events under W1, and those events were W1's worst; docs/benchmarks.md).
A piece is a quarter of the window, and a piece that waits looks again when the read model shows an
earlier piece (or, with none on its way, at every announcement): one goes out as one is shown. In
W1 that left the rate as it was, where looking again at every announcement cost about 5 % of it
(docs/benchmarks.md, 2026-12-07). The live projector announces its
position after each commit on core NATS (`ordo.projected`, the sequence as ASCII digits), and
again every half second while it is caught up; the gate listens from its creation (inside an event
loop) or its first use, and asks for the position when it begins (`ordo.projected.ask`).

Workers keep pace too (decision 60). A worker's events (an attempt's start and its end, two of
every three events of a short task) are not paced by the batch submits: when the workers have a
backlog of tickets, as at the end of W1 once the submitter is done, they store events faster than a
slow host's read side folds them, and W1's lag p99 went to 105-265 ms. So a worker's gate times
every event it appends (`stored`), and before the worker takes new tickets it waits while the oldest
of its events the read model does not show yet was stored more than `lag_s` ago (`keep_up`; 60 ms
by default, above the submits' 50 so that a read side keeping up never holds it). The attempts it
has taken run on: their starts, heartbeats and results never wait.

The gate never stops a submit or a worker for long and never depends on the read side being up:
- no announcement heard in the last `fresh_s` (no projector, a stopped one, one stuck in a commit,
  which holds what arrives and stays silent, or one not allowed to announce): no wait;
- a read model more than `far_behind` events behind (it is catching up after an outage or a
  rebuild, not being outrun by a burst): no wait, pacing would only hold intake for minutes;
- at most `max_wait_s` in all for one batch submit (an HTTP client waiting for its answer must
  not time out and send the batch again), or for a worker before one take of tickets.
Single submits never wait here: their latency is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from ordo.infra.raw_client import subscribe_payloads

SUBJECT = "ordo.projected"
# A gate that begins to listen asks here (empty payload); a caught-up projector announces at once.
ASK_SUBJECT = "ordo.projected.ask"
# Without an announcement for this long the projector is taken as idle or gone: no pacing.
FRESH_S = 1.0
# A read model this many times `backlog` behind is catching up, not being outrun: no pacing.
FAR_BEHIND_FACTOR = 50
# A piece the read model shows later than this after it was stored narrows the window (the default).
LAG_S = 0.05
# The most a worker waits for the read model before one take of tickets.
WORKER_WAIT_S = 1.0
_TIMED = 1024  # pieces timed at most (a read model that went silent leaves them unshown)

_log = logging.getLogger("ordo.read_gate")


def announcement(seq: int) -> bytes:
    """The projector's announcement of its committed position."""
    return str(seq).encode()


class ReadGate:
    """Paces one process's batch submits to the read model's position (see the module)."""

    def __init__(
        self, nc: NATS, backlog: int, max_wait_s: float, fresh_s: float = FRESH_S, lag_s: float = LAG_S
    ) -> None:
        if backlog < 1 or max_wait_s < 0 or fresh_s <= 0 or lag_s <= 0:
            raise ValueError("backlog >= 1, max_wait_s >= 0, fresh_s > 0 and lag_s > 0 required")
        self._nc = nc
        self.backlog = backlog
        self.lag_s = lag_s
        self.floor = max(1, backlog // 4)
        self.window = self.floor  # the events the read model may trail by now: floor..backlog
        self._step = max(1, backlog // 16)
        self._timed: deque[tuple[int, float]] = deque(maxlen=_TIMED)  # pieces stored: (seq, when)
        self._stored_seq = 0
        self._stored_at = float("-inf")
        self._narrowed_at = 0  # the last sequence stored when the window last narrowed
        self.far_behind = FAR_BEHIND_FACTOR * backlog
        self.max_wait_s = max_wait_s
        self.fresh_s = fresh_s
        self.position = 0
        self._heard_at = float("-inf")
        self._moved = asyncio.Event()
        self._sub: Subscription | None = None
        self._subscribing = asyncio.Lock()
        self._listening: asyncio.Task[None] | None = None
        try:
            self._listening = asyncio.get_running_loop().create_task(self._listen())
        except RuntimeError:
            pass  # no loop yet: the first `admit` subscribes
        # Seconds spent waiting, and the pieces that waited (gateway metrics).
        self.waited_s = 0.0
        self.waits = 0
        self.holding = 0  # callers waiting now (`admit`, `keep_up`)

    @property
    def piece(self) -> int:
        """The most tasks a batch submit appends between two looks at the read model: a quarter of the
        window. The read model's lag is the backlog over the read side's rate, and its tail is how
        unevenly that backlog refills: a piece lands in the log at once, so the projector's next
        batch holds it whole. With pieces of a quarter (100 at the default 400, the window at its
        widest) instead of a half, W1's lag p99 was at most 100 ms in 14 of 15 runs against 12 of
        15, p50 33-39 against 41-50 ms, for 2 % of its rate (smaller pieces make every process work
        in smaller waves; docs/benchmarks.md, 2026-12-07, decision 59)."""
        return max(1, self.window // 4)

    def stored(self, seq: int, at: float | None = None) -> None:
        """This process stored a piece, up to `seq`, at `at` (`time.monotonic()`, default now): it is
        timed until the read model shows it."""
        if seq > self._stored_seq:
            self._stored_seq = seq
            self._stored_at = at = time.monotonic() if at is None else at
            self._timed.append((seq, at))

    def _heard(self, data: bytes) -> None:
        try:
            seq = int(data)
        except ValueError:
            return
        self.position = seq
        self._heard_at = now = time.monotonic()
        timed = self._timed
        shown = False
        while timed and timed[0][0] <= seq:
            piece, at = timed.popleft()
            self._shown(piece, now - at)
            shown = True
        # A waiting piece looks again when the read model shows one of this process's pieces (one
        # goes out as one is shown, as acknowledgements clock a sender), or at every announcement
        # while none is on its way.
        if shown or not timed:
            self._moved.set()
            self._moved = asyncio.Event()

    def _shown(self, seq: int, lag: float) -> None:
        """The read model shows the piece up to `seq`, `lag` seconds after it was stored."""
        if lag <= self.lag_s:
            self.window = min(self.backlog, self.window + self._step)
        elif seq > self._narrowed_at:  # stored after the last narrowing, which it did not see
            self.window = max(self.floor, self.window * 2 // 3)
            self._narrowed_at = self._stored_seq

    async def _listen(self) -> None:
        if self._sub is not None:
            return
        async with self._subscribing:
            if self._sub is None:
                try:
                    self._sub = await subscribe_payloads(self._nc, SUBJECT, self._heard)
                    await self._nc.publish(ASK_SUBJECT, b"")
                except nats.errors.Error as exc:  # then nothing is heard: no pacing
                    _log.warning("the read model's position is not heard (batch submits unpaced): %s", exc)

    def behind(self, log_end: int) -> int | None:
        """Events the read model trails `log_end` by, while that is worth waiting on; else None."""
        if time.monotonic() - self._heard_at > self.fresh_s:
            return None
        gap = log_end - self.position
        return gap if self.window < gap <= self.far_behind else None

    def late(self) -> bool:
        """Whether the oldest event this process stored that the read model does not show yet was
        stored more than `lag_s` ago, while that is worth waiting on (see the module)."""
        timed = self._timed
        if not timed:
            return False
        now = time.monotonic()
        if now - timed[0][1] <= self.lag_s or now - self._heard_at > self.fresh_s:
            return False
        return self._stored_seq - self.position <= self.far_behind

    async def keep_up(self, budget: float | None = None) -> float:
        """Wait while `late()`, at most `budget` seconds (default `max_wait_s`); the seconds waited.
        A worker calls it before it takes new tickets."""
        await self._listen()
        if not self.late():
            return 0.0
        return await self._wait_while(self.late, self.max_wait_s if budget is None else budget)

    async def admit(self, log_end: int, budget: float | None = None) -> float:
        """Wait while the read model trails `log_end` (the last sequence this process stored) by more
        than the window, within the limits above and at most `budget` seconds (default
        `max_wait_s`); the seconds waited."""
        await self._listen()
        if time.monotonic() - self._stored_at > self.fresh_s:  # a new burst: it starts small
            self.window = self.floor
            self._timed.clear()
        budget = self.max_wait_s if budget is None else budget
        if budget <= 0 or self.behind(log_end) is None:
            return 0.0
        return await self._wait_while(lambda: self.behind(log_end) is not None, budget)

    async def _wait_while(self, blocked: Callable[[], bool], budget: float) -> float:
        """Wait while `blocked()`, looking again whenever the read model moves (see `_heard`) and at
        least every `fresh_s`, at most `budget` seconds; counted in `waits` and `waited_s`."""
        started = time.monotonic()
        deadline = started + budget
        self.holding += 1
        try:
            while blocked() and (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._moved.wait(), min(left, self.fresh_s))
        finally:
            self.holding -= 1
        waited = time.monotonic() - started
        self.waited_s += waited
        self.waits += 1
        return waited
