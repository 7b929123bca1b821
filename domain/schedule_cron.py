"""Cron expressions: validation against what nats-server would read, and fire times with a DST rule.

Accepted: 5 fields (minute hour day-of-month month day-of-week, fires at second 0), 6 fields (second
first, as nats-server's `Nats-Schedule` cron reads them) and the aliases @yearly @annually @monthly
@weekly @daily @midnight @hourly. Every expression is normalised to nats-server's 6-field form.

Rejected, because croniter and nats-server (robfig/cron-derived `server/cron.go`) read them
differently or one of them does not read them at all: `L`, `W`, `#`, `H`, `?`, day-of-week 7,
a bare `N/step` (nats-server reads `N-max/step`), ranges that run backwards, 7-field (year)
expressions, `@every`, and day-of-month and day-of-week BOTH restricted (Vixie cron and croniter
match either day; nats-server matches either only when neither field has a `*`, so `*/2` differs).

DST rule (wall-clock schedules): every matching local wall-clock time fires exactly once.
- A wall time that does not exist (spring forward, e.g. 02:30 in Europe/Berlin on the last Sunday
  of March) fires at the same distance after the jump: 02:30 -> 03:30 local (PEP 495 `fold=0`).
  If that instant is also a regular tick (03:30), it fires once.
- A wall time that occurs twice (fall back, e.g. 01:30 in America/New_York in November) fires at its
  first occurrence only; the repeated hour fires nothing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

ALIASES = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_BOUNDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_FIELD_NAMES = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
_ATOM = re.compile(r"^(?:\*|(?P<a>[0-9a-z]+)(?:-(?P<b>[0-9a-z]+))?)(?:/(?P<step>[0-9]+))?$")
# Searching further than this many iterations for one fire time means the expression is degenerate.
_MAX_SKIPS = 10_000


class InvalidCron(ValueError):
    """A cron expression or time zone Ordo will not accept (with the reason)."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`, or InvalidCron."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise InvalidCron(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidCron(f"unknown time zone {name!r}") from exc


def _value(token: str, index: int) -> int:
    names = _MONTHS if index == 4 else _DAYS if index == 5 else {}
    if token in names:
        return names[token]
    if not token.isdigit():
        raise InvalidCron(f"{_FIELD_NAMES[index]}: {token!r} is not a number")
    return int(token)


def _check_field(text: str, index: int) -> None:
    lo, hi = _BOUNDS[index]
    for part in text.split(","):
        m = _ATOM.match(part)
        if not m:
            raise InvalidCron(f"{_FIELD_NAMES[index]}: {part!r} is not supported (use *, N, N-M, */S, N-M/S)")
        if m["a"] is not None:
            a = _value(m["a"], index)
            b = _value(m["b"], index) if m["b"] is not None else a
            if m["step"] is not None and m["b"] is None:
                raise InvalidCron(f"{_FIELD_NAMES[index]}: {part!r} is ambiguous, write N-{hi}/S")
            if not (lo <= a <= hi and lo <= b <= hi):
                raise InvalidCron(f"{_FIELD_NAMES[index]}: {part!r} is outside {lo}-{hi}")
            if a > b:
                raise InvalidCron(f"{_FIELD_NAMES[index]}: range {part!r} runs backwards")
        if m["step"] is not None and int(m["step"]) < 1:
            raise InvalidCron(f"{_FIELD_NAMES[index]}: step must be >= 1")


def normalize(expression: str) -> str:
    """The 6-field form (second first) of a valid expression, or InvalidCron with the reason."""
    text = " ".join(expression.strip().lower().split())
    if text.startswith("@"):
        if text not in ALIASES:
            raise InvalidCron(f"unknown alias {expression!r} (known: {', '.join(sorted(ALIASES))})")
        return ALIASES[text]
    fields = text.split(" ")
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise InvalidCron(f"a cron expression has 5 or 6 fields, not {len(fields)}")
    for index, field in enumerate(fields):
        _check_field(field, index)
    if fields[3] != "*" and fields[5] != "*":
        raise InvalidCron("restrict day-of-month or day-of-week, not both (cron dialects disagree)")
    normalized = " ".join(fields)
    if not croniter.is_valid(normalized, second_at_beginning=True):
        raise InvalidCron(f"invalid cron expression {expression!r}")
    return normalized


def next_after(expression: str, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first fire time strictly after `after` (aware, UTC), by the module's DST rule.

    `expression` is a normalised 6-field expression. None if there is none within the search bound.
    """
    # Iterate naive wall-clock times; map each to an instant with fold=0 (first occurrence, or
    # shifted forward across a gap) and keep the first one after `after`. In the repeated hour of
    # a fall-back, wall times map to the first occurrence (already past), so they are skipped.
    try:
        wall = after.astimezone(tz).replace(tzinfo=None)
    except OverflowError:  # `after` at the edge of year 9999 in that zone
        return None
    it = croniter(expression, wall, second_at_beginning=True)
    for _ in range(_MAX_SKIPS):
        try:
            candidate: datetime = it.get_next(datetime)
            instant = candidate.replace(tzinfo=tz, fold=0).astimezone(UTC)
        except Exception:  # noqa: BLE001 - croniter's own errors for impossible dates; past year 9999
            return None
        if instant > after:
            return instant
    return None


def ticks_between(
    expression: str, tz: ZoneInfo, after: datetime, until: datetime, limit: int
) -> list[datetime]:
    """Fire times t with after < t <= until, at most `limit` of them (the earliest)."""
    out: list[datetime] = []
    current = after
    while len(out) < limit:
        nxt = next_after(expression, tz, current)
        if nxt is None or nxt > until:
            break
        out.append(nxt)
        current = nxt
    return out
