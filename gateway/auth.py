"""Who is calling: the principal (tenant and roles) every route and stream is scoped to.

Routes never read the tenant from settings or the request body: they depend on `principal` (or
`require(role)`), so tenancy and authorisation are decided here, in one place.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from ordo.gateway import keys, sessions
from ordo.gateway.problems import Problem

if TYPE_CHECKING:
    from ordo.gateway.services import Services


class Role(enum.IntEnum):
    """Roles are ordered: each includes the ones below it."""

    VIEWER = 1
    SUBMITTER = 2
    OPERATOR = 3
    ADMIN = 4


@dataclass(frozen=True)
class Principal:
    tenant: str
    role: Role
    key_id: str | None = None


_UNAUTHORISED = {"WWW-Authenticate": 'Bearer realm="ordo"'}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _unauthorised(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers=_UNAUTHORISED)


async def authenticate(svc: Services, authorization: str | None) -> Principal:
    """The principal of an `Authorization: Bearer <key>` value (HTTP and NATS alike); 401 otherwise."""
    if authorization is None:
        raise _unauthorised("an API key is required: Authorization: Bearer <key>")
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise _unauthorised("use Authorization: Bearer <key>")
    key = await keys.verify(svc.pool, secret.strip())
    if key is None:
        raise _unauthorised("unknown or revoked API key")
    return _principal_of(svc, key)


def _principal_of(svc: Services, key: keys.ApiKey) -> Principal:
    who = Principal(tenant=key.tenant, role=Role[key.role.upper()], key_id=key.id)
    svc.limits.take(key.id)
    return who


async def principal(request: Request) -> Principal:
    """The caller: a Bearer API key, or the browser's session cookie. With auth off (tests and
    `ordo up --no-auth` only), the local admin of the configured tenant."""
    svc: Services = request.app.state.services
    if not svc.settings.auth:
        return Principal(tenant=svc.settings.tenant, role=Role.ADMIN)
    authorization = request.headers.get("authorization")
    cookie = request.cookies.get(sessions.COOKIE)
    if authorization is not None or cookie is None:
        return await authenticate(svc, authorization)
    key_id = sessions.verify(svc.session_secret, cookie)
    key = await keys.by_id(svc.pool, key_id) if key_id is not None else None
    if key is None:
        raise _unauthorised("the session expired or its key was revoked; sign in again")
    if request.method not in _SAFE_METHODS:
        # SameSite=Lax already keeps the cookie off cross-site posts; check the origin as well.
        origin = request.headers.get("origin")
        if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
            raise Problem(403, "forbidden", "cross-origin request with a session cookie")
    return _principal_of(svc, key)


def require(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that answers 403 unless the caller has at least `role`."""

    async def check(request: Request) -> Principal:
        who = await principal(request)
        if who.role < role:
            raise Problem(403, "forbidden", f"this action needs the {role.name.lower()} role")
        return who

    return check
