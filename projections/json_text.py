"""JSON text for the read models' `json` columns, from bytes the log holds verbatim.

Raw members of events (payloads, results) were never decoded on their way into the log, and events
appended before the gateway checked them may hold bytes PostgreSQL or the API cannot read back:
invalid UTF-8 is stored with U+FFFD in place of the bad bytes (the log keeps the original), and a
lone surrogate escape (`"\\ud800"`), which the API could not decode again, raises ValueError: the
runner then records the event as one this projection cannot apply. A `\\u0000` escape is fine:
`json` columns keep the text as given.
"""

from __future__ import annotations

import msgspec

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
