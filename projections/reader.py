"""Reading the event log in sequence order, for the live projector and for a rebuild alike.

Ordo's own ordered consumer (projections/log_feed.py: ephemeral, flow-controlled, no acks, messages
handed over unparsed) over the whole stream, starting at a given sequence; messages outside the
families read (dispatch copies, families not asked for) are dropped here. Not one filter per family:
a consumer with several filters (nats-server 2.15) delivered the first 800 events of a 10,200-event
log with 2,000 tasks' subjects at 250 per second (4 ms each, the reader idle), so a rebuild or a
restarted projector spent seconds before its first batch; the same consumer on the whole stream
delivers them in 0.07 s.

PostgreSQL holds the cursor, so a reader is thrown away and recreated from the checkpoint after any
failure. Memory is bounded by the server's flow-control window: the feed answers a flow-control
request only when the reader has taken what came before it. An event its family cannot decode is
handed out as an `Undecodable` record, in its place: the runner records it as an event the family's
projections could not apply (DESIGN Revision 2) and carries on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client as NATS

from ordo.infra import subjects as sj
from ordo.infra.raw_client import RawClient
from ordo.projections.log_feed import Entry, LogFeed, own_headers
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
        logger: logging.Logger | None = None,
    ) -> None:
        if not isinstance(nc, RawClient):
            raise TypeError("the log reader needs the client of ordo.infra.nats_conn.connect")
        self._families = tuple(families)
        self._log = logger or logging.getLogger("ordo.projector")
        # No buffer size: memory is bounded by the server's flow-control window (log_feed.py).
        self._feed = LogFeed(nc, sj.EVENTS_STREAM, max(1, start_seq), logger=self._log)
        self._held: Record | None = None

    async def start(self) -> None:
        await self._feed.start()

    @property
    def resets(self) -> int:
        """How often the reader replaced its consumer (a reconnect, a server restarted): the log
        behind it may be another one since (projections/log_identity.py)."""
        return self._feed.resets

    async def close(self) -> None:
        await self._feed.close()

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
        record = await self._first(wait)
        while record is not None:
            if upto is not None and record[1].seq > upto:
                self._held = record
                break
            out.append(record)
            if len(out) >= max_size:
                break
            record = await self._next(linger_s)
        return out

    async def _take(self) -> Record | None:
        """The next record of a family read, from what has arrived; None when nothing is left."""
        while (entry := await self._feed.take()) is not None:
            record = self._decode(entry)
            if record is not None:
                return record
        return None

    async def _next(self, linger_s: float) -> Record | None:
        """The next record, waiting up to `linger_s` for one; None when none came."""
        record = await self._take()
        if record is not None or linger_s <= 0:
            return record
        deadline = time.monotonic() + linger_s
        while (left := deadline - time.monotonic()) > 0:
            if await self._feed.arrival(left) and (record := await self._take()) is not None:
                return record
        return None

    def buffered(self) -> int:
        """Messages received and not yet handed out (how far behind the reader's consumer is)."""
        return len(self._feed)

    def past(self, seq: int) -> bool:
        """True when the reader holds a record beyond `seq` (everything up to `seq` was handed out)."""
        return self._held is not None and self._held[1].seq > seq

    async def _first(self, wait: asyncio.Event | None) -> Record | None:
        if self._held is not None:
            held, self._held = self._held, None
            return held
        while True:
            record = await self._take()
            if record is not None:
                return record
            if wait is not None and wait.is_set():
                return None
            if wait is None:
                await self._feed.arrival(_POLL_S)
                continue
            stop = asyncio.ensure_future(wait.wait())
            arrived = asyncio.ensure_future(self._feed.arrival(_POLL_S))
            done, _ = await asyncio.wait({stop, arrived}, return_when=asyncio.FIRST_COMPLETED)
            for fut in (stop, arrived):
                if fut not in done:
                    fut.cancel()
            if stop in done and not self._feed:
                return None

    def _decode(self, entry: Entry) -> Record | None:
        subject = entry.subject
        family = next((f for f in self._families if f.matches(subject)), None)
        if family is None:
            return None  # a dispatch copy, or a family not read here
        try:
            headers = own_headers(entry.headers) if entry.headers else {}
            return family.name, family.decode(subject, entry.data, headers, entry.seq, entry.stored_at)
        except Exception as exc:  # noqa: BLE001 - whatever the bytes are, the record says so
            self._log.error("undecodable event at seq %s on %s: %s", entry.seq, subject, exc)
            error = f"cannot decode: {type(exc).__name__}: {exc}"
            return family.name, Undecodable(entry.seq, subject, error, entry.stored_at)


# How long one wait for the log lasts before the feed checks its consumer's heartbeats.
_POLL_S = 1.0
