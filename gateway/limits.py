"""Per-API-key limits: a token bucket of requests (429 + Retry-After) and a cap on SSE streams.

Limits are per gateway process: N gateways allow N times the rate. That bounds the damage of one
stolen or runaway key without a shared store on the request path (see docs/decisions.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ordo.gateway.problems import Problem


@dataclass
class _Bucket:
    tokens: float
    at: float


class Limits:
    def __init__(self, rate_per_s: float, burst: int, max_streams: int) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._max_streams = max_streams
        self._buckets: dict[str, _Bucket] = {}
        self._streams: dict[str, int] = {}
        self.open_streams = 0  # every open SSE stream of this gateway (a gauge)

    def take(self, key: str) -> None:
        """Spend one request of `key`'s bucket, or raise 429 saying when to retry."""
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 100_000:  # forget idle keys rather than grow without bound
                self._buckets.clear()
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            wait = math.ceil((1.0 - bucket.tokens) / self._rate)
            raise Problem(
                429, "rate-limited", f"too many requests for this key; retry in {wait}s",
                headers={"Retry-After": str(wait)},
            )  # fmt: skip
        bucket.tokens -= 1.0

    def streams(self, key: str) -> int:
        return self._streams.get(key, 0)

    def acquire_stream(self, key: str | None) -> None:
        """Take one of `key`'s SSE slots (429 when all are taken); `release_stream` when it closes.
        Streams without a key (auth off) are counted but not capped."""
        if key is not None:
            if self._streams.get(key, 0) >= self._max_streams:
                raise Problem(
                    429, "too-many-streams", f"this key already has {self._max_streams} open event streams",
                    headers={"Retry-After": "5"},
                )  # fmt: skip
            self._streams[key] = self._streams.get(key, 0) + 1
        self.open_streams += 1

    def release_stream(self, key: str | None) -> None:
        self.open_streams -= 1
        if key is None:
            return
        left = self._streams.get(key, 0) - 1
        if left > 0:
            self._streams[key] = left
        else:
            self._streams.pop(key, None)
