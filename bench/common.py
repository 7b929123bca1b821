"""Shared benchmark plumbing: embedded servers in a temp folder, Ordo components as processes,
and per-process CPU/RSS accounting. Everything stays on loopback and stops by itself."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.embedded_nats import EmbeddedNats, NatsServerConfig  # noqa: E402
from infra.embedded_postgres import EmbeddedPostgres, PostgresConfig  # noqa: E402

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
def servers(sync_always: bool = False) -> Iterator[Servers]:
    with tempfile.TemporaryDirectory(prefix="ordo-bench-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        nats = EmbeddedNats(NatsServerConfig(data_dir=root / "nats", sync_always=sync_always))
        pg = EmbeddedPostgres(PostgresConfig(data_dir=root / "pg", fsync=True))
        nats.start()
        pg.start()
        try:
            yield Servers(nats, pg, root)
        finally:
            pg.stop()
            nats.stop()


@dataclass
class Components:
    """Ordo components (`python -m infra.cli ...`) started as separate processes."""

    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_")}
        env.update(self.env)
        env.setdefault("ORDO_LOG_LEVEL", "WARNING")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", *args], env=env, cwd=ROOT
        )

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


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line a benchmark reports."""
    result.setdefault("date", time.strftime("%Y-%m-%d"))
    result.setdefault("python", sys.version.split()[0])
    print(json.dumps(result), flush=True)
