"""API keys, one-time login tokens and the session-signing secret, in PostgreSQL.

A key is `ordo_<id>_<secret>`; only its SHA-256 is stored (the secret is 256 random bits, so a fast
hash is enough; a key chosen by an operator through ORDO_ADMIN_KEY is hashed the same way). A key
carries one tenant and one role. Revocation is a timestamp, never undone (a revoked bootstrap key is
replaced by a new one, not revived). Gateways do not read this table on every request: they keep it
in memory (gateway.key_cache) and reload it every ORDO_KEY_CACHE_TTL_S. A logout is recorded in
`auth_sessions_ended` until the session would have expired anyway.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

DDL = """
CREATE TABLE IF NOT EXISTS api_keys (
    id text PRIMARY KEY,
    tenant text NOT NULL,
    role text NOT NULL,
    name text NOT NULL DEFAULT '',
    hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE TABLE IF NOT EXISTS auth_tokens (
    hash bytea PRIMARY KEY,
    key_id text NOT NULL REFERENCES api_keys (id),
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
CREATE TABLE IF NOT EXISTS auth_secrets (
    name text PRIMARY KEY,
    secret bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_sessions_ended (
    id text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
"""
_LOCK = 7_404_010
ROLES = ("viewer", "submitter", "operator", "admin")


class KeyRevoked(Exception):
    """The key with a fixed secret (ORDO_ADMIN_KEY, admin.key) exists and was revoked: it stays so."""


class KeyTaken(Exception):
    """The fixed secret is already another tenant's key, or one of another role: it stays as it is
    (an ORDO_ADMIN_KEY copied to a second tenant's gateway moved that key there and made it admin)."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: str
    role: str
    name: str
    created_at: datetime
    revoked_at: datetime | None


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def migrate(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        await conn.execute(DDL)


def _key(rec: asyncpg.Record) -> ApiKey:
    return ApiKey(rec["id"], rec["tenant"], rec["role"], rec["name"], rec["created_at"], rec["revoked_at"])


async def create_key(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, role: str, name: str = "", secret: str | None = None
) -> tuple[ApiKey, str]:
    """A new key and its secret (shown once). `secret` fixes it (ORDO_ADMIN_KEY); idempotent then,
    except that a revoked key is never revived (`KeyRevoked`) and a key of another tenant or role
    is never changed (`KeyTaken`)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    key_id = "k" + secrets.token_hex(8)
    plain = secret or f"ordo_{key_id}_{secrets.token_urlsafe(32)}"
    rec = await conn.fetchrow(
        "INSERT INTO api_keys (id, tenant, role, name, hash) VALUES ($1,$2,$3,$4,$5)"
        " ON CONFLICT (hash) DO NOTHING RETURNING *",
        key_id,
        tenant,
        role,
        name,
        digest(plain),
    )
    if rec is None:  # the secret is a key already
        rec = await conn.fetchrow("SELECT * FROM api_keys WHERE hash = $1", digest(plain))
        if rec is None or rec["revoked_at"] is not None:  # keys are never deleted: revoked
            raise KeyRevoked("this key was revoked")
        if (rec["tenant"], rec["role"]) != (tenant, role):
            raise KeyTaken(f"this secret is already key {rec['id']}, of another tenant or role")
    return _key(rec), plain


async def bootstrap_admin(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, name: str, secret: str | None
) -> tuple[ApiKey, str, bool]:
    """The bootstrap admin key with `secret` (a new one when None), and whether a new key had to be
    minted because the stored one was revoked, or is another tenant's or role's (the caller says
    so and keeps the new secret)."""
    try:
        key, plain = await create_key(conn, tenant, "admin", name, secret=secret)
    except (KeyRevoked, KeyTaken):
        key, plain = await create_key(conn, tenant, "admin", name)
        return key, plain, True
    return key, plain, False


async def verify(conn: asyncpg.Connection | asyncpg.Pool, secret: str) -> ApiKey | None:
    """The live key with this secret; None for an unknown or revoked one."""
    if not secret or len(secret) > 512:
        return None
    return await by_digest(conn, digest(secret))


async def by_digest(conn: asyncpg.Connection | asyncpg.Pool, key_hash: bytes) -> ApiKey | None:
    rec = await conn.fetchrow("SELECT * FROM api_keys WHERE hash=$1 AND revoked_at IS NULL", key_hash)
    return None if rec is None else _key(rec)


async def live_keys(conn: asyncpg.Connection | asyncpg.Pool) -> list[tuple[bytes, ApiKey]]:
    """Every key not revoked, with its hash (the gateway's in-memory table)."""
    recs = await conn.fetch("SELECT * FROM api_keys WHERE revoked_at IS NULL")
    return [(bytes(r["hash"]), _key(r)) for r in recs]


async def end_session(conn: asyncpg.Connection | asyncpg.Pool, session_id: str, expires_at: datetime) -> None:
    """Record a logout: the session stays refused until it would have expired anyway."""
    await conn.execute(
        "INSERT INTO auth_sessions_ended (id, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        session_id,
        expires_at,
    )


async def ended_sessions(conn: asyncpg.Connection | asyncpg.Pool) -> set[str]:
    """The ids of sessions logged out before their expiry (expired entries are deleted)."""
    await conn.execute("DELETE FROM auth_sessions_ended WHERE expires_at < now()")
    return {r["id"] for r in await conn.fetch("SELECT id FROM auth_sessions_ended")}


async def by_id(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> ApiKey | None:
    """The live key with this id (sessions name their key by id)."""
    rec = await conn.fetchrow("SELECT * FROM api_keys WHERE id=$1 AND revoked_at IS NULL", key_id)
    return None if rec is None else _key(rec)


async def list_keys(conn: asyncpg.Connection | asyncpg.Pool, tenant: str) -> list[ApiKey]:
    recs = await conn.fetch("SELECT * FROM api_keys WHERE tenant=$1 ORDER BY created_at, id", tenant)
    return [_key(r) for r in recs]


async def revoke(conn: asyncpg.Connection | asyncpg.Pool, tenant: str, key_id: str) -> bool:
    """Revoke the tenant's key; True when the key is the tenant's (revoked now or before: a second
    revoke keeps the first time), False for an unknown key or another tenant's."""
    done = await conn.fetchval(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE tenant=$1 AND id=$2 RETURNING id",
        tenant,
        key_id,
    )
    return done is not None


async def create_login_token(conn: asyncpg.Connection | asyncpg.Pool, key_id: str, ttl_s: float) -> str:
    """A one-time token that `/auth/token?t=` exchanges for a session cookie of `key_id`."""
    token = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO auth_tokens (hash, key_id, expires_at) VALUES ($1, $2, $3)",
        digest(token),
        key_id,
        datetime.now(UTC) + timedelta(seconds=ttl_s),
    )
    return token


async def use_login_token(conn: asyncpg.Connection | asyncpg.Pool, token: str) -> ApiKey | None:
    """Consume a one-time token (a second use, an expired one or a revoked key: None)."""
    if not token or len(token) > 200:
        return None
    key_id = await conn.fetchval(
        "UPDATE auth_tokens SET used_at = now() WHERE hash=$1 AND used_at IS NULL AND expires_at > now()"
        " RETURNING key_id",
        digest(token),
    )
    return None if key_id is None else await by_id(conn, key_id)


async def session_secret(conn: asyncpg.Connection | asyncpg.Pool) -> bytes:
    """The cookie-signing secret shared by every gateway and kept across restarts."""
    await conn.execute(
        "INSERT INTO auth_secrets (name, secret) VALUES ('session', $1) ON CONFLICT DO NOTHING",
        secrets.token_bytes(32),
    )
    value = await conn.fetchval("SELECT secret FROM auth_secrets WHERE name='session'")
    return bytes(value)
