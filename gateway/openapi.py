"""The OpenAPI document, completed with the errors every route can answer.

Every error is application/problem+json (gateway.problems), so each operation documents its 4xx/5xx
answers with that media type and the problem schema; every /v1 operation can answer 400 (a bad
header or cursor), 401, 403, 422, 429 and 503, and one with a path parameter 404. Declaring this
once keeps the spec honest for every router (schemathesis checks answers against it).

`/openapi.json`, `/docs` and `/redoc` need a key or a session (any role), like the API they
describe, unless ORDO_PUBLIC_DOCS is on (docs/decisions.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from ordo.gateway.auth import Role, require
from ordo.infra.settings import Settings

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


def install(app: FastAPI, settings: Settings) -> None:
    """The completed document and its pages; `app` must be built with openapi_url, docs_url and
    redoc_url set to None (these routes replace FastAPI's public ones)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(
                get_openapi(
                    title=app.title, version=app.version, description=app.description, routes=app.routes
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    guard = [] if settings.public_docs else [Depends(require(Role.VIEWER))]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")

    @app.get("/redoc", include_in_schema=False, dependencies=guard)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} API")
