"""How every Ordo process runs its event loop: uvloop where it is installed (Linux), else asyncio.

uvloop measured 15-25 % faster on the hot paths here (docs/benchmarks.md); ORDO_UVLOOP=0 turns it off.
The gateway's uvicorn picks uvloop by itself (its `loop="auto"`).

Garbage collection (`tune_gc`, called by every Ordo process before it starts): the objects made while
starting (modules, classes, settings) are frozen out of every collection, and the young generation
collects every 50,000 allocations rather than 700. A gateway holding 1,100 SSE streams (~420,000
tracked objects) spent 100-560 ms per full collection, 5-7 times in a 20 s run, during which no stream
was written (docs/benchmarks.md); Ordo's own objects hold few reference cycles. ORDO_GC=default keeps
Python's settings.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None (asyncio's default) when it is missing or switched off."""
    if os.environ.get("ORDO_UVLOOP", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def tune_gc() -> None:
    """Freeze what exists now out of collections and collect the young generation less often."""
    if os.environ.get("ORDO_GC", "").strip().lower() == "default":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the fastest loop available, with `tune_gc()` applied."""
    tune_gc()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
