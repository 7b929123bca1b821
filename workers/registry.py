"""The worker registry, worker side: announce, heartbeat, answer control requests.

Each worker publishes a heartbeat to `ordo.worker.hb.<worker_id>` in the ORDO_WORKERS stream, which
keeps only the last message per subject. A heartbeat carries the announcement (host, pid, queues,
handlers, concurrency) and the live figures (state, in-flight attempts, counters, CPU, memory), and
its own period, so a reader can tell a lost worker (no heartbeat for 3 periods) from a live one
without a clock shared with the worker beyond the stream's own timestamps. KV per-key TTL is not
used: nats-py 2.16 mishandles its delete markers (notes/engine.md), and "lost" is more useful than
"vanished" anyway. A worker that stops cleanly says so (state "offline").

Control: a request on `ordo.worker.ctl.<worker_id>` with `{"op": "drain"}` makes the worker stop
taking work (it finishes what it runs and stays up, "draining"); the reply says the new state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Protocol

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ordo.infra import subjects as sj
from ordo.infra.heartbeats import DEFAULT_HEARTBEAT_S, Heartbeat, encode_heartbeat
from ordo.workers.stats import ProcessSampler, WorkerStats

log = logging.getLogger("ordo.worker.registry")


class Reporting(Protocol):
    """What the announcer reads from the worker, and the one thing it can ask of it."""

    worker_id: str
    queues: tuple[str, ...]

    @property
    def state(self) -> str: ...

    def snapshot(self) -> dict[str, Any]: ...

    def drain(self) -> None: ...


class Announcer:
    """Heartbeats for one worker until stopped; serves its control subject."""

    def __init__(
        self,
        nc: NATS,
        worker: Reporting,
        stats: WorkerStats,
        every_s: float = DEFAULT_HEARTBEAT_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if every_s <= 0:
            raise ValueError("heartbeat period must be > 0")
        self._nc = nc
        self._worker = worker
        self._stats = stats
        self._every_s = every_s
        self._clock = clock
        self._sampler = ProcessSampler()
        self._started_at = clock()
        self._host = socket.gethostname()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ctl: Subscription | None = None

    async def start(self) -> None:
        self._ctl = await self._nc.subscribe(
            sj.worker_control_subject(self._worker.worker_id), cb=self._on_control
        )
        await self.beat()
        self._task = asyncio.create_task(self._loop(), name=f"heartbeat-{self._worker.worker_id}")

    def poke(self) -> None:
        """Send a heartbeat now (the state changed)."""
        self._wake.set()

    async def stop(self, final_state: str = "offline") -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._ctl is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._ctl.unsubscribe()
        await self.beat(final_state)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._every_s)
            self._wake.clear()
            if not self._stop.is_set():
                await self.beat()

    def heartbeat(self, state: str | None = None) -> Heartbeat:
        cpu, rss = self._sampler.sample()
        snap = self._worker.snapshot()
        stats = asdict(self._stats)
        stats.pop("forwarded", None)
        return Heartbeat(
            worker_id=self._worker.worker_id,
            host=self._host,
            pid=os.getpid(),
            queues=self._worker.queues,
            handlers=tuple(snap["handlers"]),
            concurrency=int(snap["concurrency"]),
            type_limits=dict(snap["type_limits"]),
            state=state or self._worker.state,
            in_flight=len(snap["tasks"]),
            tasks=tuple(snap["tasks"]),
            paced_waits=int(snap["paced_waits"]),
            paced_s=float(snap["paced_s"]),
            cpu_pct=cpu,
            rss_bytes=rss,
            started_at=self._started_at,
            sent_at=self._clock(),
            every_s=self._every_s,
            **stats,
        )

    async def beat(self, state: str | None = None) -> bool:
        """Publish one heartbeat; a failure is logged (the next one may get through)."""
        data = encode_heartbeat(self.heartbeat(state))
        subject = sj.worker_heartbeat_subject(self._worker.worker_id)
        try:
            await self._nc.jetstream().publish(subject, data, timeout=2.0)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("heartbeat not stored: %s", exc)
            return False
        return True

    async def _on_control(self, msg: Msg) -> None:
        try:
            request = json.loads(msg.data or b"{}")
            op = request.get("op") if isinstance(request, dict) else None
        except ValueError:
            op = None
        if op == "drain":
            self._worker.drain()
            reply: dict[str, Any] = {"ok": True, "state": self._worker.state}
        else:
            reply = {"ok": False, "error": f"unknown control request {msg.data[:100]!r}"}
        if msg.reply:
            with contextlib.suppress(nats.errors.Error):
                await msg.respond(json.dumps(reply).encode())
        self.poke()
