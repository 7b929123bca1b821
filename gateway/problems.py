"""Errors as application/problem+json with a stable `type`, mapped in one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain import errors as de
from infra.event_store import ConcurrencyError, EventStoreUnavailable
from infra.pg import ReadModelUnavailable

log = logging.getLogger("ordo.gateway")
TYPE_BASE = "https://ordo.dev/problems/"


class Problem(Exception):
    """An HTTP error raised by a route: status, stable type slug, human detail, extra members."""

    def __init__(self, status: int, slug: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.extra = extra


def problem_response(
    status: int, slug: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": TYPE_BASE + slug, "title": slug.replace("-", " "), "status": status}
    body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


_DOMAIN_STATUS: dict[type[de.DomainError], int] = {
    de.TaskNotFound: 404,
    de.TaskAlreadyExists: 409,
    de.IdempotencyConflict: 409,
    de.InvalidTransition: 409,
    de.LeaseHeld: 409,
}


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.slug, exc.detail, **exc.extra)

    @app.exception_handler(de.DomainError)
    async def _domain(_: Request, exc: de.DomainError) -> JSONResponse:
        return problem_response(_DOMAIN_STATUS.get(type(exc), 409), exc.code, str(exc))

    @app.exception_handler(ConcurrencyError)
    async def _conflict(_: Request, exc: ConcurrencyError) -> JSONResponse:
        return problem_response(409, "concurrent-modification", str(exc))

    @app.exception_handler(EventStoreUnavailable)
    async def _nats_down(_: Request, exc: EventStoreUnavailable) -> JSONResponse:
        log.warning("event store unavailable: %s", exc)
        return problem_response(503, "event-log-unavailable", str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(ReadModelUnavailable)
    async def _pg_down(_: Request, exc: ReadModelUnavailable) -> JSONResponse:
        log.warning("read model unavailable: %s", exc)
        return problem_response(503, "read-model-unavailable", str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return problem_response(422, "invalid-request", "the request is invalid", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(exc.status_code, slug, str(exc.detail))
