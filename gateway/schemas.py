"""Request bodies, validated by msgspec: unknown fields, wrong types and bad values are rejected whole."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

import msgspec

from domain.priority import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY

Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]{1,64}$")]
TaskType = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]
Priority = Annotated[int, msgspec.Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class SubmitTaskRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    type: TaskType
    payload: msgspec.Raw = msgspec.Raw(b"null")
    queue: Name = "default"
    priority: Priority = DEFAULT_PRIORITY
    run_at: AwareDatetime | None = None
    delay: Annotated[float, msgspec.Meta(ge=0, le=366 * 86400)] | None = None
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)] | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=20)] = []

    def body_hash(self) -> str:
        """A hash of what the task will be, for idempotency-key conflict checks."""
        return hashlib.sha256(msgspec.json.encode(self)).hexdigest()


_decoder = msgspec.json.Decoder(SubmitTaskRequest)


class InvalidBody(ValueError):
    """The body is not valid JSON or does not match the schema."""


def decode_submit(body: bytes) -> SubmitTaskRequest:
    try:
        req = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidBody(str(exc)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidBody(f"malformed JSON: {exc}") from exc
    if req.run_at is not None and req.delay is not None:
        raise InvalidBody("give run_at or delay, not both")
    return req


def submit_schema() -> dict[str, Any]:
    """The OpenAPI request-body schema of a task submission."""
    # msgspec cannot describe Raw: the documented twin types `payload` as any JSON value.
    fields: list[tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(SubmitTaskRequest):
        if f.name == "payload":
            fields.append((f.name, Any, None))
        elif f.required:
            fields.append((f.name, f.type, msgspec.NODEFAULT))
        elif f.default is msgspec.NODEFAULT:
            fields.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, f.type, f.default))
    doc = msgspec.defstruct("SubmitTaskRequest", fields, forbid_unknown_fields=True, kw_only=True)
    (_,), components = msgspec.json.schema_components([doc])
    return {"schema": components["SubmitTaskRequest"]}
