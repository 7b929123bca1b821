"""The OpenAPI document, completed with the errors every route can answer.

Every error is application/problem+json (gateway.problems), so each operation documents its 4xx/5xx
answers with that media type and the problem schema; every /v1 operation can answer 400 (a bad
header or cursor), 401, 403, 422, 429 and 503, and one with a path parameter 404. Declaring this
once keeps the spec honest for every router (schemathesis checks answers against it).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemModel"}
_COMMON = ("400", "401", "403", "422", "429", "503")
_DESCRIPTIONS = {
    "400": "Bad request",
    "401": "Missing, invalid or revoked API key",
    "403": "The key's role is too low",
    "404": "Not found (also another tenant's id)",
    "409": "Conflict",
    "413": "Too large",
    "422": "Invalid request",
    "429": "Rate limited (see Retry-After)",
    "503": "Event log or read model unavailable (see Retry-After)",
}


def _problem_response(code: str, existing: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "description": (existing or {}).get("description") or _DESCRIPTIONS.get(code, "Error"),
        "content": {"application/problem+json": {"schema": _PROBLEM_REF}},
    }


def complete(spec: dict[str, Any]) -> dict[str, Any]:
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            codes = set(responses)
            if path.startswith("/v1/"):
                codes |= set(_COMMON)
                if "{" in path:
                    codes.add("404")
            for code in sorted(codes):
                if code[0] in "45":
                    responses[code] = _problem_response(code, responses.get(code))
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(
        "ProblemModel",
        {
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
            },
        },
    )
    return spec


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(
                get_openapi(
                    title=app.title, version=app.version, description=app.description, routes=app.routes
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
