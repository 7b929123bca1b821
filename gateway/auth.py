"""Who is calling: the principal (tenant and roles) every route and stream is scoped to.

Routes never read the tenant from settings or the request body: they depend on `principal` (or
`require(role)`), so tenancy and authorisation are decided here, in one place.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from gateway.problems import Problem


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


async def principal(request: Request) -> Principal:
    """The caller. Without auth configured, the local admin of the configured tenant."""
    settings = request.app.state.services.settings
    return Principal(tenant=settings.tenant, role=Role.ADMIN)


def require(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that answers 403 unless the caller has at least `role`."""

    async def check(request: Request) -> Principal:
        who = await principal(request)
        if who.role < role:
            raise Problem(403, "forbidden", f"this action needs the {role.name.lower()} role")
        return who

    return check
