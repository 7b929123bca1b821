"""Task ids: time-ordered random ids, or derived from (tenant, idempotency key)."""

from __future__ import annotations

import os
import time
import uuid

_NAMESPACE = uuid.UUID("6f72646f-0000-4000-8000-000000000001")


def new_task_id() -> str:
    """A UUIDv7-style id (48-bit milliseconds + random bits) as 32 hex characters."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    return f"{value:032x}"


def task_id_for_key(tenant: str, key: str) -> str:
    """The same (tenant, key) always names the same task, across gateways and restarts."""
    return uuid.uuid5(_NAMESPACE, f"{tenant}\x00{key}").hex


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def could_be_task_id(text: str) -> bool:
    """Whether `text` has the form of an Ordo task id (1-64 letters, digits, `_`, `-`): one that does
    not names no task, and may reach neither a subject nor a URL path."""
    return 1 <= len(text) <= 64 and set(text) <= _ID_CHARS
