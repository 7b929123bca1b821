"""Reading the event log in sequence order, for the live projector and for a rebuild alike.

An ordered consumer (ephemeral, flow-controlled, no acks) over the whole stream, starting at a given
sequence; messages outside the families read (dispatch copies, families not asked for) are dropped
here. Not one filter per family: a consumer with several filters (nats-server 2.15) delivered the
first 800 events of a 10,200-event log with 2,000 tasks' subjects at 250 per second (4 ms each, the
reader idle), so a rebuild or a restarted projector spent seconds before its first batch; the same
consumer on the whole stream delivers them in 0.07 s.

PostgreSQL holds the cursor, so a reader is thrown away and recreated from the
checkpoint after any failure. The in-memory buffer is bounded, so a rebuild of a long log applies
back-pressure to the server instead of holding the whole log in memory. An event its family cannot
decode is handed out as an `Undecodable` record, in its place: the runner records it as an event the
family's projections could not apply (DESIGN Revision 2) and carries on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy

from ordo.infra import subjects as sj
from ordo.projections.poison import Undecodable
from ordo.projections.registry import Family

# (family name, decoded record with at least `.seq`)
Record = tuple[str, Any]


class PoisonEvent(RuntimeError):
    """An event in the log that no projection can read (kept for callers that still raise it)."""


class LogReader:
    """Decoded log records from `start_seq` on, in stream order, handed out in batches."""

    def __init__(
        self,
        nc: NATS,
        families: Sequence[Family],
        start_seq: int,
        buffer: int = 4000,
        logger: logging.Logger | None = None,
    ) -> None:
        self._nc = nc
        self._families = tuple(families)
        self._start = max(1, start_seq)
        self._queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=buffer)
        self._held: Record | None = None
        self._sub: Subscription | None = None
        self._log = logger or logging.getLogger("ordo.projector")

    async def start(self) -> None:
        families = self._families

        async def on_msg(msg: Msg) -> None:
            if any(f.matches(msg.subject) for f in families):
                await self._queue.put(msg)  # blocks the subscription when full: back-pressure

        self._sub = await self._nc.jetstream().subscribe(
            ">",
            stream=sj.EVENTS_STREAM,
            cb=on_msg,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._start),
        )

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    async def batch(
        self,
        max_size: int,
        upto: int | None = None,
        wait: asyncio.Event | None = None,
        linger_s: float = 0.0,
    ) -> list[Record]:
        """Up to `max_size` records with seq <= `upto` (all if None), waiting for the first one.

        Returns [] when `wait` is set before anything arrives. A record past `upto` is held back
        for the next call. With `linger_s`, an empty buffer is given that long to refill before the
        batch is cut short (a rebuild wants full batches; the live projector wants latency).
        """
        out: list[Record] = []
        first = await self._first(wait)
        if first is None:
            return out
        record = first
        while True:
            if upto is not None and record[1].seq > upto:
                self._held = record
                break
            out.append(record)
            if len(out) >= max_size:
                break
            msg = await self._next(linger_s)
            if msg is None:
                break
            record = self._decode(msg)
        return out

    async def _next(self, linger_s: float) -> Msg | None:
        """The next buffered message, waiting up to `linger_s` for one; None when none came."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        if linger_s <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), linger_s)
        except TimeoutError:
            return None

    def buffered(self) -> int:
        """Messages received and not yet handed out (how far behind the reader's consumer is)."""
        return self._queue.qsize()

    def past(self, seq: int) -> bool:
        """True when the reader holds a record beyond `seq` (everything up to `seq` was handed out)."""
        return self._held is not None and self._held[1].seq > seq

    async def _first(self, wait: asyncio.Event | None) -> Record | None:
        if self._held is not None:
            held, self._held = self._held, None
            return held
        if wait is None:
            return self._decode(await self._queue.get())
        stop = asyncio.ensure_future(wait.wait())
        get = asyncio.ensure_future(self._queue.get())
        done, _ = await asyncio.wait({stop, get}, return_when=asyncio.FIRST_COMPLETED)
        if get not in done:
            get.cancel()
            return None
        stop.cancel()
        return self._decode(get.result())

    def _decode(self, msg: Msg) -> Record:
        meta = msg.metadata
        seq = meta.sequence.stream
        family = next((f for f in self._families if f.matches(msg.subject)), self._families[0])
        try:
            return family.name, family.decode(
                msg.subject, msg.data, dict(msg.headers or {}), seq, meta.timestamp
            )
        except Exception as exc:  # noqa: BLE001 - whatever the bytes are, the record says so
            self._log.error("undecodable event at seq %s on %s: %s", seq, msg.subject, exc)
            error = f"cannot decode: {type(exc).__name__}: {exc}"
            return family.name, Undecodable(seq, msg.subject, error, meta.timestamp)
