"""Who is calling: the principal (tenant and roles) every route and stream is scoped to.

Routes never read the tenant from settings or the request body: they depend on `principal` (or
`require(role)`), so tenancy and authorisation are decided here, in one place.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

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
    # A browser's session (the cookie's), whose logout or expiry ends what it opened (live streams).
    session_id: str | None = None
    session_expires: int | None = None


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
    key = await svc.keys.verify(secret.strip())
    if key is None:
        raise _unauthorised("unknown or revoked API key")
    return _principal_of(svc, key)


def _principal_of(svc: Services, key: keys.ApiKey) -> Principal:
    who = Principal(tenant=key.tenant, role=Role[key.role.upper()], key_id=key.id)
    svc.limits.take(key.id)
    return who


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(scheme: str, host: str | None, port: int | None) -> tuple[str, str, int | None]:
    scheme = scheme.lower()
    return scheme, (host or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def same_origin(request: Request, origin: str) -> bool:
    """Whether an `Origin` value is this gateway's own origin: scheme, host and port all equal.

    The gateway's scheme is the one the client used: uvicorn takes it from X-Forwarded-Proto when
    the peer is a trusted proxy (ORDO_FORWARDED_ALLOW_IPS)."""
    try:
        theirs = urlsplit(origin)
        their_port = theirs.port
    except ValueError:
        return False
    if not theirs.scheme or not theirs.hostname or theirs.path or theirs.query:
        return False
    ours = _origin(request.url.scheme, request.url.hostname, request.url.port)
    return _origin(theirs.scheme, theirs.hostname, their_port) == ours


def check_same_site(request: Request) -> None:
    """403 for a request a browser made on behalf of another site (login or cookie CSRF).

    `Origin` (sent by browsers on every POST) must be this gateway's origin; `Sec-Fetch-Site`,
    when sent, must say same-origin or a user-typed navigation. Clients that send neither
    (curl, SDKs) are not browsers and carry no ambient credentials, so they pass."""
    origin = request.headers.get("origin")
    if origin is not None and not same_origin(request, origin):
        raise Problem(403, "forbidden", "cross-origin request")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Problem(403, "forbidden", "cross-site request")


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
    session = sessions.verify(svc.session_secret, cookie)
    key = None
    if session is not None and not svc.keys.session_ended(session.id):
        key = await svc.keys.by_id(session.key_id)
    if key is None:
        raise _unauthorised("the session expired, ended or its key was revoked; sign in again")
    if request.method not in _SAFE_METHODS:
        # SameSite=Lax already keeps the cookie off cross-site posts; check the origin as well.
        try:
            check_same_site(request)
        except Problem as exc:
            raise Problem(403, "forbidden", "cross-origin request with a session cookie") from exc
    assert session is not None  # a key was found through it
    return replace(_principal_of(svc, key), session_id=session.id, session_expires=session.expires)


def require(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that answers 403 unless the caller has at least `role`."""

    async def check(request: Request) -> Principal:
        who = await principal(request)
        if who.role < role:
            raise Problem(403, "forbidden", f"this action needs the {role.name.lower()} role")
        return who

    return check
