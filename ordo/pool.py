"""`ordo up`'s local worker pool: N worker processes, scalable and killable at run time.

Each worker process runs under a supervisor of its own (restarted if it dies), so the pool can
grow and shrink one process at a time: scaling down stops the newest workers with SIGTERM (a
graceful shutdown: running tasks finish within the grace period, the rest are handed back).
The pool answers requests on `ordo.local.ctl` (the gateway's `POST /v1/workers:scale` and
`POST /v1/workers/{id}:kill`): `{"op": "scale", "count": N}` and `{"op": "kill", "pid": P}`.
A kill is SIGKILL, for the resilience demo; only a pid of this pool's own workers is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ordo.infra import subjects as sj
from ordo.supervisor import SHUTDOWN_GRACE_S, ChildSpec, Supervisor

MAX_WORKERS = 32


class WorkerPool:
    """Worker processes numbered 1..count; `spec_for(n)` builds the n-th one's command line."""

    def __init__(
        self,
        spec_for: Callable[[int], ChildSpec],
        logger: logging.Logger,
        *,
        pid_dir: Path,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
    ) -> None:
        self._spec_for = spec_for
        # A stopping worker lets its handlers finish, then hands back the rest: it gets that long.
        self._grace_s = shutdown_grace_s
        self._log = logger
        self._pid_dir = pid_dir
        self._slots: list[tuple[Supervisor, asyncio.Task[None]]] = []
        self._lock = asyncio.Lock()
        self._stopping: set[asyncio.Task[None]] = set()
        # The number in each slot's name (`worker-<n>`, its pid file), and those of workers still
        # stopping: a new slot takes a number neither holds, so it never takes a stopping worker's
        # pid file for a leftover of a killed run (and SIGKILLs it).
        self._numbers: list[int] = []
        self._numbers_stopping: set[int] = set()
        self._sub: Subscription | None = None

    @property
    def count(self) -> int:
        return len(self._slots)

    @property
    def pids(self) -> list[int]:
        return [pid for sup, _ in self._slots for pid in sup.pids.values()]

    async def serve(self, nc: NATS) -> None:
        """Answer scale and kill requests on `ordo.local.ctl`."""
        self._sub = await nc.subscribe(sj.LOCAL_CONTROL, cb=self._on_request)

    async def scale(self, count: int, *, wait: bool = True) -> int:
        """Start or stop workers until `count` run. Stopping ones finish their running tasks first
        (up to their grace); `wait=False` returns once they are told (a control request is answered
        at once: the grace is longer than its caller's timeout), `shutdown` waits for them."""
        if not 0 <= count <= MAX_WORKERS:
            raise ValueError(f"worker count must be within 0..{MAX_WORKERS}")
        async with self._lock:
            before = len(self._slots)
            while len(self._slots) < count:
                taken = {*self._numbers, *self._numbers_stopping}
                number = next(n for n in itertools.count(1) if n not in taken)
                spec = self._spec_for(number)
                sup = Supervisor([spec], self._log, pid_dir=self._pid_dir, shutdown_grace_s=self._grace_s)
                self._slots.append((sup, asyncio.create_task(sup.run(), name=f"pool-{spec.name}")))
                self._numbers.append(number)
            extra = self._slots[count:]
            del self._slots[count:]
            leaving = self._numbers[count:]
            del self._numbers[count:]
            self._numbers_stopping.update(leaving)
        if extra:
            self._log.info("scaling down: stopping %d worker(s)", len(extra))
            stopping = asyncio.create_task(self._stop(extra, leaving))
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
            if wait:
                await stopping
        elif len(self._slots) != before:
            self._log.info("worker pool at %d", len(self._slots))
        return len(self._slots)

    async def _stop(self, slots: list[tuple[Supervisor, asyncio.Task[None]]], numbers: list[int]) -> None:
        try:
            stopped = await asyncio.gather(*(sup.shutdown() for sup, _ in slots), return_exceptions=True)
            for error in (e for e in stopped if isinstance(e, BaseException)):
                self._log.error("stopping a worker failed: %r", error)
            await asyncio.gather(*(task for _, task in slots), return_exceptions=True)
        finally:
            self._numbers_stopping.difference_update(numbers)
        self._log.info("worker pool at %d", len(self._slots))

    def kill(self, pid: int) -> bool:
        """SIGKILL one of the pool's worker processes (its supervisor starts a new one)."""
        if pid not in self.pids:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._log.warning("killed worker pid %d (SIGKILL)", pid)
        return True

    async def shutdown(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
        await self.scale(0)
        if self._stopping:  # those a scale request was still stopping
            await asyncio.gather(*self._stopping, return_exceptions=True)

    async def _on_request(self, msg: Msg) -> None:
        reply: dict[str, Any]
        try:
            request = json.loads(msg.data)
            op = request.get("op")
            if op == "scale":
                reply = {"ok": True, "count": await self.scale(int(request["count"]), wait=False)}
            elif op == "kill":
                pid = int(request["pid"])
                killed = self.kill(pid)
                reply = {"ok": killed, "killed": killed}
                if not killed:
                    reply["error"] = f"pid {pid} is not a worker of this pool"
            else:
                reply = {"ok": False, "error": f"unknown op {op!r}"}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        if msg.reply:
            with contextlib.suppress(nats.errors.Error):
                await msg.respond(json.dumps(reply).encode())
