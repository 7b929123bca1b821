"""Browser sessions (cookie, one-time link, across gateways), per-key rate limits and SSE caps."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
from nats.aio.client import Client as NATS

from ordo.embedded.processes import free_port
from ordo.gateway import keys
from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from tests.helpers import eventually
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
                async with httpx.AsyncClient(
                    base_url=other.base_url, cookies={"ordo_session": value + "x"}
                ) as forged:
                    assert (await forged.get("/v1/whoami")).status_code == 401
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


async def test_sign_in_refuses_login_csrf_from_another_origin(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """F12: another site must not sign the victim's browser in (to the attacker's tenant)."""
    async with auth_system(settings, nc, handler) as t:
        http, key = t.system.http, t.key["b:submitter"]
        own = t.system.base_url
        form = {"content-type": "application/x-www-form-urlencoded"}
        refused = [
            ("form from another site", {**form, "Origin": "http://evil.example"}, f"key={key}", 403),
            ("form without Origin", form, f"key={key}", 403),
            ("form from a null origin", {**form, "Origin": "null"}, f"key={key}", 403),
            (
                "JSON from another site",
                {"content-type": "application/json", "Origin": "http://evil"},
                None,
                403,
            ),
            ("same origin by name, other site", {"Sec-Fetch-Site": "cross-site"}, None, 403),
            ("a sibling site", {"Sec-Fetch-Site": "same-site"}, None, 403),
            ("text/plain (a simple request)", {"content-type": "text/plain"}, f'{{"key":"{key}"}}', 415),
        ]
        for what, headers, body, status in refused:
            content = body if body is not None else f'{{"key":"{key}"}}'
            headers = {"content-type": "application/json", **headers}
            r = await http.post("/auth/session", content=content, headers=headers)
            assert r.status_code == status, (what, r.status_code, r.text)
            assert "set-cookie" not in r.headers, what
            assert r.headers["content-type"].startswith("application/problem+json"), what
        # This origin, as a form or JSON, and a client that is no browser (no Origin): signed in.
        r = await http.post("/auth/session", content=f"key={key}", headers={**form, "Origin": own})
        assert r.status_code == 204 and "ordo_session" in r.headers["set-cookie"]
        r = await http.post("/auth/session", json={"key": key}, headers={"Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 204
        assert (await http.post("/auth/session", json={"key": key})).status_code == 204


async def test_logout_ends_the_session_on_the_server_and_on_every_gateway(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """F13: after logout a copy of the cookie is refused: at once on the gateway that logged out,
    within ORDO_KEY_CACHE_TTL_S on another."""
    async with auth_system(settings, nc, handler, key_cache_ttl_s=0.5) as t:
        base = t.system.base_url
        async with gateway_server(t.system.settings) as other, httpx.AsyncClient(base_url=base) as browser:
            assert (await browser.post("/auth/session", json={"key": t.key["a:viewer"]})).status_code == 204
            cookie = browser.cookies["ordo_session"]
            kept = {"ordo_session": cookie}
            async with httpx.AsyncClient(base_url=other.base_url, cookies=kept) as elsewhere:
                assert (await elsewhere.get("/v1/whoami")).status_code == 200
                # Another browser session of the same key is not affected by this logout.
                second = await t.system.http.post("/auth/session", json={"key": t.key["a:viewer"]})
                second_cookie = {"ordo_session": second.cookies["ordo_session"]}
                out = await browser.post("/auth/logout")
                assert out.status_code == 204 and "ordo_session" not in browser.cookies
                async with httpx.AsyncClient(base_url=base, cookies=kept) as copy:
                    r = await copy.get("/v1/whoami")
                    assert r.status_code == 401, r.text

                async def refused_elsewhere() -> bool:
                    return (await elsewhere.get("/v1/whoami")).status_code == 401

                await eventually(refused_elsewhere, timeout=10, what="logout seen by the other gateway")
            async with httpx.AsyncClient(base_url=base, cookies=second_cookie) as still:
                assert (await still.get("/v1/whoami")).status_code == 200


async def test_origin_check_compares_scheme_host_and_port(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """F14: a cookie write from https://same-host (or another port) is another origin."""
    async with auth_system(settings, nc, handler) as t:
        base = t.system.base_url  # http://127.0.0.1:<port>
        port = int(base.rsplit(":", 1)[1])
        async with httpx.AsyncClient(base_url=base) as browser:
            assert (
                await browser.post("/auth/session", json={"key": t.key["a:submitter"]})
            ).status_code == 204
            task = {"type": "demo.echo"}
            for origin in (
                f"https://127.0.0.1:{port}",
                f"http://127.0.0.1:{port + 1}",
                "http://127.0.0.1",
                f"http://127.0.0.1:{port}.evil.example",
                f"http://evil.example:{port}",
            ):
                r = await browser.post("/v1/tasks", json=task, headers={"Origin": origin})
                assert r.status_code == 403, (origin, r.text)
            for origin in (base, f"HTTP://127.0.0.1:{port}"):
                r = await browser.post("/v1/tasks", json=task, headers={"Origin": origin})
                assert r.status_code == 202, (origin, r.text)


