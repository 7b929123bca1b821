"""JSON text for the read models' `json` columns, from bytes the log holds verbatim.

Raw members of events (payloads, results) were never decoded on their way into the log, and events
appended before the gateway checked them may hold bytes PostgreSQL or the API cannot read back:
invalid UTF-8 is stored with U+FFFD in place of the bad bytes (the log keeps the original), and a
lone surrogate escape (`"\\ud800"`), which the API could not decode again, raises ValueError: the
runner then records the event as one this projection cannot apply. A `\\u0000` escape is fine:
`json` columns keep the text as given.

A long text goes to a write apart from its row (`inline_or_apart`): one JSON array of such texts,
embedded as they are, which PostgreSQL reads once (`json_array_elements` keeps escapes as written),
the row naming its place there. Inside the rows' JSON a text is a string: escaped by the projector,
unescaped by PostgreSQL's parse of the rows and read again by the cast to `json`, three passes over
every payload and result (docs/benchmarks.md). A short one stays in its row, where that costs less
than the join that finds it apart.
"""

from __future__ import annotations

import msgspec

APART_CHARS = 256  # texts this long or longer go apart from their rows
_SURROGATE_ESCAPES = ("\\ud8", "\\ud9", "\\uda", "\\udb", "\\udc", "\\udd", "\\ude", "\\udf")


def json_text(data: bytes | msgspec.Raw) -> str:
    text = bytes(data).decode("utf-8", errors="replace")
    if "\\u" not in text:  # no escape at all: most texts
        return text
    lowered = text.lower()
    if any(escape in lowered for escape in _SURROGATE_ESCAPES):
        try:
            msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise ValueError(f"JSON that cannot be read back: {exc}") from exc
    return text


def inline_or_apart(data: bytes | msgspec.Raw, apart: list[msgspec.Raw]) -> tuple[str | None, int | None]:
    """`data`'s JSON text for its row, or None and its place (from 1) in `apart`, where it is added
    when it is long."""
    text = json_text(data)
    if len(text) < APART_CHARS:
        return text, None
    apart.append(msgspec.Raw(text.encode()))
    return None, len(apart)
