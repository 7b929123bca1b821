"""The body of a pause (a queue's or a schedule's): none, or `{"reason": "..."}`; anything else is a 422.

Read with a small size limit (gateway/body.py): a reason of at most `MAX_REASON` characters fits with
room to spare, so a larger body is a 413 before it is decoded.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import Request

from ordo.gateway.body import read_limited
from ordo.gateway.problems import Problem
from ordo.gateway.schedule_schemas import InvalidBody, decode_body

MAX_REASON = 500  # characters of a pause's reason
_PAUSE_BODY_MAX = 8 * 1024  # bytes: a reason's JSON with room to spare; more is a 413


class _PauseBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON)] = ""


async def pause_reason(request: Request) -> str:
    """The reason the request's body gives ('' for an empty body); a 422 problem for any other body."""
    body = await read_limited(request, _PAUSE_BODY_MAX)
    if not body.strip():
        return ""
    try:
        return decode_body(body, _PauseBody).reason
    except InvalidBody as exc:
        raise Problem(422, "invalid-request", str(exc)) from exc