def test_cookie_is_secure_behind_a_trusted_tls_proxy(settings: Settings, tmp_path: Path) -> None:
    """F14: `ordo gateway` honours X-Forwarded-Proto from ORDO_FORWARDED_ALLOW_IPS (uvicorn's
    forwarded_allow_ips) and sets the session cookie Secure; from any other peer it does not."""
    settings = settings.with_(auth=True, forwarded_allow_ips="127.0.0.2")
    key = asyncio.run(_one_key(settings))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDO_") and k != "FORWARDED_ALLOW_IPS"}
    env.update(settings.to_env())
    with (tmp_path / "gateway.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ordo.cli", "gateway", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        def sign_in(peer: str) -> httpx.Response:
            transport = httpx.HTTPTransport(local_address=peer)
            with httpx.Client(base_url=base, transport=transport, timeout=10) as client:
                return client.post("/auth/session", json={"key": key}, headers={"X-Forwarded-Proto": "https"})

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()
            time.sleep(0.2)
        proxied = sign_in("127.0.0.2")
        assert proxied.status_code == 204, proxied.text
        assert "secure" in proxied.headers["set-cookie"].lower()
        direct = sign_in("127.0.0.3")  # not a trusted proxy: its header is ignored
        assert direct.status_code == 204, direct.text
        assert "secure" not in direct.headers["set-cookie"].lower()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


async def _one_key(settings: Settings) -> str:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await keys.migrate(conn)
        _, secret = await keys.create_key(conn, settings.tenant, "viewer", "proxy test")
    finally:
        await conn.close()
    return secret


async def test_a_sign_in_link_followed_from_another_site_is_refused_and_not_spent(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """Login CSRF through a link: an attacker's own one-time link must not sign the victim in."""
    async with auth_system(settings, nc, handler) as t:
        url = (await t.system.http.post("/v1/auth/tokens", headers=t.auth("b:viewer"))).json()["url"]
        async with httpx.AsyncClient(base_url=t.system.base_url) as browser:
            for site in ("cross-site", "same-site"):
                r = await browser.get(url, headers={"Sec-Fetch-Site": site})
                assert r.status_code == 403 and "ordo_session" not in browser.cookies, r.text
            # Pasted into the address bar (or opened by the UI itself): signed in.
            r = await browser.get(url, headers={"Sec-Fetch-Site": "none"})
            assert r.status_code == 303 and "ordo_session" in browser.cookies


async def test_signing_out_ends_the_browser_s_live_streams(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> None:
    """A stream opened with the session cookie went on after the logout (another tab of the UI
    stayed live): streams re-check their session as they re-check their key."""
    async with auth_system(settings, nc, handler) as t:
        browser = httpx.AsyncClient(base_url=t.system.base_url, timeout=40)
        assert (await browser.post("/auth/session", json={"key": t.key["a:viewer"]})).status_code == 204

        async def read_until_closed() -> int:
            lines = 0
            async with browser.stream("GET", "/v1/events/stream") as s:
                assert s.status_code == 200
                async for _ in s.aiter_lines():
                    lines += 1
                    if lines == 1:
                        out = await browser.post("/auth/logout")
                        assert out.status_code == 204
            return lines

        try:
            assert await asyncio.wait_for(read_until_closed(), 40) >= 1
        finally:
            await browser.aclose()
