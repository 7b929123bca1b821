"""What the web UI asks before it signs in: `GET /auth/state` says whether this browser's session
(or an Authorization header) is valid, always with 200, so a signed-out page shows its sign-in form
without a 401 in the browser console."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ordo.gateway.auth import principal
from ordo.gateway.problems import Problem

router = APIRouter(tags=["auth"])


@router.get("/auth/state", include_in_schema=False)  # public by design: it only says yes or no
async def auth_state(request: Request) -> dict[str, Any]:
    """`{"signed_in": bool, "auth": bool}`; never 401 (a wrong or expired session is `signed_in: false`)."""
    auth = bool(request.app.state.services.settings.auth)
    try:
        await principal(request)
    except Problem as exc:
        if exc.status != 401:
            raise
        return {"signed_in": False, "auth": auth}
    return {"signed_in": True, "auth": auth}
