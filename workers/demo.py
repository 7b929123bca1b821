"""Demo handlers, registered on the module-level `registry` that `ordo up` and `ordo worker` use."""

from __future__ import annotations

import asyncio
from typing import Any

from ordo.workers.context import TaskContext
from ordo.workers.handlers import Registry

registry = Registry()

# A sleeping task heartbeats at least this often (the runtime extends the lease regardless).
_HEARTBEAT_EVERY_S = 1.0


@registry.task("demo.echo")
async def echo(ctx: TaskContext) -> Any:
    """Return the payload unchanged."""
    return ctx.payload


@registry.task("demo.sleep")
async def sleep(ctx: TaskContext) -> dict[str, float]:
    """Sleep `{"seconds": x}` (or a bare number) seconds, heartbeating; stops early on cancel."""
    seconds = _seconds(ctx.payload)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        try:
            await asyncio.wait_for(ctx.cancelled.wait(), timeout=min(left, _HEARTBEAT_EVERY_S))
        except TimeoutError:
            await ctx.heartbeat()
            continue
        raise asyncio.CancelledError("cancel requested")
    return {"slept": seconds}


@registry.task("demo.fail")
async def fail(ctx: TaskContext) -> None:
    """Always fails (retryably), to show retries and the dead letter; `{"message": m}` is the
    error's message (any text: it is stored and shown as given)."""
    if isinstance(ctx.payload, dict) and isinstance(ctx.payload.get("message"), str):
        raise RuntimeError(ctx.payload["message"])
    raise RuntimeError(f"demo.fail always fails (attempt {ctx.attempt})")


@registry.task("demo.flaky")
async def flaky(ctx: TaskContext) -> dict[str, int]:
    """Fails on attempts 1..n-1 (`{"fail_times": n}`, default 1), succeeds on attempt n+1."""
    fail_times = 1
    if isinstance(ctx.payload, dict):
        fail_times = int(ctx.payload.get("fail_times", 1))
    if ctx.attempt <= fail_times:
        raise RuntimeError(f"demo.flaky failing attempt {ctx.attempt} of {fail_times}")
    return {"attempts": ctx.attempt}


def _seconds(payload: Any) -> float:
    if isinstance(payload, bool):
        raise ValueError("demo.sleep wants a number of seconds")
    if isinstance(payload, int | float):
        return float(payload)
    if isinstance(payload, dict) and isinstance(payload.get("seconds"), int | float):
        return float(payload["seconds"])
    raise ValueError('demo.sleep wants {"seconds": x} or a number')
