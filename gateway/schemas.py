"""Request bodies, validated by msgspec: unknown fields, wrong types and bad values are rejected whole.

Beyond the schema (gateway/json_bounds.py): a payload must decode and nest at most 64 levels deep,
and no other string may hold NUL. A payload may hold a `\u0000` escape: it is stored and read back.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

import msgspec

from ordo.domain.priority import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY
from ordo.gateway.json_bounds import (
    MAX_DEPTH,
    UnsafeJson,
    check_instants,
    check_text,
    decoded,
    why_undecodable,
)

# `\Z`, not `$`: msgspec matches with Python's `re`, where `$` also matches before a final line
# break ("default\n" would pass). The OpenAPI document says `$` (`documented`): there it is the end.
Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]{1,64}\Z")]
TaskType = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+\Z")]
Priority = Annotated[int, msgspec.Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


MAX_DELAY_S = 36_525 * 86_400  # 100 years


class SubmitTaskRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    type: TaskType
    payload: msgspec.Raw = msgspec.Raw(b"null")
    queue: Name = "default"
    priority: Priority = DEFAULT_PRIORITY
    run_at: AwareDatetime | None = None
    # Any horizon (timers never age out, infra/nats_conn.py): up to a century ahead.
    delay: Annotated[float, msgspec.Meta(ge=0, le=MAX_DELAY_S)] | None = None
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)] | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=20)] = []

    def __post_init__(self) -> None:
        check_instants(run_at=self.run_at)

    def body_hash(self) -> str:
        """A hash of what the task will be, for idempotency-key conflict checks.

        The payload is hashed in a canonical form (keys sorted, no whitespace), so the same JSON
        sent again with other spacing or key order is the same task; a payload already in that form
        hashes as it did before the canonical form was introduced."""
        canonical = msgspec.Raw(msgspec.json.encode(decoded(self.payload), order="sorted"))
        same = msgspec.structs.replace(self, payload=canonical)
        return hashlib.sha256(msgspec.json.encode(same)).hexdigest()


_decoder = msgspec.json.Decoder(SubmitTaskRequest)


class InvalidBody(ValueError):
    """The body is not valid JSON or does not match the schema."""


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """One body through a decoder, every failure an InvalidBody (never a 500 or a reset)."""
    try:
        value = decoder.decode(body)
        check_text(value)
    except msgspec.ValidationError as exc:
        raise InvalidBody(str(exc)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidBody(why_undecodable(body, exc)) from exc
    except RecursionError as exc:
        raise InvalidBody(f"JSON nests deeper than {MAX_DEPTH} levels") from exc
    except UnsafeJson as exc:
        raise InvalidBody(str(exc)) from exc
    return value


def _payload(raw: msgspec.Raw) -> None:
    try:
        decoded(raw)
    except UnsafeJson as exc:
        raise InvalidBody(str(exc)) from exc


def decode_submit(body: bytes) -> SubmitTaskRequest:
    req: SubmitTaskRequest = _decode(_decoder, body)
    if req.run_at is not None and req.delay is not None:
        raise InvalidBody("give run_at or delay, not both")
    _payload(req.payload)
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
    return {"schema": documented(components["SubmitTaskRequest"])}


def documented(schema: Any) -> Any:
    r"""A msgspec JSON schema with its patterns as JSON Schema reads them (`\Z` is `$` there)."""
    if isinstance(schema, dict):
        return {
            k: v[:-2] + "$" if k == "pattern" and isinstance(v, str) and v.endswith("\\Z") else documented(v)
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [documented(v) for v in schema]
    return schema


class UpdateTaskRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A change to a task that has not started yet; omitted fields stay as they are."""

    payload: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    priority: Priority | None = None
    run_at: AwareDatetime | None = None

    def __post_init__(self) -> None:
        check_instants(run_at=self.run_at)


class _BatchEnvelope(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    tasks: list[msgspec.Raw]
    atomic: bool = False


_update_decoder = msgspec.json.Decoder(UpdateTaskRequest)
_batch_decoder = msgspec.json.Decoder(_BatchEnvelope)


def decode_update(body: bytes) -> UpdateTaskRequest:
    req: UpdateTaskRequest = _decode(_update_decoder, body)
    if req.payload is msgspec.UNSET and req.priority is None and req.run_at is None:
        raise InvalidBody("give at least one of payload, priority, run_at")
    if not isinstance(req.payload, msgspec.UnsetType):
        if bytes(req.payload) == b"null":  # an `updated` event's null payload means "unchanged"
            raise InvalidBody("payload cannot be changed to null (leave it out to keep the payload)")
        _payload(req.payload)
    return req


def decode_batch_items(body: bytes) -> tuple[list[msgspec.Raw], bool]:
    """The raw items of `{"tasks": [...], "atomic": false}` (each is decoded on its own to report
    errors by index) and whether the batch is to be stored all or nothing."""
    envelope: _BatchEnvelope = _decode(_batch_decoder, body)
    return envelope.tasks, envelope.atomic


def batch_schema(max_items: int) -> dict[str, Any]:
    item = submit_schema()["schema"]
    return {
        "schema": {
            "type": "object",
            "required": ["tasks"],
            "additionalProperties": False,
            "properties": {
                "tasks": {"type": "array", "minItems": 1, "maxItems": max_items, "items": item},
                "atomic": {
                    "type": "boolean",
                    "default": False,
                    "description": "Store every task or none (at most 1,000 events: a delayed task is"
                    " two). Without it each task is stored by itself.",
                },
            },
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
