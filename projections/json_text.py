"""JSON text for the read models' `json` columns, from bytes the log holds verbatim.

Raw members of events (payloads, results) were never decoded on their way into the log, and events
appended before the gateway checked them may hold bytes PostgreSQL or the API cannot read back:
invalid UTF-8 is stored with U+FFFD in place of the bad bytes (the log keeps the original), and a
lone surrogate escape (`"\\ud800"`), which the API could not decode again, raises ValueError: the
runner then records the event as one this projection cannot apply. A `\\u0000` escape is fine:
`json` columns keep the text as given.

A long text goes to a write apart from its row (`taken_apart`): one JSON array of such texts,
embedded as they are, which PostgreSQL reads once (`json_array_elements` keeps escapes as written),
the row naming its place there. Inside the rows' JSON a text is a string: escaped by the projector,
unescaped by PostgreSQL's parse of the rows and read again by the cast to `json`, three passes over
every payload and result (docs/benchmarks.md). A short one stays in its row, where that costs less
than the join that finds it apart.
"""

from __future__ import annotations

from typing import NamedTuple

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


class Apart(NamedTuple):
    """A column of JSON texts with its long ones taken out (`apart`)."""

    texts: list[str | None]  # the column, None where a text went apart
    places: list[int | None]  # each row's place (from 1) in `apart`, None where it stayed
    apart: list[msgspec.Raw]  # the long texts, to embed as they are


def taken_apart(texts: list[str | None]) -> Apart | None:
    """The column `texts` with its long texts taken out; None when none is long (the usual case,
    checked without touching the texts one by one in Python)."""
    if max(map(len, filter(None, texts)), default=0) < APART_CHARS:
        return None
    kept: list[str | None] = []
    places: list[int | None] = []
    apart: list[msgspec.Raw] = []
    for text in texts:
        if text is not None and len(text) >= APART_CHARS:
            apart.append(msgspec.Raw(text.encode()))
            kept.append(None)
            places.append(len(apart))
        else:
            kept.append(text)
            places.append(None)
    return Apart(kept, places, apart)
