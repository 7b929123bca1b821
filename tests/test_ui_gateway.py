"""The UI across a gateway restart (resume by Last-Event-ID, no duplicate) and signing in (API key
form → HttpOnly cookie; the one-time link). Each test runs its own gateway on a fixed port next to
the `system` fixture's projector and worker, so it can stop it and start a new one on that port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from ordo.embedded.processes import free_port
from ordo.gateway import keys
from ordo.infra.settings import Settings
from tests.conftest import System, uvicorn_gateway
from tests.helpers import eventually
from tests.test_ui import UI_TIMEOUT_MS, Page, browser, status_is, submit

__all__ = ["browser"]  # the session's Chromium, shared with tests/test_ui.py
NET_ERRORS = [
    "ERR_CONNECTION_REFUSED",
    "ERR_EMPTY_RESPONSE",
    "ERR_CONNECTION_RESET",
    "ERR_INCOMPLETE_CHUNKED_ENCODING",
]


@contextlib.asynccontextmanager
async def gateway(settings: Settings, port: int) -> AsyncIterator[str]:
    """A gateway (API + UI) on `port` until the block ends; SSE streams are cut after 1 s."""
    server = uvicorn_gateway(settings, port, timeout_graceful_shutdown=1)
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        if serving.done():
            serving.result()
        return bool(server.started)

    await eventually(started, timeout=60, what=f"gateway on port {port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)


async def _page(browser: Any, base: str) -> tuple[Any, Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(UI_TIMEOUT_MS)
    return context, Page(await context.new_page(), base)


async def test_page_resumes_after_gateway_restart_without_duplicates(browser: Any, system: System) -> None:
    port = free_port()
    task_id = await submit(system, {"type": "demo.sleep", "payload": {"seconds": 12}})
    await eventually(status_is(system, task_id, "running"), timeout=60, what="running")
    async with gateway(system.settings, port) as base:
        context, ui = await _page(browser, base)
        ui.allowed = NET_ERRORS
        page = ui.page
        await ui.open(f"/tasks/{task_id}")
        await page.locator('#task-status .badge[data-status="running"]').wait_for()
        await page.locator('#conn[data-state="live"]').wait_for()
        await page.evaluate("window.__noReload = true")
        # the outage must fall inside the run, or nothing would be left to resume
        assert (await system.http.get(f"/v1/tasks/{task_id}")).json()["status"] == "running"
    # the gateway is gone: the page notices, and the task goes on without it
    await page.locator('#conn:not([data-state="live"])').wait_for()
    other = await submit(system, {"type": "demo.echo", "payload": "while the gateway was down"})
    await eventually(status_is(system, task_id, "succeeded"), timeout=60, what="succeeded while down")
    try:
        async with gateway(system.settings, port):
            await page.locator(
                '#task-status .badge[data-status="succeeded"]', has_text="succeeded"
            ).wait_for()
            await page.locator('#conn[data-state="live"]').wait_for()
            timeline = (await system.http.get(f"/v1/tasks/{task_id}/events")).json()["events"]
            expected = [e["seq"] for e in timeline]

            async def rows_complete() -> bool:
                shown = await page.eval_on_selector_all(
                    "#events-view tr[data-seq]", "rs => rs.map(r => +r.dataset.seq)"
                )
                return bool(shown == expected)

            await eventually(rows_complete, timeout=30, what="every event shown once, in order")
            # the global stream resumed too: the event of the task submitted during the outage arrived once
            other_seqs = [
                e["seq"] for e in (await system.http.get(f"/v1/tasks/{other}/events")).json()["events"]
            ]

            async def global_resumed() -> bool:
                return bool(await page.evaluate(f"window.ordo.seqs.includes({other_seqs[-1]})"))

            try:
                await eventually(global_resumed, timeout=60, what=f"global stream resumed to {other_seqs}")
            except AssertionError as exc:
                seen = await page.evaluate("[window.ordo.lastSeq, window.ordo.seqs.slice(-5)]")
                raise AssertionError(f"{exc}; the page's last sequence and last five: {seen}") from None
            seqs = await page.evaluate("window.ordo.seqs")
            assert seqs == sorted(set(seqs)), "the global stream delivered a sequence twice or out of order"
            assert set(other_seqs) <= set(seqs), "an event from the outage is missing"
            assert await page.evaluate("window.ordo.duplicates") == 0
            assert await page.evaluate("window.__noReload") is True
    finally:
        await context.close()
    assert ui.unexpected_errors() == []


async def _admin_key(settings: Settings) -> tuple[str, str]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await keys.migrate(conn)
        key, secret = await keys.create_key(conn, settings.tenant, "admin", "ui test")
        token = await keys.create_login_token(conn, key.id, 600)
    finally:
        await conn.close()
    return secret, token


async def test_sign_in_with_an_api_key_sets_an_httponly_cookie(browser: Any, system: System) -> None:
    settings = system.settings.with_(auth=True)
    async with gateway(settings, free_port()) as base:
        secret, _ = await _admin_key(settings)
        context, ui = await _page(browser, base)
        ui.allowed = ["401 (Unauthorized)"]
        page = ui.page
        try:
            await ui.open("/tasks")
            await page.locator("dialog#signin[open] input[name=api_key]").wait_for()
            await page.fill("dialog#signin input[name=api_key]", "ordo_wrong")
            await page.click("dialog#signin button[type=submit]")
            await page.locator("dialog#signin .error-text", has_text="not accepted").wait_for()
            await page.fill("dialog#signin input[name=api_key]", secret)
            await page.click("dialog#signin button[type=submit]")
            await page.locator("dialog#signin[open]").wait_for(state="detached")
            await page.locator("#tasks-table").wait_for()
            await page.locator('#conn[data-state="live"]').wait_for()
            assert settings.tenant in await page.inner_text("#account")
            # the key is nowhere the page's scripts (or the URL) can see it
            assert secret not in page.url
            assert await page.evaluate("document.cookie") == ""
            storage = await page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
            assert secret not in storage
            cookies = await context.cookies()
            assert cookies and all(c["httpOnly"] for c in cookies)
            # live updates arrive for the signed-in tenant
            task_id = await submit(system, {"type": "demo.echo", "payload": 1})
            await page.locator(f'#tasks-table tr[data-id="{task_id}"]').wait_for()
        finally:
            await context.close()
    assert ui.unexpected_errors() == []


async def test_one_time_sign_in_link(browser: Any, system: System) -> None:
    settings = system.settings.with_(auth=True)
    async with gateway(settings, free_port()) as base:
        _, token = await _admin_key(settings)
        context, ui = await _page(browser, base)
        ui.allowed = ["401 (Unauthorized)"]
        page = ui.page
        try:
            await page.goto(f"{base}/auth/token?t={token}")
            await page.locator('#conn[data-state="live"]').wait_for()
            assert "t=" not in page.url and token not in page.url
            assert await page.locator("dialog#signin[open]").count() == 0
            # used once: a second browser with the same link is refused, and lands on the UI saying
            # so, with the key form (not on a raw JSON 401), and logs no error
            second = await browser.new_context()
            try:
                other = Page(await second.new_page(), base)
                await other.page.goto(f"{base}/auth/token?t={token}")
                await other.page.locator("#signed-out", has_text="already used or has expired").wait_for()
                await other.page.locator("dialog#signin[open] input[name=api_key]").wait_for()
                assert other.errors == [], other.errors
            finally:
                await second.close()
        finally:
            await context.close()
    assert ui.unexpected_errors() == []
