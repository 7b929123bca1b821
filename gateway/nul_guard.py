"""No NUL in a request's path or query string: a 422 before any route runs.

PostgreSQL's text holds no NUL (its driver raises on one), and no name, id, filter or cursor of the
API has one, so a `%00` in a path or a query could only fail later, as a 500. The one place a NUL is
kept is a task's payload, in the body as the JSON escape `\\u0000` (gateway/json_bounds.py).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ordo.gateway.problems import problem_response


class RefuseNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope["query_string"]):
            detail = "a request's path and query may not hold NUL (%00)"
            await problem_response(422, "invalid-request", detail)(scope, receive, send)
            return
        await self.app(scope, receive, send)
