"""Reading a request body with a limit enforced while streaming (Content-Length is not trusted)."""

from __future__ import annotations

from fastapi import Request

from ordo.gateway.problems import Problem


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise Problem(413, "body-too-large", f"request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "body-too-large", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
