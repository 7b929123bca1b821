"""Query parameters an endpoint does not take are a 422, not ignored.

FastAPI drops a query parameter no endpoint declares, so a misspelt filter (`before=` for
`dead_before=`, `types=` for `type=`) answered with every row, as if no filter had been asked for:
a bulk action on "what died before X" would then take everything. Every API route checks the names
in its query string against the ones it and its dependencies declare.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from ordo.gateway.auth import principal
from ordo.gateway.problems import Problem

_CHECKED = "/v1/"
_KNOWN = "ordo_query_names"  # the names a route takes, kept on the route once worked out


def _names(dependant: Dependant) -> set[str]:
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _names(sub)
    return names


async def known_query_only(request: Request) -> None:
    """A dependency of every route: under /v1, a 422 naming the query parameters the route does not
    take, once the caller is known (a 401 comes first: the names are not told to strangers). The
    sign-in link, health, readiness and metrics keep ignoring what they do not read (a link
    scanner's or a probe's added parameters)."""
    if not request.url.query or not request.url.path.startswith(_CHECKED):
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known: frozenset[str] | None = getattr(route, _KNOWN, None)
    if known is None:
        known = frozenset(_names(route.dependant))
        setattr(route, _KNOWN, known)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        await principal(request)  # 401 for a caller who may not see this route
        takes = ", ".join(sorted(known)) if known else "none"
        raise Problem(
            422,
            "unknown-parameter",
            f"unknown query parameter {', '.join(unknown)}: this endpoint takes {takes}",
        )
