"""The committed feed: the task events a projector batch committed, handed to every gateway.

After each commit the live projector publishes the batch's task events on core NATS
(`ordo.committed`), each already encoded as the SSE frame a stream writes, in chunks that each name
the log range they cover: `(after, upto]`. A gateway's SSE hub (gateway/live.py) hands those frames
to its streams without reading them back from PostgreSQL; the read model's one tail query per commit
was most of the time from commit to delivery on a busy machine (docs/benchmarks.md).

Only while someone watches: a gateway whose hub has live streams asks for the feed on
`ordo.committed.want` at once and then every second, and the projector publishes while it was asked
within `WANT_TTL_S`. Without a viewer nothing is encoded, sent or decoded; a hub that gets its
first stream reads the commits before the feed resumes from the read model.

Core NATS delivers at most once: a chunk lost on the way (a reconnect, a slow gateway) shows as a
range that does not start where the hub stands, and the hub reads that range from the read model,
as it did for every commit before. Nothing here is acknowledged or stored; the read model stays the
truth, and a frame here is built by the same function, from the same values, as a frame read back
from `task_events` (`entry_of` equals `task_events.to_entry` of the row the batch wrote).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from ordo.infra.event_store import StoredEvent
from ordo.projections import task_events
from ordo.projections.json_text import json_text
from ordo.projections.reader import Record

SUBJECT = "ordo.committed"
# Gateways with live streams ask for the feed here (core NATS, empty payload), every WANT_EVERY_S.
WANT_SUBJECT = "ordo.committed.want"
WANT_EVERY_S = 1.0
WANT_TTL_S = 5.0  # the projector publishes while a gateway asked within this long
# A chunk's frames stay well under nats-server's default max_payload (1 MiB).
MAX_CHUNK_BYTES = 256 * 1024

_log = logging.getLogger("ordo.projector")
_json = msgspec.json.Encoder()
_decode_json = msgspec.json.Decoder()


class Row(msgspec.Struct, array_like=True, frozen=True):
    """One committed task event: what the hub matches streams on, and its frame."""

    tenant: str
    task_id: str
    queue: str
    type: str
    seq: int
    frame: bytes


class Chunk(msgspec.Struct, array_like=True, frozen=True):
    """Every task event with after < seq <= upto, in sequence order."""

    after: int
    upto: int
    rows: list[Row]


_encode_chunk = msgspec.msgpack.Encoder().encode
decode_chunk = msgspec.msgpack.Decoder(Chunk).decode


def frame(entry: dict[str, Any]) -> bytes:
    """One task event as an SSE frame, `id:` = its log sequence (encoded once for every stream)."""
    return b"id: %d\r\nevent: task_event\r\ndata: %s\r\n\r\n" % (entry["seq"], _json.encode(entry))


def entry_of(e: StoredEvent) -> dict[str, Any]:
    """The event as `task_events.to_entry` reads it back from the row the projection writes."""
    event = _decode_json.decode(json_text(e.raw))
    attempt = getattr(e.event, "attempt", None)
    return task_events.entry(e.seq, e.name, e.stored_at, e.task_id, e.queue, attempt, event, dict(e.headers))


def chunks(after: int, upto: int, events: Sequence[StoredEvent]) -> list[bytes]:
    """The encoded chunks covering (after, upto]: `events` are the batch's task events in order
    (those at or below `after` are left out)."""
    out: list[bytes] = []
    rows: list[Row] = []
    size = 0
    start = after
    for e in events:
        if e.seq <= after:
            continue
        row = Row(e.tenant, e.task_id, e.queue, e.name, e.seq, frame(entry_of(e)))
        rows.append(row)
        size += len(row.frame) + 64
        if size >= MAX_CHUNK_BYTES:
            out.append(_encode_chunk(Chunk(start, e.seq, rows)))
            start, rows, size = e.seq, [], 0
    if rows or start < upto:
        out.append(_encode_chunk(Chunk(start, upto, rows)))
    return out


async def publish(nc: NATS, after: int, upto: int, batch: Sequence[Record]) -> None:
    """Publish the committed batch (log range (after, upto]); best effort: a chunk that does not
    go out is read from the read model by the gateways."""
    if upto <= after:
        return
    events = [r for family, r in batch if family == "task" and isinstance(r, StoredEvent)]
    try:
        for chunk in chunks(after, upto, events):
            await nc.publish(SUBJECT, chunk)
    except (nats.errors.Error, OSError) as exc:
        _log.debug("committed feed not published (gateways read the range back): %s", exc)
