"""How every Ordo process runs its event loop: uvloop where it is installed (Linux), else asyncio.

uvloop measured 15-25 % faster on the hot paths here (docs/benchmarks.md); ORDO_UVLOOP=0 turns it off.
The gateway's uvicorn picks uvloop by itself (its `loop="auto"`).
"""

from __future__ import annotations

import asyncio
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


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the fastest loop available."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
