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
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

if TYPE_CHECKING:
    from ordo.workers.context import TaskContext

HandlerFn = Callable[["TaskContext"], Awaitable[Any]]
F = TypeVar("F", bound=HandlerFn)


# The longest `Retry(after=...)`: 30 days.
MAX_RETRY_AFTER_S = 30 * 24 * 3600.0
# A task type a handler is registered for: what the API accepts (gateway/schemas.py `TaskType`).
TASK_TYPE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}\Z")


class Retry(Exception):
    """Fail this attempt and retry, after `after` seconds (None: the configured backoff; at most
    30 days). Attempts still count: a task out of attempts fails as usual.
    """

    def __init__(self, after: float | None = None, reason: Any = "") -> None:
        if after is not None and not (isinstance(after, int | float) and 0 <= after <= MAX_RETRY_AFTER_S):
            # A handler's bug another attempt would repeat: the task fails now (a ValueError too).
            raise InvalidRetry(f"Retry(after={after!r}): after must be a number of seconds from 0 to 30 days")
        reason = text_of(reason)
        super().__init__(reason or (f"retry after {after}s" if after is not None else "retry"))
        self.after = after
        self.reason = reason


class Fail(Exception):
    """Fail the task now, without retry. `reason` is the error's message: a text, or anything else
    as its text (an exception as `Type: message`, as in `except ValueError as e: raise Fail(e)`)."""

    def __init__(self, reason: Any) -> None:
        reason = text_of(reason)
        super().__init__(reason)
        self.reason = reason


class InvalidRetry(Fail, ValueError):
    """`Retry(after=...)` out of range: the task fails at once, without retry."""


def text_of(value: Any) -> str:
    """`value` as a message: a text as it is, an exception as `Type: message`, anything else as its
    str(), or its type's name when even that raises."""
    if isinstance(value, str):
        return value
    text = str_of(value)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {text}" if text else type(value).__name__
    return text


def str_of(value: Any) -> str:
    """str(value), or a note naming its type when its __str__ raises."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a __str__ that raises
        return f"<{type(value).__name__} whose str() failed>"


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
        if not isinstance(name, str) or not TASK_TYPE_RE.match(name):
            raise ValueError(
                f"task type {name!r}: 1 to 200 of letters, digits and `_.:-` (what the API accepts;"
                " a task of any other type cannot be submitted)"
            )
        plain = inspect.unwrap(fn)
        if inspect.isasyncgenfunction(plain):
            raise TypeError(
                f"the handler of {name!r} is an async generator (`yield` in `async def"
                f" {plain.__name__}`): a handler returns its result once"
            )
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
