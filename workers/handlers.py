"""The handler contract: how task code is registered and how it steers retries.

A handler is `async def handler(ctx: TaskContext) -> Any`; its return value (JSON-serialisable) is
the task's result. Typed outcomes steer what happens next, like river's JobSnooze/JobCancel:

- `raise Retry(after=5)`: a retryable failure, next attempt in 5 s (default: the backoff);
- `raise Fail("reason")`: fail now, no retry (the task is dead-lettered);
- any other exception: a retryable failure with its type, message and traceback recorded.

On cancellation the handler sees `ctx.cancelled` set; it may stop by returning or by raising
`asyncio.CancelledError`, or it is cancelled after the grace period.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ordo.workers.context import TaskContext

HandlerFn = Callable[["TaskContext"], Awaitable[Any]]
F = TypeVar("F", bound=HandlerFn)


class Retry(Exception):
    """Fail this attempt and retry, after `after` seconds (None: the configured backoff).

    Attempts still count: a task out of attempts fails as usual.
    """

    def __init__(self, after: float | None = None, reason: str = "") -> None:
        if after is not None and after < 0:
            raise ValueError("Retry(after=...) must be >= 0")
        super().__init__(reason or (f"retry after {after}s" if after is not None else "retry"))
        self.after = after
        self.reason = reason


class Fail(Exception):
    """Fail the task now, without retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Registry:
    """Task type name -> handler. One registry is handed to a Worker."""

    def __init__(self) -> None:
        self._handlers: dict[str, HandlerFn] = {}

    def task(self, name: str) -> Callable[[F], F]:
        """Decorator: register the decorated coroutine function as the handler of `name`."""

        def register(fn: F) -> F:
            self.register(name, fn)
            return fn

        return register

    def register(self, name: str, fn: HandlerFn) -> None:
        if not name:
            raise ValueError("a task type name must not be empty")
        if name in self._handlers:
            raise ValueError(f"task type {name!r} is already registered")
        self._handlers[name] = fn

    def get(self, name: str) -> HandlerFn | None:
        return self._handlers.get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)
