"""The worker registry's wire format: one heartbeat per worker in the ORDO_WORKERS stream.

Written by the workers (ordo.workers.registry), read by the gateway (ordo.projections.workers): the
struct lives here, below both, so neither imports the other.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from nats.aio.client import Client as NATS

from ordo.infra import subjects as sj
from ordo.infra.event_store import direct_get_batch

DEFAULT_HEARTBEAT_S = 5.0
LOST_AFTER_PERIODS = 3


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """One worker's announcement and figures; the wire format of the registry."""

    worker_id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    handlers: tuple[str, ...]
    concurrency: int
    type_limits: dict[str, int] = {}
    state: str = "online"  # online | draining | stopping | offline
    in_flight: int = 0
    # (tenant, task id, attempt) of each running attempt; the gateway shows a tenant its own only.
    tasks: tuple[tuple[str, str, int], ...] = ()
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    released: int = 0
    poison: int = 0
    # Takes of tickets that waited for the read model, and the seconds waited (decision 60).
    paced_waits: int = 0
    paced_s: float = 0.0
    cpu_pct: float = 0.0
    rss_bytes: int = 0
    started_at: datetime
    sent_at: datetime
    every_s: float = DEFAULT_HEARTBEAT_S


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Heartbeat)


def encode_heartbeat(beat: Heartbeat) -> bytes:
    return _encoder.encode(beat)


def decode_heartbeat(data: bytes) -> Heartbeat:
    return _decoder.decode(data)


_REGISTRY_PAGE = 1000


async def read_heartbeats(nc: NATS, timeout: float = 5.0) -> list[tuple[Heartbeat, datetime]]:
    """(heartbeat, stored_at) of every worker still in the registry stream: one batched direct get
    of the last message of every heartbeat subject, served by any replica."""
    request = {"multi_last": [sj.worker_heartbeats_filter()], "batch": _REGISTRY_PAGE}
    page, _ = await direct_get_batch(nc, sj.WORKERS_STREAM, request, timeout)
    out: list[tuple[Heartbeat, datetime]] = []
    for reply in page:
        try:
            out.append((decode_heartbeat(reply.data), reply.stored_at))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # a foreign message on the subject: not a worker
    return out
