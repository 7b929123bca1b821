"""A test that hangs says where: shortly before pytest-timeout fails a test, the stack of every
pending asyncio task is written to the test's captured stderr.

pytest-timeout and faulthandler show only the threads' stacks, and an asyncio test that waits on
something that never comes shows one idle event loop. The coroutines waiting are what matters.
"""

from __future__ import annotations

import asyncio
import gc
import io
import os
import threading
from collections.abc import Iterator

import pytest

_MARGIN_S = 5.0


def _timeout_of(item: pytest.Item) -> float | None:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    if marker is not None and "timeout" in marker.kwargs:
        return float(marker.kwargs["timeout"])
    try:
        value = item.config.getini("timeout")  # registered by pytest-timeout
    except ValueError:
        return None
    return float(value) if value else None


def _pending_tasks() -> list[asyncio.Task[object]]:
    # Read from another thread while the loop sits in select: a diagnostic, not a control path.
    return [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]


def dump_pending_tasks(title: str) -> None:
    out = io.StringIO()
    out.write(f"\n===== {title}: pending asyncio tasks =====\n")
    for task in _pending_tasks():
        out.write(f"--- {task.get_name()} ---\n")
        try:
            task.print_stack(limit=15, file=out)
        except Exception as exc:  # a frame changing under us: show what we have
            out.write(f"(stack unavailable: {exc!r})\n")
    os.write(2, out.getvalue().encode(errors="replace"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    timeout = _timeout_of(item)
    timer: threading.Timer | None = None
    if timeout is not None and timeout > 2 * _MARGIN_S:
        title = f"{item.nodeid} about to time out"
        timer = threading.Timer(timeout - _MARGIN_S, dump_pending_tasks, args=(title,))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
