"""Browser sessions: an HttpOnly cookie naming an API key, signed with a secret kept in PostgreSQL.

The cookie holds `<key id>.<expiry>.<HMAC-SHA256>`; it never holds the key. Because the secret lives
in PostgreSQL, a cookie stays valid across gateway restarts and on every gateway. Each request still
looks the key up, so revoking the key ends its sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import time

COOKIE = "ordo_session"


def sign(secret: bytes, key_id: str, ttl_s: float, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + ttl_s)
    payload = f"{key_id}.{expires}"
    mac = hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{mac}"


def verify(secret: bytes, cookie: str, now: float | None = None) -> str | None:
    """The key id of a valid, unexpired cookie; None otherwise."""
    if len(cookie) > 300:
        return None
    parts = cookie.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    key_id, expires, mac = parts
    expected = hmac.new(secret, f"{key_id}.{expires}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, expected):
        return None
    if int(expires) < (now if now is not None else time.time()):
        return None
    return key_id
