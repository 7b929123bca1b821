"""The one cursor format of the paged lists (tasks, schedules, dead letters), and the timelines' pages
(by log sequence, `page_bounds`).

A cursor is opaque to clients: base64url of `kind|part|part...`, where `kind` names the list and its
order (a task list's sort, `schedules`, `dead_letters`), so a cursor issued for one list or sort is
refused by another. Parts are the keyset of the last row (a time in ISO form, an id, a sequence).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime


def encode_cursor(kind: str, *parts: str) -> str:
    return base64.urlsafe_b64encode("|".join((kind, *parts)).encode()).decode()


def decode_cursor(cursor: str, kind: str, count: int) -> list[str]:
    """The `count` parts of a cursor issued for `kind`; ValueError for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("malformed cursor") from exc
    issued, *parts = text.split("|", count)
    if len(parts) != count or not all(parts) or "\x00" in text:  # PostgreSQL's text holds no NUL
        raise ValueError("malformed cursor")
    if issued != kind:
        raise ValueError(f"the cursor was issued for {issued!r}, not {kind!r}")
    return parts


def cursor_time(text: str) -> datetime:
    """A cursor's time part: an instant PostgreSQL's driver can hold (ValueError otherwise: a cursor
    is the client's to send, and `9999-12-31T23:59:59-05:00` has no UTC form)."""
    try:
        at = datetime.fromisoformat(text)
        if at.tzinfo is None:
            raise ValueError("no time zone")
        at.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError("malformed cursor") from exc
    return at


def cursor_seq(text: str) -> int:
    """A cursor's log sequence part (ValueError unless a bigint's digits)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ValueError("malformed cursor")
    return int(text)


def page_bounds(after: int | None, newest_first: bool, arg: int) -> tuple[str, str]:
    """A timeline page's `AND seq …` condition (`after` as parameter number `arg`, none without it)
    and its `ORDER BY`, for the timelines of tasks (projections/task_events.py) and schedules."""
    where = "" if after is None else f" AND seq {'<' if newest_first else '>'} ${arg}"
    return where, "seq DESC" if newest_first else "seq"
