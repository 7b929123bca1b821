"""Handlers of the example project: run them with `ordo up --app myapp.tasks:registry`."""

from __future__ import annotations

from typing import Any

import domain
import workers
from ordo import Fail, Registry, TaskContext

registry = Registry()


@registry.task("myapp.hello")
async def hello(ctx: TaskContext) -> dict[str, Any]:
    name = (ctx.payload or {}).get("name")
    if not isinstance(name, str) or not name:
        raise Fail("payload.name must be a non-empty string")
    await ctx.progress(50, "greeting")
    return {
        "greeting": domain.greeting(name),
        "workers_origin": workers.ORIGIN,
        "attempt": ctx.attempt,
    }
