"""One codec for the tagged unions on the wire (task, schedule and queue events).

Built once per union: msgspec's encoder and a decoder of the whole union, plus the tag (the event's
snake_case name, also its subject token). Decoding a payload that is not one of the union's members
raises msgspec.DecodeError or msgspec.ValidationError.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, cast

import msgspec

T = TypeVar("T")


class Codec(Generic[T]):
    """Encode any member of a tagged Struct union; decode bytes into the union `T`."""

    def __init__(self, union: Any) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(union)

    def encode(self, value: msgspec.Struct) -> bytes:
        return self._encoder.encode(value)

    def decode(self, data: bytes) -> T:
        return cast(T, self._decoder.decode(data))

    @staticmethod
    def name(value: msgspec.Struct) -> str:
        """The member's tag: the event's snake_case name."""
        return str(type(value).__struct_config__.tag)
