"""A handler's result as the log stores it: JSON, no larger than one event may be.

The result travels inside the task's `succeeded` event, one NATS message, so it must encode as JSON
and fit the server's `max_payload` (1 MiB by default, 4 MiB for `ordo up`'s own server) with the
event's other fields and headers. A result that does not is a failure of the attempt, at once and
without retry (running the handler again would give the same result): before, a result too large
failed to publish, the attempt sat out its lease and ran again, and the task ended `lease_expired`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ordo.infra.json_depth import MAX_DEPTH, depth, may_nest_deeper

# Room in one message for the rest of a `succeeded` event and its headers.
EVENT_ROOM_BYTES = 16 * 1024

_encoder = msgspec.json.Encoder()


class UnstorableResult(ValueError):
    """The result cannot be stored; `kind` is the error kind recorded on the task."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def stored_result(value: Any, max_message_bytes: int | None) -> msgspec.Raw:
    """`value` as the JSON the `succeeded` event holds; UnstorableResult if it is not JSON or nests
    deeper than a payload may (`ResultNotSerialisable`), or is too large for a message of
    `max_message_bytes` (`ResultTooLarge`; None: not checked)."""
    try:
        encoded = _encoder.encode(value)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        # ValueError: text with a lone surrogate (UnicodeEncodeError), among others.
        raise UnstorableResult("ResultNotSerialisable", f"{type(exc).__name__}: {exc}"[:500]) from exc
    except RecursionError as exc:
        raise UnstorableResult(
            "ResultNotSerialisable", "the result nests too deep to encode (a container that holds itself?)"
        ) from exc
    if may_nest_deeper(encoded) and _too_deep(encoded):
        raise UnstorableResult(
            "ResultNotSerialisable",
            f"the result nests deeper than {MAX_DEPTH} levels of lists and objects, as a payload may not",
        )
    if max_message_bytes is not None and len(encoded) > max_message_bytes - EVENT_ROOM_BYTES:
        most = max_message_bytes - EVENT_ROOM_BYTES
        raise UnstorableResult(
            "ResultTooLarge",
            f"the result is {len(encoded):,} bytes of JSON; a result is at most {most:,} (the NATS"
            " server's max_payload less room for its event): store large output elsewhere and return"
            " a reference to it",
        )
    return msgspec.Raw(encoded)


def _too_deep(encoded: bytes) -> bool:
    try:
        return depth(msgspec.json.decode(encoded)) > MAX_DEPTH
    except RecursionError:
        return True
