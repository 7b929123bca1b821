"""Retry backoff: exponential, bounded, with jitter chosen at the edge (a number in [0, 1))."""

from __future__ import annotations


def backoff_seconds(attempt: int, base: float, cap: float, jitter: float, spread: float = 0.2) -> float:
    """Delay before the attempt after `attempt` (1-based): base * 2**(attempt-1), capped, +/- spread."""
    # The exponent is bounded: `2.0 ** 1024` raises, and a task replayed again and again counts
    # attempts past that (a float product that large is inf, not an error, and the cap takes it).
    raw = min(cap, base * (2.0 ** min(max(0, attempt - 1), 1000)))
    return max(0.0, raw * (1.0 + spread * (2.0 * jitter - 1.0)))
