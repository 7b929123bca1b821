"""Keep `ordo up`'s embedded servers running.

A server that dies (SIGKILL, OOM kill, a crash) is started again on the same data folder and the
same port, so every Ordo process finds it where it was and reconnects on its own. One line is
logged when a server goes down and one when it is back, however many attempts it took.

Every start and stop runs on one dedicated thread that lives as long as the watch: a server's
parent-death signal follows the *thread* that forked it (see `processes.child_preexec`), so a
server started from a short-lived thread would be killed when that thread ends.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

__all__ = ["Server", "ServerWatch", "WatchConfig"]

T = TypeVar("T")


class Server(Protocol):
    """What the watch needs of an embedded server (EmbeddedNats, EmbeddedPostgres)."""

    @property
    def process(self) -> subprocess.Popen[bytes] | None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class WatchConfig:
    """How often a server's process is checked, and the backoff between failed restarts."""

    check_every_s: float = 0.5
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.check_every_s <= 0 or self.backoff_initial_s <= 0:
            raise ValueError("check_every_s and backoff_initial_s must be > 0")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")


class ServerWatch:
    """Start a set of servers, restart any that dies, stop them all (in reverse order) at the end.

    `start()`, `run()` and `shutdown()` are meant to be called in that order; `shutdown()` is
    idempotent and ends `run()`. Each server is watched on its own, so one that will not start
    again does not keep another from being restarted.
    """

    def __init__(
        self, servers: Mapping[str, Server], logger: logging.Logger, config: WatchConfig | None = None
    ) -> None:
        self._servers = dict(servers)
        self._log = logger
        self._config = config or WatchConfig()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ordo-servers")
        self._stopping = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        self._shutdown: asyncio.Task[None] | None = None
        self.restarts = dict.fromkeys(self._servers, 0)

    async def _on_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def start(self) -> None:
        """Start every server, in order; raise if one cannot start (nothing is running yet to heal)."""
        for server in self._servers.values():
            await self._on_thread(server.start)

    async def run(self) -> None:
        """Watch every server until `shutdown()`."""
        if self._stopping.is_set():
            return
        self._watchers = [
            asyncio.create_task(self._watch(name, server), name=f"watch-{name}")
            for name, server in self._servers.items()
        ]
        await asyncio.gather(*self._watchers)

    async def _watch(self, name: str, server: Server) -> None:
        """Check the server's process each `check_every_s`; restart it when it is gone."""
        while not self._stopping.is_set():
            proc = server.process
            if proc is None or proc.poll() is not None:
                await self._restart(name, server, proc)
                continue
            try:
                await asyncio.wait_for(self._stopping.wait(), self._config.check_every_s)
            except TimeoutError:
                pass

    async def _restart(self, name: str, server: Server, dead: subprocess.Popen[bytes] | None) -> None:
        code = dead.returncode if dead is not None else None
        pid = dead.pid if dead is not None else None
        self._log.warning("embedded %s (pid %s) exited with code %s; restarting it", name, pid, code)
        down_since = time.monotonic()
        backoff = self._config.backoff_initial_s
        attempts = 0
        while not self._stopping.is_set():
            attempts += 1
            try:
                await self._on_thread(server.start)
            except Exception as exc:  # noqa: BLE001 - a failed start is retried, never fatal
                # One line for the outage: later failures only at debug level.
                log = self._log.warning if attempts == 1 else self._log.debug
                # The first line only: the server's log tail stays in its own log file.
                first_line = (str(exc).splitlines() or [type(exc).__name__])[0].removesuffix("; log tail:")
                log("embedded %s did not start (%s); retrying until it does", name, first_line)
                try:
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                except TimeoutError:
                    pass
                backoff = min(2 * backoff, self._config.backoff_max_s)
                continue
            self.restarts[name] += 1
            proc = server.process
            self._log.warning(
                "embedded %s back (pid %s) after %.1fs",
                name,
                proc.pid if proc is not None else None,
                time.monotonic() - down_since,
            )
            return

    async def shutdown(self) -> None:
        """Stop watching (a restart under way finishes first), then stop every server in reverse
        order and end the server thread. Idempotent, also when called concurrently."""
        if self._shutdown is None:
            self._shutdown = asyncio.create_task(self._do_shutdown())
        await asyncio.shield(self._shutdown)

    async def _do_shutdown(self) -> None:
        self._stopping.set()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for name, server in reversed(self._servers.items()):
            try:
                await self._on_thread(server.stop)
            except Exception:  # noqa: BLE001 - stop the others anyway
                self._log.exception("stopping embedded %s failed", name)
        await asyncio.to_thread(self._thread.shutdown)
