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

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

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


class InvalidPayload(ValueError):
    """The task's payload does not fit the payload type its handler was registered with."""


class Registry:
    """Task type name -> handler. One registry is handed to a Worker."""

    def __init__(self) -> None:
        self._handlers: dict[str, HandlerFn] = {}
        self._payload_types: dict[str, type[Any]] = {}

    def task(self, name: str, *, payload: type[Any] | None = None) -> Callable[[F], F]:
        """Decorator: register the decorated coroutine function as the handler of `name`.

        `payload` (e.g. a msgspec Struct) types the payload: the worker converts the task's JSON
        into it before the handler runs (`ctx.payload` is then an instance), and a payload that does
        not fit fails the attempt at once, without retry (kind `InvalidPayload`)."""

        def register(fn: F) -> F:
            self.register(name, fn, payload=payload)
            return fn

        return register

    def register(self, name: str, fn: HandlerFn, *, payload: type[Any] | None = None) -> None:
        if not name:
            raise ValueError("a task type name must not be empty")
        plain = inspect.unwrap(fn)
        if inspect.isfunction(plain) and not inspect.iscoroutinefunction(plain):
            # A plain `def` would run (its side effects too) and then fail on `await`, every attempt.
            raise TypeError(
                f"the handler of {name!r} must be an async function: `async def {plain.__name__}`"
            )
        if name in self._handlers:
            raise ValueError(f"task type {name!r} is already registered")
        self._handlers[name] = fn
        if payload is not None:
            self._payload_types[name] = payload

    def get(self, name: str) -> HandlerFn | None:
        return self._handlers.get(name)

    def payload_type(self, name: str) -> type[Any] | None:
        """The payload type `name` was registered with (None: the decoded JSON as it is)."""
        return self._payload_types.get(name)

    def convert_payload(self, name: str, payload: Any) -> Any:
        """`payload` converted to `name`'s payload type; InvalidPayload when it does not fit."""
        wanted = self._payload_types.get(name)
        if wanted is None:
            return payload
        try:
            return msgspec.convert(payload, wanted)
        except msgspec.ValidationError as exc:
            raise InvalidPayload(f"payload of {name!r} is not a valid {wanted.__name__}: {exc}") from exc

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)


def awaitable(outcome: Any, task_type: str) -> Awaitable[Any]:
    """What a handler's call gave, to be awaited; a handler that gave no awaitable (a sync callable
    that got past `register`) fails the task at once, saying why, instead of a TypeError retried.
    A check, not a wrapper: no second coroutine per task."""
    if not inspect.isawaitable(outcome):
        raise Fail(
            f"the handler of {task_type!r} returned {type(outcome).__name__}, not an awaitable:"
            " handlers are async functions"
        )
    return outcome
