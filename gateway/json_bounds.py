"""What a JSON request may hold beyond its schema: a nesting bound, text PostgreSQL can store.

msgspec checks the schema but passes a `Raw` member (a payload) through undecoded, so its bytes are
checked here, once, at the door: it must decode (valid UTF-8, no lone surrogate escape) and nest at
most MAX_DEPTH containers deep. A `\\u0000` escape inside a payload is allowed: the read models keep
JSON as `json` text, so it round-trips. Every other string of a request (tags, idempotency keys,
descriptions, cron expressions...) lands in a `text` column, which cannot hold NUL: refused.
Deeper-than-msgspec nesting (about 1000 levels) surfaces as RecursionError; the decoders map it too.
A time must name its offset (the schemas say so) and fall within years 1-9999 once in UTC
(`9999-12-31T23:59:59-05:00` is valid RFC 3339, but no UTC time of Python or of the log).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import msgspec

from ordo.infra.json_depth import MAX_DEPTH as MAX_DEPTH
from ordo.infra.json_depth import depth, may_nest_deeper


class UnsafeJson(ValueError):
    """The JSON is well formed but cannot be accepted (too deep, undecodable text, NUL)."""


# A `\uD800`-`\uDBFF` escape not followed by a `\uDC00`-`\uDFFF` one, or the second without the first.
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def why_undecodable(data: bytes, exc: Exception) -> str:
    """What is wrong with JSON msgspec could not decode: its own words, unless they mislead (it says
    "Input data was truncated" for an empty body and for a lone surrogate escape alike)."""
    if not data.strip():
        return "the body is empty: send a JSON value"
    if _LONE_SURROGATE.search(data):
        return "malformed JSON: a \\uD800-\\uDFFF escape without its pair (a lone surrogate is no character)"
    return f"malformed JSON: {exc}"


def decoded(raw: msgspec.Raw | bytes, where: str = "payload") -> Any:
    """The value `raw` holds, once it is known to be storable; raises UnsafeJson."""
    data = bytes(raw)
    try:
        value = msgspec.json.decode(data)
    except RecursionError as exc:
        raise UnsafeJson(f"{where} nests deeper than {MAX_DEPTH} levels") from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise UnsafeJson(f"{where} is not storable JSON: {why_undecodable(data, exc)}") from exc
    # A value cannot nest deeper than it has opening brackets (brackets in strings only overcount).
    if may_nest_deeper(data) and depth(value) > MAX_DEPTH:
        raise UnsafeJson(f"{where} nests deeper than {MAX_DEPTH} levels")
    return value


def check_text(value: Any, where: str = "body") -> None:
    """Raise UnsafeJson if a string in a decoded request (a Struct, list or str) holds NUL.

    `Raw` members are skipped: they are checked by `decoded`."""
    if isinstance(value, str):
        if "\x00" in value:
            raise UnsafeJson(f"{where} must not contain NUL (\\u0000)")
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            check_text(getattr(value, name), f"{where}.{name}" if where != "body" else name)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_text(item, f"{where}[{index}]")


def check_instants(**times: object) -> None:
    """Each of `times` that is a datetime can be told in UTC (ValueError naming it otherwise): called
    from the request bodies' `__post_init__`, so msgspec reports it as it reports a wrong type."""
    for name, value in times.items():
        if isinstance(value, datetime):
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError(f"{name} is out of range: in UTC it must fall within years 1-9999") from None
