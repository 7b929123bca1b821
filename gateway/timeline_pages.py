"""A timeline's pages, for a task's events and a schedule's alike: `after`, `limit` and `order` in,
`next_after` out.

A timeline grows for as long as its task or schedule lives (a heartbeat every few seconds, a cron
tick every second), so it is read a page at a time. A page is up to `limit` events in the order
asked: oldest first from the beginning, or newest first from the end (`order=desc`: the latest
decisions of a long-lived schedule). `limit` is by default, and at most, `ORDO_TIMELINE_PAGE`; a
larger one is served as that many, and `next_after` leads on, so a client never depends on how a
gateway is set. `after` is where a page goes on from, a log sequence passed in the order read;
`next_after` is the next page's `after`, null at the end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Query

from ordo.gateway.services import Services, services
from ordo.infra.settings import TIMELINE_PAGE_MAX

# (limit, after, newest_first) -> the rows, each with its "seq"
Read = Callable[[int, int | None, bool], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class PageAsked:
    after: int | None
    limit: int
    newest_first: bool

    async def read(self, read: Read, missing: Exception) -> dict[str, Any]:
        """The page (one row more is read to know whether another follows) and its `next_after`;
        `missing` raised when the timeline has no event at all (no such task or schedule)."""
        rows = await read(self.limit + 1, self.after, self.newest_first)
        events = rows[: self.limit]
        if not events and (self.after is None or not await read(1, None, False)):
            raise missing
        return {"events": events, "next_after": events[-1]["seq"] if len(rows) > self.limit else None}


async def page_asked(
    svc: Annotated[Services, Depends(services)],
    after: Annotated[
        int | None,
        Query(ge=0, le=2**62, description="the log sequence the page goes on from, in the order read"),
    ] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=TIMELINE_PAGE_MAX, description="events per page (ORDO_TIMELINE_PAGE)")
    ] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="oldest or newest first")] = "asc",
) -> PageAsked:
    """The page asked for (async: a plain function dependency would run in the thread pool)."""
    most = svc.settings.timeline_page
    return PageAsked(after, most if limit is None else min(limit, most), order == "desc")


TimelinePage = Annotated[PageAsked, Depends(page_asked)]
