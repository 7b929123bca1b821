"""Logging set-up: human-readable lines by default, one JSON object per line with ORDO_LOG_FORMAT=json.

JSON lines carry the task id, attempt, worker and tenant when the logger was given them (the worker
runtime logs through a LoggerAdapter that adds them) and the current trace id, if any.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from opentelemetry import trace

_FIELDS = ("tenant", "task_id", "attempt", "worker_id", "queue", "schedule_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = f"{ctx.trace_id:032x}"
            out["span_id"] = f"{ctx.span_id:016x}"
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """One line per record, ending with the task or schedule it is about (`task=… attempt=…`), so
    a busy worker's "handler timed out" says which task timed out."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        about = [
            f"{label}={value}"
            for label, name in (("task", "task_id"), ("attempt", "attempt"), ("schedule", "schedule_id"))
            if (value := getattr(record, name, None)) is not None
        ]
        if not about:
            return line
        first, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{first} [{' '.join(about)}]{newline}{rest}"


class OncePerOutage(logging.Filter):
    """One line per outage for a library's own retry loop.

    asyncpg's pool logs "Failed to restore the pool connection floor; retrying" with a traceback at
    every retry while PostgreSQL is away (1 s, 2 s, 4 s ... apart, 60 s at most). The first record of
    an outage passes as one line, its exception in a few words instead of a traceback; the same
    message again within `quiet_s` of the previous one is the same outage and is dropped.
    """

    def __init__(
        self,
        quiet_s: float = 90.0,
        clock: Callable[[], float] = time.monotonic,
        messages: frozenset[str] | None = None,
    ) -> None:
        super().__init__()
        self._quiet_s = quiet_s
        self._clock = clock
        self._messages = messages  # None: every message of the logger; else only these templates
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self._messages is not None and record.msg not in self._messages:
            return True
        key = (record.name, record.msg)
        now = self._clock()
        last, self._last[key] = self._last.get(key), now
        if last is not None and now - last < self._quiet_s:
            return False
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


class Outage:
    """A reconnect loop's log: one warning when a dependency is lost, one when it is back.

    However many attempts fail in between, and whatever they raise, the outage is two lines; the
    attempts themselves go to debug.
    """

    def __init__(
        self, logger: logging.Logger, what: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = logger
        self._what = what
        self._clock = clock
        self._since: float | None = None

    @property
    def down(self) -> bool:
        return self._since is not None

    def lost(self, reason: object) -> None:
        if self._since is None:
            self._since = self._clock()
            self._log.warning("%s unavailable (%s); retrying until it is back", self._what, reason)
        else:
            self._log.debug("%s still unavailable: %s", self._what, reason)

    def back(self) -> None:
        if self._since is not None:
            took, self._since = self._clock() - self._since, None
            self._log.warning("%s back after %.1fs", self._what, took)


# Library loggers whose retry loops log each attempt.
_RETRY_LOGGERS = ("asyncpg.pool",)
# Ordo's own periodic warnings that repeat for as long as NATS or PostgreSQL is away: one line per
# outage (a different message, or the same one after a quiet spell, still passes).
_PERIODIC_WARNINGS: dict[str, frozenset[str]] = {
    "ordo.worker.registry": frozenset({"heartbeat not stored: %s"}),
    "ordo.worker.queue_pause": frozenset(
        {"queue pause state not refreshed: %s", "held tickets of %s not released yet: %s"}
    ),
    "ordo.gateway": frozenset({"event store unavailable: %s", "read model unavailable: %s"}),
}


def setup_logging(level: str | None = None, fmt: str | None = None) -> None:
    level = level or os.environ.get("ORDO_LOG_LEVEL", "INFO")
    fmt = fmt or os.environ.get("ORDO_LOG_FORMAT", "text")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _RETRY_LOGGERS:
        retrying = logging.getLogger(name)
        if not any(isinstance(f, OncePerOutage) for f in retrying.filters):
            retrying.addFilter(OncePerOutage())
    for name, messages in _PERIODIC_WARNINGS.items():
        periodic = logging.getLogger(name)
        if not any(isinstance(f, OncePerOutage) for f in periodic.filters):
            periodic.addFilter(OncePerOutage(messages=messages))
