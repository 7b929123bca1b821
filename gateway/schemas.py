"""Request bodies, validated by msgspec: unknown fields, wrong types and bad values are rejected whole."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

import msgspec

from ordo.domain.priority import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY

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


class UpdateTaskRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A change to a task that has not started yet; omitted fields stay as they are."""

    payload: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    priority: Priority | None = None
    run_at: AwareDatetime | None = None


class _BatchEnvelope(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    tasks: list[msgspec.Raw]


_update_decoder = msgspec.json.Decoder(UpdateTaskRequest)
_batch_decoder = msgspec.json.Decoder(_BatchEnvelope)


def decode_update(body: bytes) -> UpdateTaskRequest:
    try:
        req = _update_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidBody(str(exc)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidBody(f"malformed JSON: {exc}") from exc
    if req.payload is msgspec.UNSET and req.priority is None and req.run_at is None:
        raise InvalidBody("give at least one of payload, priority, run_at")
    return req


def decode_batch_items(body: bytes) -> list[msgspec.Raw]:
    """The raw items of `{"tasks": [...]}`; each is decoded on its own to report errors by index."""
    try:
        return _batch_decoder.decode(body).tasks
    except msgspec.ValidationError as exc:
        raise InvalidBody(str(exc)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidBody(f"malformed JSON: {exc}") from exc


def batch_schema(max_items: int) -> dict[str, Any]:
    item = submit_schema()["schema"]
    return {
        "schema": {
            "type": "object",
            "required": ["tasks"],
            "additionalProperties": False,
            "properties": {"tasks": {"type": "array", "minItems": 1, "maxItems": max_items, "items": item}},
        }
    }


def update_schema() -> dict[str, Any]:
    return {
        "schema": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "payload": {},
                "priority": {"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY},
                "run_at": {"type": "string", "format": "date-time"},
            },
        }
    }
