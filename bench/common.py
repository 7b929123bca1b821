"""Shared benchmark plumbing: embedded servers in a temp folder, Ordo components as processes,
and per-process CPU/RSS accounting. Everything stays on loopback and stops by itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ordo.embedded.nats import EmbeddedNats, NatsServerConfig  # noqa: E402
from ordo.embedded.postgres import EmbeddedPostgres, PostgresConfig  # noqa: E402

_CLK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def proc_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a live process (VmHWM)."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    cpu = (int(parts[11]) + int(parts[12])) / _CLK
    peak = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cpu, peak


@dataclass
class Servers:
    nats: EmbeddedNats
    postgres: EmbeddedPostgres
    tmp: Path

    @property
    def env(self) -> dict[str, str]:
        return {"ORDO_NATS_URL": self.nats.url, "ORDO_DATABASE_URL": self.postgres.url}


@contextlib.contextmanager
def servers(sync_always: bool = False, pg_settings: tuple[tuple[str, str], ...] = ()) -> Iterator[Servers]:
    with tempfile.TemporaryDirectory(prefix="ordo-bench-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        nats = EmbeddedNats(NatsServerConfig(data_dir=root / "nats", sync_always=sync_always))
        pg = EmbeddedPostgres(PostgresConfig(data_dir=root / "pg", fsync=True, settings=pg_settings))
        nats.start()
        pg.start()
        try:
            yield Servers(nats, pg, root)
        finally:
            pg.stop()
            nats.stop()


@dataclass
class Components:
    """Ordo components (`python -m ordo.cli ...`) started as separate processes."""

    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, module: str = "ordo.cli") -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
        env.update(self.env)
        env.setdefault("ORDO_LOG_LEVEL", "WARNING")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=ROOT)

    def start_gateway(self, name: str = "gateway") -> int:
        """Start a gateway on a free loopback port (auth off) and wait until it is ready."""
        from ordo.embedded.processes import free_port

        port = free_port("127.0.0.1")
        self.env = {**self.env, "ORDO_AUTH": "false"}
        self.start(name, "gateway", "--host", "127.0.0.1", "--port", str(port))
        wait_ready(f"http://127.0.0.1:{port}/readyz", self.procs[name])
        return port

    @property
    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def usage(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(FileNotFoundError):
                cpu, rss = proc_usage(proc.pid)
                out[name] = {"cpu_s": round(cpu, 2), "peak_rss_mb": round(rss / 2**20, 1)}
        return out

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Poll `url` until it answers 200 (the gateway's /readyz also needs a running projector)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
                if resp.status == 200:
                    return
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s")


def _read_stat(pid: int) -> tuple[int, float, int] | None:
    """(ppid, CPU seconds incl. reaped children, RSS bytes) from /proc, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    ticks = int(parts[11]) + int(parts[12]) + int(parts[13]) + int(parts[14])
    return int(parts[1]), ticks / _CLK, int(parts[21]) * _PAGE


