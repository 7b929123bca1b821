"""What a worker reports about itself: counters, and its process's CPU and memory."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field


@dataclass
class WorkerStats:
    """Counters since the worker started. `processed` counts attempts that ended here."""

    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    released: int = 0
    poison: int = 0
    forwarded: int = 0


@dataclass
class ProcessSampler:
    """CPU percent (of one core) between two samples, and the resident memory now."""

    _cpu: float = field(default_factory=lambda: _cpu_seconds())
    _wall: float = field(default_factory=time.monotonic)

    def sample(self) -> tuple[float, int]:
        cpu, wall = _cpu_seconds(), time.monotonic()
        span = wall - self._wall
        pct = 100.0 * (cpu - self._cpu) / span if span > 0 else 0.0
        self._cpu, self._wall = cpu, wall
        return round(pct, 1), rss_bytes()


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def rss_bytes() -> int:
    """Resident set size now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak * 1024
