"""Start-up of the task list: its first page is asked for without waiting for the route table
(`/openapi.json`), and on a later visit (auth off, remembered by the page) without waiting for
`/auth/state` either; the list is asked once at start-up, the route table and the live stream come
after it. Real Chromium against the real system (auth off)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tests.conftest import System
from tests.test_ui import Page, browser, submit, ui

__all__ = ["browser", "ui"]
FIRST_PAGE = "/v1/tasks?limit=50"


def _record(page: Any) -> list[tuple[str, str]]:
    """("request" | "finished", path?query) in the order the browser reports them."""
    seen: list[tuple[str, str]] = []

    def path(url: str) -> str:
        u = urlsplit(url)
        return f"{u.path}?{u.query}" if u.query else u.path

    page.on("request", lambda r: seen.append(("request", path(r.url))))
    page.on("requestfinished", lambda r: seen.append(("finished", path(r.url))))
    return seen


async def _open_list(ui: Page, task_id: str) -> None:
    await ui.open("/tasks")
    await ui.page.locator(f'#tasks-table tr[data-id="{task_id}"]').wait_for()
    await ui.page.locator('#conn[data-state="live"]').wait_for()  # the route table is in by then


async def test_the_list_does_not_wait_for_the_route_table_nor_on_a_later_visit_for_auth_state(
    ui: Page, system: System
) -> None:
    task_id = await submit(system, {"type": "demo.echo", "payload": 1})
    seen = _record(ui.page)

    await _open_list(ui, task_id)  # first visit: /auth/state, then the list, then /openapi.json
    asked = seen.index(("request", FIRST_PAGE))
    assert ("finished", "/openapi.json") not in seen[:asked], seen
    assert ("finished", "/auth/state") in seen[:asked], seen  # nothing that may 401 before it says yes
    assert seen.index(("request", "/openapi.json")) > asked, seen

    seen.clear()
    await ui.page.reload()  # the page now knows this gateway has auth off: the list is asked at once
    await ui.page.locator(f'#tasks-table tr[data-id="{task_id}"]').wait_for()
    await ui.page.locator('#conn[data-state="live"]').wait_for()
    asked = seen.index(("request", FIRST_PAGE))
    assert ("finished", "/auth/state") not in seen[:asked], seen
    assert ("finished", "/openapi.json") not in seen[:asked], seen
    stream = next(
        i for i, (kind, p) in enumerate(seen) if kind == "request" and p.startswith("/v1/events/stream")
    )
    assert [e for e in seen[:stream] if e == ("request", FIRST_PAGE)] == [("request", FIRST_PAGE)], seen
