"""Browser sessions (cookie, one-time link, across gateways), per-key rate limits and SSE caps."""

from __future__ import annotations

import asyncio

import httpx
from nats.aio.client import Client as NATS

from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from tests.test_auth_support import auth_system, gateway_server


async def test_a_session_cookie_works_across_gateways_and_ends_with_its_key(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    async with auth_system(settings, nc, handler) as t:
        base = t.system.base_url
        async with httpx.AsyncClient(base_url=base) as browser:
            assert (await browser.post("/auth/session", json={"key": "wrong"})).status_code == 401
            r = await browser.post("/auth/session", json={"key": t.key["a:operator"]})
            assert r.status_code == 204
            cookie = r.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=lax" in cookie
            assert t.key["a:operator"].lower() not in cookie
            me = (await browser.get("/v1/whoami")).json()
            assert me == {"tenant": t.a, "role": "operator", "key_id": t.key_id["a:operator"], "auth": True}
            # Cross-origin writes with the cookie are refused; same-origin ones pass.
            sub = await browser.post(
                "/v1/tasks", json={"type": "demo.echo"}, headers={"Origin": "http://evil"}
            )
            assert sub.status_code == 403
            # Another gateway (a restart looks the same: the signing secret lives in PostgreSQL).
            async with gateway_server(t.system.settings) as other:
                value = browser.cookies.get("ordo_session")
                assert value
                async with httpx.AsyncClient(base_url=other.base_url, cookies={"ordo_session": value}) as b2:
                    assert (await b2.get("/v1/whoami")).status_code == 200
                    assert (
                        await b2.get("/v1/whoami", cookies={"ordo_session": value + "x"})
                    ).status_code == 401
            revoke = await t.system.http.delete(
                f"/v1/keys/{t.key_id['a:operator']}", headers=t.auth("a:admin")
            )
            assert revoke.status_code == 204
            assert (await browser.get("/v1/whoami")).status_code == 401


async def test_a_one_time_link_sets_the_cookie_once(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    async with auth_system(settings, nc, handler) as t:
        http = t.system.http
        link = await http.post("/v1/auth/tokens", headers=t.auth("a:viewer"))
        assert link.status_code == 201
        url = link.json()["url"]
        async with httpx.AsyncClient(base_url=t.system.base_url) as browser:
            r = await browser.get(url)
            assert r.status_code == 303 and r.headers["location"] == "/"
            assert (await browser.get("/v1/whoami")).json()["role"] == "viewer"
        async with httpx.AsyncClient(base_url=t.system.base_url) as other:
            again = await other.get(url)
            assert again.status_code == 401
            assert (await other.get("/v1/whoami")).status_code == 401


async def test_rate_limit_answers_429_with_retry_after_per_key(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    async with auth_system(settings, nc, handler, rate_limit_per_s=0.5, rate_limit_burst=5) as t:
        http = t.system.http
        statuses = [(await http.get("/v1/tasks", headers=t.auth("a:viewer"))).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        r = await http.get("/v1/tasks", headers=t.auth("a:viewer"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.headers["content-type"].startswith("application/problem+json")
        # Another key is not affected.
        assert (await http.get("/v1/tasks", headers=t.auth("a:admin"))).status_code == 200


async def test_sse_streams_per_key_are_capped(settings: Settings, nc: NATS, handler: CommandHandler) -> None:
    async with auth_system(settings, nc, handler, sse_max_per_key=2) as t:
        http = t.system.http
        headers = t.auth("a:viewer")
        async with http.stream("GET", "/v1/events/stream", headers=headers) as s1:
            assert s1.status_code == 200
            async with http.stream("GET", "/v1/events/stream", headers=headers) as s2:
                assert s2.status_code == 200
                third = await http.get("/v1/events/stream", headers=headers)
                assert third.status_code == 429 and third.headers["retry-after"]
                other = await http.get("/v1/events/stream", headers=t.auth("a:admin"), params={"after": "x"})
                assert other.status_code == 422  # a different key is not capped (rejected for its input)

        # Closed streams give their slots back.
        async def reopen() -> int:
            async with http.stream("GET", "/v1/events/stream", headers=headers) as s:
                return s.status_code

        assert await asyncio.wait_for(reopen(), 30) in (200, 429)
