"""Sign-in for the browser and key management for admins.

- `POST /auth/session` with a key (JSON `{"key": ...}` or a form field) sets the HttpOnly session
  cookie; the UI never keeps the key. `GET /auth/token?t=...` exchanges a one-time link (printed by
  `ordo up`, or minted with `POST /v1/auth/tokens`) for the cookie and redirects to the UI.
- `/v1/keys`: an admin lists, creates and revokes the keys of its own tenant.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs

import msgspec
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from ordo.gateway import keys, sessions
from ordo.gateway.auth import Principal, Role, check_same_site, require
from ordo.gateway.body import read_limited
from ordo.gateway.problems import Problem
from ordo.gateway.resources import NO_NUL, problems
from ordo.gateway.services import Services, services

router = APIRouter(tags=["auth"])
Svc = Annotated[Services, Depends(services)]
Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
_LOGIN_TOKEN_TTL_S = 600.0


class Whoami(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str
    role: str
    key_id: str | None
    auth: bool


class KeyInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    tenant: str
    role: str
    name: str
    created_at: str
    revoked: bool


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(pattern=r"^(viewer|submitter|operator|admin)$")
    name: str = Field(default="", max_length=200, pattern=NO_NUL)
    # Another tenant's key: an admin of the deployment's own tenant only (a new tenant's first
    # admin key is how a tenant is created).
    tenant: str | None = Field(default=None, pattern=r"^[a-z0-9_-]{1,64}$")


class CreatedKey(KeyInfo):
    key: str


class KeyList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[KeyInfo]
    next_cursor: str | None = None


class LoginToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    expires_in: int


def _info(key: keys.ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "tenant": key.tenant,
        "role": key.role,
        "name": key.name,
        "created_at": key.created_at.isoformat(),
        "revoked": key.revoked_at is not None,
    }


def _set_cookie(response: Response, request: Request, svc: Services, key_id: str) -> None:
    ttl = svc.settings.session_ttl_s
    response.set_cookie(
        sessions.COOKIE,
        sessions.sign(svc.session_secret, key_id, ttl),
        max_age=int(ttl),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


async def _key_from_body(request: Request) -> str:
    """The key of a sign-in: JSON `{"key": ...}`, or a form field from this very origin.

    A browser sends a form or a text/plain body across sites without asking (a "simple" request);
    accepting one would let another site sign the victim's browser in to the attacker's tenant
    (login CSRF). A form must therefore carry this gateway's own Origin, and other types are refused.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        if request.headers.get("origin") is None:
            raise Problem(403, "forbidden", "a form sign-in must come from this origin")
        body = await read_limited(request, 4096)
        values = parse_qs(body.decode(errors="replace")).get("key", [])
        return values[0] if values else ""
    if content_type not in ("", "application/json"):
        raise Problem(415, "unsupported-media-type", 'send application/json: {"key": "<API key>"}')
    body = await read_limited(request, 4096)
    try:
        data = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise Problem(422, "invalid-request", 'expected {"key": "<API key>"}') from exc
    key = data.get("key") if isinstance(data, dict) else None
    if not isinstance(key, str):
        raise Problem(422, "invalid-request", 'expected {"key": "<API key>"}')
    return key


@router.post(
    "/auth/session",
    status_code=204,
    response_class=Response,
    responses=problems(401, 403, 415, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["key"],
                        "properties": {"key": {"type": "string", "maxLength": 512}},
                    }
                }
            },
        }
    },
)
async def sign_in(request: Request, svc: Svc) -> Response:
    """Exchange an API key for an HttpOnly session cookie (the browser never stores the key).
    Refused (403) when a browser sends it from another origin (login CSRF)."""
    check_same_site(request)
    key = await svc.keys.verify(await _key_from_body(request))
    if key is None:
        raise Problem(401, "unauthorized", "unknown or revoked API key")
    response = Response(status_code=204)
    _set_cookie(response, request, svc, key.id)
    return response


