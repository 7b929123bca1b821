"""Errors as application/problem+json with a stable `type`, mapped in one place."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ordo.domain import errors as de
from ordo.gateway.json_bounds import check_instants
from ordo.infra.event_store import ConcurrencyError, EventStoreUnavailable
from ordo.infra.pg import ReadModelUnavailable

log = logging.getLogger("ordo.gateway")
TYPE_BASE = "https://ordo.dev/problems/"


class Problem(Exception):
    """An HTTP error raised by a route: status, stable type slug, human detail, extra members."""

    def __init__(
        self, status: int, slug: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = headers
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


_RETRY = {"Retry-After": "1"}


def classify(exc: Exception) -> Problem | None:
    """The problem an expected error stands for; None for an unexpected one (a 500, logged).

    Shared by the HTTP exception handlers and the NATS command API, so both answer alike.
    """
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, de.DomainError):
        return Problem(_DOMAIN_STATUS.get(type(exc), 409), exc.code, str(exc))
    # The causes below name NATS or PostgreSQL internals (subjects, headers, sequences): logged, not
    # answered.
    if isinstance(exc, ConcurrencyError):
        log.info("concurrent modification: %s", exc)
        return Problem(409, "concurrent-modification", "the task changed at the same time; retry")
    if isinstance(exc, EventStoreUnavailable):
        log.warning("event store unavailable: %s", exc)
        return Problem(
            503, "event-log-unavailable", "the event log is unavailable; retry shortly", headers=_RETRY
        )
    if isinstance(exc, ReadModelUnavailable):
        log.warning("read model unavailable: %s", exc)
        return Problem(
            503, "read-model-unavailable", "the read model is unavailable; retry shortly", headers=_RETRY
        )
    return None


def problem_body(p: Problem) -> dict[str, Any]:
    body: dict[str, Any] = {"type": TYPE_BASE + p.slug, "title": p.slug.replace("-", " "), "status": p.status}
    body["detail"] = p.detail
    body.update(p.extra)
    return body


def install(app: FastAPI) -> None:
    async def _expected(_: Request, exc: Exception) -> JSONResponse:
        p = classify(exc)
        if p is None:  # not one of ours: let Starlette log it and answer 500
            raise exc
        return problem_response(p.status, p.slug, p.detail, headers=p.headers, **p.extra)

    for cls in (Problem, de.DomainError, ConcurrencyError, EventStoreUnavailable, ReadModelUnavailable):
        app.add_exception_handler(cls, _expected)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return problem_response(422, "invalid-request", "the request is invalid", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware calls this, then re-raises so the server logs it too.
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(500, "internal-error", "an unexpected error occurred; it was logged")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _UNPARSED_BODY:
            # FastAPI's own JSON parsing (the routes with a declared body model): a body it could not
            # read (malformed, or nested past the parser's depth) is a 422 like every other route's.
            detail = "the body is not JSON this endpoint can read (malformed, or nested too deep)"
            return problem_response(422, "invalid-request", detail)
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(exc.status_code, slug, str(exc.detail))


_UNPARSED_BODY = "There was an error parsing the body"  # fastapi.routing's detail


def aware(value: datetime | None, name: str) -> datetime | None:
    """`value` when it names its time zone and can be told in UTC (or is None); a 422 otherwise: a
    time without an offset could be any of 24 instants, and `9999-12-31T23:59:59-05:00` is no UTC
    time Python or PostgreSQL's driver can hold."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise Problem(422, "invalid-request", f"{name} needs a time zone (e.g. 2026-01-01T00:00:00Z)")
    try:
        check_instants(**{name: value})
    except ValueError as exc:
        raise Problem(422, "invalid-request", str(exc)) from None
    return value


def known(what: str, names: Iterable[str], choices: Iterable[str]) -> None:
    """A 422 naming every one of `names` that is not among `choices` (a filter's values: a misspelt
    one would select nothing and say nothing)."""
    allowed = list(choices)
    unknown = sorted(set(names).difference(allowed))
    if unknown:
        detail = f"unknown {what} {', '.join(unknown)}; one of {', '.join(allowed)}"
        raise Problem(422, "invalid-request", detail)
