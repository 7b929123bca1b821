"""HEAD on the API's GET routes: the GET's status and headers, no body (RFC 9110 9.3.2).

FastAPI routes a GET for GET only, so a HEAD (an uptime monitor's, `curl -I`) fell through to the
UI's static files and answered 404. A live stream never ends, so a HEAD of one is a 405.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordo.gateway.problems import problem_response

_API = ("/v1/", "/healthz", "/readyz", "/metrics", "/auth/state")


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "HEAD" or not path.startswith(_API):
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        if path.endswith("/stream"):
            detail = "a live stream has no end to send headers for: GET it"
            response = problem_response(405, "method-not-allowed", detail, headers={"Allow": "GET"})
            await response(scope, receive, headers_only)
            return
        await self.app({**scope, "method": "GET"}, receive, headers_only)