@router.get(
    "/auth/token", response_class=RedirectResponse, status_code=303, responses=problems(401, 403, 422)
)
async def token_link(
    request: Request, svc: Svc, t: Annotated[str, Query(min_length=1, max_length=200)]
) -> RedirectResponse:
    """Use a one-time sign-in link: set the session cookie and go to the UI. A link followed from
    another site is refused (it could be someone else's link: login CSRF); paste it instead."""
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise Problem(
            403,
            "forbidden",
            "a sign-in link followed from another site is refused; paste it into the address bar",
        )
    key = await keys.use_login_token(svc.pool, t)
    if key is None:
        if "text/html" in request.headers.get("accept", ""):
            # A browser: the UI says the link was used or expired and offers the key form (not raw JSON).
            return RedirectResponse("/?signin=link", status_code=303)
        raise Problem(401, "unauthorized", "this sign-in link is unknown, used or expired")
    response = RedirectResponse("/", status_code=303)
    _set_cookie(response, request, svc, key.id)
    return response


@router.post("/auth/logout", status_code=204, response_class=Response, responses=problems(403, 503))
async def sign_out(request: Request, svc: Svc) -> Response:
    """End this browser's session on the server (a copy of the cookie stops working too) and
    delete the cookie."""
    cookie = request.cookies.get(sessions.COOKIE)
    session = sessions.verify(svc.session_secret, cookie) if cookie else None
    if session is not None:
        check_same_site(request)  # another site must not sign the user out either
        svc.keys.end_session(session.id)
        await keys.end_session(svc.pool, session.id, datetime.fromtimestamp(session.expires, UTC))
    response = Response(status_code=204)
    response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="lax")
    return response


@router.get("/v1/whoami", response_model=Whoami, responses=problems(401, 429))
async def whoami(svc: Svc, who: Viewer) -> dict[str, Any]:
    return {
        "tenant": who.tenant,
        "role": who.role.name.lower(),
        "key_id": who.key_id,
        "auth": svc.settings.auth,
    }


@router.post("/v1/auth/tokens", status_code=201, response_model=LoginToken, responses=problems(401, 409, 429))
async def mint_login_link(svc: Svc, who: Viewer) -> dict[str, Any]:
    """A one-time, 10-minute sign-in link for the caller's own key (for a browser)."""
    if who.key_id is None:
        raise Problem(409, "auth-disabled", "auth is off: the UI needs no sign-in")
    token = await keys.create_login_token(svc.pool, who.key_id, _LOGIN_TOKEN_TTL_S)
    return {"url": f"/auth/token?t={token}", "expires_in": int(_LOGIN_TOKEN_TTL_S)}


@router.get("/v1/keys", response_model=KeyList, responses=problems(401, 403, 429))
async def list_keys(svc: Svc, who: Admin) -> dict[str, Any]:
    return {"items": [_info(k) for k in await keys.list_keys(svc.pool, who.tenant)], "next_cursor": None}


@router.post("/v1/keys", status_code=201, response_model=CreatedKey, responses=problems(401, 403, 422, 429))
async def create_key(body: NewKey, svc: Svc, who: Admin) -> JSONResponse:
    """A new key of the caller's tenant, or (`tenant`, for an admin of the deployment's own tenant,
    ORDO_TENANT) of another one: a tenant's first admin key creates the tenant. The secret is in
    this answer only; it is stored hashed."""
    tenant = body.tenant or who.tenant
    if tenant != who.tenant and who.tenant != svc.settings.tenant:
        raise Problem(
            403,
            "forbidden",
            f"only an admin of the deployment's own tenant ({svc.settings.tenant!r}) may create"
            " another tenant's keys",
        )
    key, secret = await keys.create_key(svc.pool, tenant, body.role, body.name)
    return JSONResponse({**_info(key), "key": secret}, status_code=201)


@router.delete(
    "/v1/keys/{key_id}", status_code=204, response_class=Response, responses=problems(401, 403, 404)
)
async def revoke_key(key_id: str, svc: Svc, who: Admin) -> Response:
    """Revoke a key of the caller's tenant: it answers 401 and its sessions end, at once on this
    gateway and within ORDO_KEY_CACHE_TTL_S (default 30 s) on the others. Revoking a revoked key
    is a 204 again (its revocation time stays); an unknown key or another tenant's is a 404."""
    if len(key_id) > 64 or not await keys.revoke(svc.pool, who.tenant, key_id):
        raise Problem(404, "not-found", f"no key {key_id[:64]!r}")
    svc.keys.forget(key_id)  # at once here; other gateways within ORDO_KEY_CACHE_TTL_S
    return Response(status_code=204)
