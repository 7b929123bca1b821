"""A small asyncio process supervisor (used by ``ordo up``).

Children are restarted with exponential backoff when they exit unexpectedly.
The supervisor installs no signal handlers: the caller wires SIGINT/SIGTERM
to :meth:`Supervisor.shutdown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ordo.embedded.processes import child_preexec, kill_stale, remove_pidfile, write_pidfile
from ordo.infra.tasks import cancel_and_wait

__all__ = ["ChildSpec", "Supervisor"]

SHUTDOWN_GRACE_S = 10.0  # how long children have between SIGTERM and SIGKILL, unless told otherwise
_HEALTHY_RUN = 30.0  # a child that ran this long gets its backoff reset


@dataclass(frozen=True)
class ChildSpec:
    """A supervised program: ``env`` is overlaid on the supervisor's environment."""

    name: str
    argv: list[str]
    env: dict[str, str]


class Supervisor:
    """Start, watch and restart a set of child processes.

    Children inherit stdout/stderr (their logs appear in the terminal), run in
    their own session (a terminal Ctrl-C reaches only the supervisor) and get
    SIGTERM if the supervisor dies (parent-death signal).  Each child's pid is
    recorded in ``<pid_dir>/<name>.pid``; leftovers from a previous, killed
    supervisor are terminated when :meth:`run` starts.
    """

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        logger: logging.Logger,
        restart_backoff_initial: float = 0.5,
        restart_backoff_max: float = 10.0,
        *,
        pid_dir: Path,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate child names: {names}")
        self.specs = list(specs)
        self.logger = logger
        self.backoff_initial = restart_backoff_initial
        self.backoff_max = restart_backoff_max
        self.pid_dir = pid_dir
        self.shutdown_grace_s = shutdown_grace_s
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._restarts: dict[str, int] = {s.name: 0 for s in specs}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._done: asyncio.Event | None = None
        self._shutdown_task: asyncio.Task[None] | None = None

    @property
    def pids(self) -> dict[str, int]:
        """Pids of the currently running children, by name."""
        return {name: p.pid for name, p in self._procs.items() if p.returncode is None}

    @property
    def stopping(self) -> bool:
        """True once :meth:`shutdown` has been requested."""
        return self._stopping

    def restart_count(self, name: str) -> int:
        """How many times child ``name`` has been restarted."""
        return self._restarts[name]

    def _pidfile(self, name: str) -> Path:
        return self.pid_dir / f"{name}.pid"

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._stop_event is None or self._done is None:
            self._stop_event, self._done = asyncio.Event(), asyncio.Event()
        return self._stop_event, self._done

    async def run(self) -> None:
        """Start all children and supervise them; return once :meth:`shutdown` completed."""
        _, done = self._events()
        if self._stopping:
            await done.wait()
            return
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            if await asyncio.to_thread(kill_stale, self._pidfile(spec.name)):
                self.logger.warning("killed stale %s from a previous run", spec.name)
        self._tasks = [
            asyncio.create_task(self._supervise(spec), name=f"supervise-{spec.name}") for spec in self.specs
        ]
        await done.wait()

    async def _spawn(self, spec: ChildSpec) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *spec.argv,
            env={**os.environ, **spec.env},
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=child_preexec(signal.SIGTERM),
            start_new_session=True,
        )

    async def _supervise(self, spec: ChildSpec) -> None:
        stop_event, _ = self._events()
        backoff = self.backoff_initial
        while not self._stopping:
            started = time.monotonic()
            try:
                proc = await self._spawn(spec)
            except OSError as exc:
                self.logger.error("cannot start %s: %s", spec.name, exc)
                rc: int | str = "spawn-failed"
            else:
                self._procs[spec.name] = proc
                write_pidfile(self._pidfile(spec.name), proc.pid, spec.argv[0])
                self.logger.info("started %s (pid %d)", spec.name, proc.pid)
                if self.stopping:  # shutdown began while we were spawning
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
                rc = await proc.wait()
                remove_pidfile(self._pidfile(spec.name))
            if self.stopping:
                break
            if time.monotonic() - started >= _HEALTHY_RUN:
                backoff = self.backoff_initial
            self.logger.warning(
                "child %s exited with code %s; restarting in %.1fs",
                spec.name,
                rc,
                backoff,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), timeout=backoff)
            backoff = min(backoff * 2, self.backoff_max)
            if not self.stopping:
                self._restarts[spec.name] += 1

    def _signal_all(self, sig: int) -> None:
        for proc in self._procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def shutdown(self) -> None:
        """SIGTERM all children, SIGKILL those alive after `shutdown_grace_s`, remove pid files.

        Idempotent and safe to call concurrently; :meth:`run` returns once done.
        """
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.create_task(self._do_shutdown())
        await asyncio.shield(self._shutdown_task)

    async def _do_shutdown(self) -> None:
        stop_event, done = self._events()
        self._stopping = True
        stop_event.set()
        self._signal_all(signal.SIGTERM)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self.shutdown_grace_s)
            if pending:
                self.logger.warning("children still alive after %.0fs: SIGKILL", self.shutdown_grace_s)
                self._signal_all(signal.SIGKILL)
                await asyncio.wait(pending, timeout=5.0)
            await cancel_and_wait(*self._tasks)
        for spec in self.specs:
            remove_pidfile(self._pidfile(spec.name))
        self._procs.clear()
        done.set()
