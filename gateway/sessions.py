"""Browser sessions: an HttpOnly cookie naming an API key, signed with a secret kept in PostgreSQL.

The cookie holds `<key id>.<session id>.<expiry>.<HMAC-SHA256>`; it never holds the key. The secret
is read once when a gateway starts (it lives in PostgreSQL, so a cookie stays valid across restarts
and on every gateway) and kept in memory: checking a cookie needs no database. The key it names is
looked up in the gateway's key table (gateway.key_cache), so revoking the key ends its sessions; a
logout records the session id as ended (server-side), so a copy of the cookie stops working too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

COOKIE = "ordo_session"


@dataclass(frozen=True)
class Session:
    key_id: str
    id: str
    expires: int  # unix seconds


def sign(secret: bytes, key_id: str, ttl_s: float, now: float | None = None) -> str:
    """A new session of `key_id` (a fresh session id) as a cookie value."""
    expires = int((now if now is not None else time.time()) + ttl_s)
    payload = f"{key_id}.{secrets.token_hex(12)}.{expires}"
    mac = hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{mac}"


def verify(secret: bytes, cookie: str, now: float | None = None) -> Session | None:
    """The session of a valid, unexpired cookie; None otherwise."""
    # A cookie this gateway signed is ASCII; `compare_digest` raises on other text, and `isdigit`
    # takes "²" for a digit where `int` does not.
    if len(cookie) > 300 or not cookie.isascii():
        return None
    parts = cookie.split(".")
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    key_id, session_id, expires, mac = parts
    expected = hmac.new(secret, f"{key_id}.{session_id}.{expires}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, expected):
        return None
    if int(expires) < (now if now is not None else time.time()):
        return None
    return Session(key_id, session_id, int(expires))