class ProcSampler:
    """Samples CPU seconds and RSS of named process trees (a process and all its descendants, e.g.
    the postmaster and its backends) from /proc every `every` seconds in a thread. The full /proc
    scan that finds descendants runs only every `rescan` seconds; names in `own_only` (e.g. the
    benchmark's own process, the parent of the servers) count the process alone.

    `cpu_s` is the CPU used between `start()` and `stop()` (including reaped children); `peak_rss_mb`
    the largest sampled sum of the tree's RSS (for PostgreSQL this counts shared buffers once per
    backend that touched them, so it overstates); `hwm_mb` the root process's own peak (VmHWM).
    `series` holds every sample (wall time, CPU seconds so far per name), for `cores_between`."""

    def __init__(
        self, roots: dict[str, int], every: float = 1.0, rescan: float = 5.0, own_only: tuple[str, ...] = ()
    ) -> None:
        self.roots = dict(roots)
        self.every = every
        self.rescan = rescan
        self.own_only = set(own_only)
        self.series: list[tuple[float, dict[str, float]]] = []
        self._members: dict[str, list[int]] = {name: [pid] for name, pid in self.roots.items()}
        self._scanned = 0.0
        self._cpu0: dict[str, float] = {}
        self._cpu: dict[str, float] = {}
        self._rss: dict[str, int] = {}
        self._hwm: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _discover(self) -> None:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (st := _read_stat(int(entry))) is not None:
                children.setdefault(st[0], []).append(int(entry))
        for name, root in self.roots.items():
            members, todo = [], [root]
            while todo:
                pid = todo.pop()
                members.append(pid)
                if name not in self.own_only:
                    todo.extend(children.get(pid, ()))
            self._members[name] = members
        self._scanned = time.monotonic()

    def _sample(self) -> dict[str, tuple[float, int]]:
        if time.monotonic() - self._scanned > self.rescan:
            self._discover()
        out: dict[str, tuple[float, int]] = {}
        for name, members in self._members.items():
            stats = [st for pid in members if (st := _read_stat(pid)) is not None]
            if not stats:
                continue
            out[name] = (sum(st[1] for st in stats), sum(st[2] for st in stats))
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                self._hwm[name] = max(self._hwm.get(name, 0), proc_usage(self.roots[name])[1])
        return out

    def _record(self, sample: dict[str, tuple[float, int]]) -> None:
        for name, (cpu, rss) in sample.items():
            self._cpu[name] = max(self._cpu.get(name, 0.0), cpu)
            self._rss[name] = max(self._rss.get(name, 0), rss)
        self.series.append((time.time(), dict(self._cpu)))

    def cores_between(self, start: float, end: float) -> dict[str, float]:
        """The cores each name used on average from wall time `start` to `end` (the CPU seconds so
        far interpolated between the samples around each instant)."""
        return {
            name: round((self._cpu_at(name, end) - self._cpu_at(name, start)) / (end - start), 2)
            for name in self.roots
            if name in self._cpu
        }

    def _cpu_at(self, name: str, at: float) -> float:
        before = (self.series[0][0], self._cpu0.get(name, 0.0))
        for t, cpu in self.series:
            value = cpu.get(name, before[1])
            if t >= at:
                if t == before[0]:
                    return value
                return before[1] + (value - before[1]) * (at - before[0]) / (t - before[0])
            before = (t, value)
        return before[1]

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._record(self._sample())

    def start(self) -> ProcSampler:
        self._discover()
        first = self._sample()
        self._cpu0 = {name: cpu for name, (cpu, _) in first.items()}
        self._record(first)
        self._thread.start()
        return self

    def stop(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        self._thread.join()
        self._discover()
        self._record(self._sample())
        return {
            name: {
                "cpu_s": round(self._cpu[name] - self._cpu0.get(name, 0.0), 2),
                "peak_rss_mb": round(self._rss[name] / 2**20, 1),
                "hwm_mb": round(self._hwm.get(name, 0) / 2**20, 1),
            }
            for name in self.roots
            if name in self._cpu
        }


def writes(pid: int) -> int:
    """Write system calls the process has made (sockets included), from /proc/<pid>/io."""
    with open(f"/proc/{pid}/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines() if line)
    return int(fields["syscw"])


def server_pids(srv: Servers) -> dict[str, int]:
    out: dict[str, int] = {}
    if srv.nats.pid is not None:
        out["nats-server"] = srv.nats.pid
    if srv.postgres.pid is not None:
        out["postgres"] = srv.postgres.pid
    return out


class CommitClock:
    """When each projector commit became visible: LISTENs on the projector's NOTIFY channel (the
    payload is the last log sequence committed) and stamps each notification with time.time()."""

    def __init__(self) -> None:
        self.commits: list[tuple[int, float]] = []
        self._conn: Any = None

    async def start(self, dsn: str) -> None:
        import asyncpg

        from ordo.projections.runner import NOTIFY_CHANNEL

        self._conn = await asyncpg.connect(dsn)

        def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            self.commits.append((int(payload), time.time()))

        await self._conn.add_listener(NOTIFY_CHANNEL, on_notify)

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    def visible_at(self) -> Callable[[int], float | None]:
        """A function seq -> time of the first commit that covered it (None if none did)."""
        import bisect

        seqs: list[int] = []
        times: list[float] = []
        for seq, at in self.commits:
            if not seqs or seq > seqs[-1]:
                seqs.append(seq)
                times.append(at)

        def lookup(seq: int) -> float | None:
            i = bisect.bisect_left(seqs, seq)
            return times[i] if i < len(seqs) else None

        return lookup


def summary(values: list[float], *ps: float) -> dict[str, float | None]:
    """{"p50": ..., "p99": ..., "max": ...} in the values' unit, rounded to 0.01."""
    if not values:  # JSON has no NaN: say "no value" instead
        return {**{f"p{p:g}": None for p in ps}, "max": None, "n": 0}
    out: dict[str, float | None] = {f"p{p:g}": round(percentile(values, p), 2) for p in ps}
    out["max"] = round(max(values), 2)
    out["n"] = len(values)
    return out


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def sleep_until(deadline: float) -> None:
    """Sleep until time.perf_counter() reaches `deadline`."""
    delay = deadline - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line a benchmark reports."""
    result.setdefault("date", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    result.setdefault("loadavg_end", load_average())
    result.setdefault("python", sys.version.split()[0])
    print(json.dumps(result), flush=True)


async def succeeded_shown(conn: Any, tenant: str, n: int) -> int:
    """How many of `tenant`'s tasks the read model shows succeeded, read cheaply while fewer than `n`.

    The poll reads the `queue_depth` rollup (a few rows, committed with the tasks table in the same
    transaction) and counts the tasks table only once the rollup reaches `n`. A `count(*)` over the
    tasks table on every poll cost PostgreSQL about 0.23 CPU s of W1's 2.3 (pg_stat_statements):
    work of the benchmark's own, charged to Ordo.
    """
    import asyncpg

    try:
        shown = await conn.fetchval(
            "SELECT coalesce(sum(n), 0) FROM queue_depth WHERE tenant=$1 AND status='succeeded'", tenant
        )
        if shown < n:
            return int(shown)
        return int(
            await conn.fetchval("SELECT count(*) FROM tasks WHERE tenant=$1 AND status='succeeded'", tenant)
        )
    except asyncpg.UndefinedTableError:
        return 0  # the projector has not created its tables yet
