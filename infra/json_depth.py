"""How deep JSON nests: one bound for what enters the log from a request (a payload) and from a
worker (a result), so that every reader (PostgreSQL, the gateway's encoder, the UI) can take it."""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How many containers deep a decoded JSON value nests, counted up to just past `limit`
    (iterative: no recursion limit of its own)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        level += 1
        if level > deepest:
            deepest = level
            if deepest > limit:
                return deepest
        stack.extend((child, level) for child in item if isinstance(child, (dict, list)))
    return deepest


def may_nest_deeper(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """False when JSON text cannot nest deeper than `limit`: it has no more opening brackets (those
    in strings only overcount). A cheap first look before `depth`."""
    return data.count(b"[") + data.count(b"{") > limit
