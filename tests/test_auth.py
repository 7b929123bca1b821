"""Acceptance 5: 401 for missing/invalid/revoked keys, 403 for a wrong role, 404 across tenants on
every endpoint, SSE filter and NATS subject; SQL-injection strings in every filter and sort."""

from __future__ import annotations

import json
import re
from typing import Any

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NATS

from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from tests.test_auth_support import Tenants, auth_system


@pytest.fixture
async def tenants(settings: Settings, nc: NATS, handler: CommandHandler) -> Any:
    async with auth_system(settings, nc, handler) as t:
        yield t


async def _nats(nc: NATS, tenant: str, verb: str, body: Any, key: str | None) -> tuple[int, str, Any]:
    headers = {sj.AUTHORIZATION: f"Bearer {key}"} if key else None
    msg = await nc.request(
        sj.cmd_subject(tenant, verb), json.dumps(body).encode(), timeout=10, headers=headers
    )
    hdrs = msg.headers or {}
    return int(hdrs[sj.REPLY_STATUS]), hdrs.get(sj.REPLY_ERROR, ""), json.loads(msg.data)


def _routes(http_app_openapi: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for path, ops in http_app_openapi["paths"].items():
        for method in ops:
            out.append((method.upper(), path))
    return out


PUBLIC = {"/healthz", "/readyz", "/auth/session", "/auth/token", "/auth/logout"}


async def test_missing_invalid_or_revoked_keys_are_401_everywhere(tenants: Tenants) -> None:
    http = tenants.system.http
    spec = (await http.get("/openapi.json", headers=tenants.auth("a:viewer"))).json()
    revoked = tenants.key["a:operator"]
    r = await http.delete(f"/v1/keys/{tenants.key_id['a:operator']}", headers=tenants.auth("a:admin"))
    assert r.status_code == 204
    bad_headers: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Basic {tenants.key['a:admin']}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {revoked}"},
        {"Cookie": "ordo_session=ka.99999999999.forged"},
    ]
    checked = 0
    for method, path in _routes(spec):
        if path in PUBLIC:
            continue
        url = re.sub(r"\{[^}]+\}", "x1", path)
        for headers in bad_headers:
            # a parameter the route does not take is refused after the caller, not before: a
            # stranger learns nothing of the route's parameters from the 422
            r = await http.request(method, url, headers=headers, json={}, params={"no_such_parameter": "1"})
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.headers["www-authenticate"].startswith("Bearer")
            checked += 1
    assert checked > 100
    # The API's description needs a key as well (ORDO_PUBLIC_DOCS opens it).
    for path in ("/openapi.json", "/docs", "/redoc"):
        for headers in bad_headers:
            r = await http.get(path, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
        assert (await http.get(path, headers=tenants.auth("b:viewer"))).status_code == 200
    # NATS: the same keys are refused the same way.
    for key in (None, "nope", revoked):
        status, error, _ = await _nats(tenants.system.nc, tenants.a, "submit", {"type": "x"}, key)
        assert (status, error) == (401, "unauthorized")


async def test_a_role_below_the_action_is_403(tenants: Tenants) -> None:
    http = tenants.system.http
    task = (
        await http.post("/v1/tasks", json={"type": "demo.echo"}, headers=tenants.auth("a:submitter"))
    ).json()
    cases = [
        ("a:viewer", "POST", "/v1/tasks", {"type": "demo.echo"}),
        ("a:viewer", "POST", "/v1/tasks:batch", {"tasks": [{"type": "demo.echo"}]}),
        ("a:viewer", "PATCH", f"/v1/tasks/{task['id']}", {"priority": 1}),
        ("a:submitter", "POST", f"/v1/tasks/{task['id']}:cancel", None),
        ("a:submitter", "POST", f"/v1/tasks/{task['id']}:archive", None),
        ("a:operator", "GET", "/v1/keys", None),
        ("a:operator", "POST", "/v1/keys", {"role": "admin"}),
    ]
    for who, method, path, body in cases:
        r = await http.request(method, path, json=body, headers=tenants.auth(who))
        assert r.status_code == 403, (who, method, path, r.text)
        assert r.json()["type"].endswith("/forbidden")
    # The same keys pass where their role suffices.
    ok = await http.post(f"/v1/tasks/{task['id']}:pause", headers=tenants.auth("a:operator"))
    assert ok.status_code == 202
    nc = tenants.system.nc
    status, error, _ = await _nats(nc, tenants.a, "submit", {"type": "x"}, tenants.key["a:viewer"])
    assert (status, error) == (403, "forbidden")
    status, _, _ = await _nats(nc, tenants.a, "cancel", {"id": task["id"]}, tenants.key["a:submitter"])
    assert status == 403
    # A header's name in any case, as over HTTP (NATS keeps the case it was sent in).
    lower = {"authorization": f"Bearer {tenants.key['a:viewer']}"}
    msg = await nc.request(sj.cmd_subject(tenants.a, "submit"), b'{"type":"x"}', timeout=10, headers=lower)
    assert (msg.headers or {}).get(sj.REPLY_ERROR) == "forbidden"  # known, and only a viewer


async def test_another_tenants_ids_are_404_on_every_endpoint_stream_and_subject(tenants: Tenants) -> None:
    http = tenants.system.http
    a_task = (
        await http.post("/v1/tasks", json={"type": "demo.echo"}, headers=tenants.auth("a:admin"))
    ).json()
    tid = a_task["id"]
    b = tenants.auth("b:admin")
    for method, path, body in [
        ("GET", f"/v1/tasks/{tid}", None),
        ("GET", f"/v1/tasks/{tid}?as_of_seq={a_task['seq']}", None),
        ("GET", f"/v1/tasks/{tid}/events", None),
        ("PATCH", f"/v1/tasks/{tid}", {"priority": 1}),
        ("POST", f"/v1/tasks/{tid}:cancel", None),
        ("POST", f"/v1/tasks/{tid}:pause", None),
        ("POST", f"/v1/tasks/{tid}:resume", None),
        ("POST", f"/v1/tasks/{tid}:retry", None),
        ("POST", f"/v1/tasks/{tid}:archive", None),
        ("POST", f"/v1/dead-letters/{tid}:replay", None),
        ("GET", f"/v1/tasks/{tid}/stream", None),
        ("GET", f"/v1/events/stream?task_id={tid}", None),
        ("DELETE", f"/v1/keys/{tenants.key_id['a:viewer']}", None),
    ]:
        r = await http.request(method, path, json=body, headers=b)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    # Every path with an id, given A's task id under B's admin key: never a success, never a 5xx.
    spec = (await http.get("/openapi.json", headers=tenants.auth("a:viewer"))).json()
    for method, path in _routes(spec):
        if not re.search(r"\{(task_id|schedule_id|key_id)\}", path):
            continue  # queues and workers are named by the operator, not owned ids
        url = re.sub(r"\{[^}]+\}", tid, path)
        if url.endswith("/stream"):
            continue  # checked above (a 200 would be a never-ending body)
        r = await http.request(method, url, headers=b, json={})
        assert r.status_code in (404, 409, 422), (method, url, r.status_code, r.text)
        assert r.status_code != 409 or tid not in r.text, (method, url, r.text)
    # Lists never show A's task to B.
    listed = (await http.get("/v1/tasks", params={"q": tid}, headers=b)).json()
    assert listed["items"] == []
    # NATS: A's subject with B's key looks like nothing; B's subject with A's id too.
    nc = tenants.system.nc
    status, error, _ = await _nats(nc, tenants.a, "get", {"id": tid}, tenants.key["b:admin"])
    assert (status, error) == (404, "not-found")
    for verb in ("get", "cancel", "retry"):
        status, _, _ = await _nats(nc, tenants.b, verb, {"id": tid}, tenants.key["b:admin"])
        assert status == 404, verb
    # A still sees its task unchanged.
    mine = await http.get(f"/v1/tasks/{tid}", headers=tenants.auth("a:viewer"))
    assert mine.status_code == 200 and mine.json()["status"] == "queued"


INJECTIONS = [
    "' OR '1'='1",
    "x' OR 1=1 --",
    "'; DROP TABLE tasks; --",
    '" OR ""="',
    "1) OR (1=1",
    "%",
    "_",
    "\\",
    "queued' UNION SELECT * FROM api_keys --",
    "$1",
    "created_at; DELETE FROM tasks",
    "-created_at, (SELECT 1)",
]


async def test_sql_injection_strings_in_every_filter_and_sort_change_nothing(tenants: Tenants) -> None:
    http = tenants.system.http
    a, b = tenants.auth("a:admin"), tenants.auth("b:admin")
    mine = await http.post(
        "/v1/tasks:batch", json={"tasks": [{"type": "demo.echo", "tags": ["t"]}] * 3}, headers=a
    )
    theirs = await http.post("/v1/tasks:batch", json={"tasks": [{"type": "demo.echo"}] * 5}, headers=b)
    seq = max(mine.json()["seq"], theirs.json()["seq"])
    spec = (await http.get("/openapi.json", headers=tenants.auth("a:viewer"))).json()
    lists = [
        (path, [p["name"] for p in ops["get"].get("parameters", []) if p["in"] == "query"])
        for path, ops in spec["paths"].items()
        if "get" in ops and "{" not in path and path.startswith("/v1/") and "stream" not in path
    ]
    assert any(path == "/v1/tasks" for path, _ in lists)

    async def fetch(path: str, params: dict[str, str]) -> httpx.Response:
        return await http.get(
            path, params={"min_seq": str(seq), **params} if path == "/v1/tasks" else params, headers=a
        )

    tried = 0
    for path, params in lists:
        baseline = await fetch(path, {})
        assert baseline.status_code == 200, (path, baseline.text)
        base_body = baseline.json()
        base_items = base_body.get("items") if isinstance(base_body, dict) else None
        for name in params:
            if name in ("min_seq", "consistency"):
                continue
            for value in INJECTIONS:
                r = await fetch(path, {name: value})
                tried += 1
                assert r.status_code in (200, 400, 422), (path, name, value, r.status_code, r.text)
                if r.status_code == 200 and base_items is not None:
                    items = r.json()["items"]
                    assert len(items) <= len(base_items), (path, name, value)
                    ids = {i.get("id") for i in base_items}
                    assert all(i.get("id") in ids for i in items), (path, name, value)
    assert tried > 100
    # Tables intact, tenant A still sees exactly its 3 tasks and B its 5.
    assert len((await http.get("/v1/tasks", headers=a)).json()["items"]) == 3
    assert len((await http.get("/v1/tasks", headers=b)).json()["items"]) == 5


async def test_revoking_a_revoked_key_again_is_a_204_and_keeps_its_revocation(tenants: Tenants) -> None:
    """A second DELETE of a revoked key was a 404 `no key …`, while `GET /v1/keys` listed it as
    revoked: revoking is idempotent now; an unknown key or another tenant's stays a 404."""
    http, admin = tenants.system.http, tenants.auth("a:admin")
    key_id = tenants.key_id["a:submitter"]
    assert (await http.delete(f"/v1/keys/{key_id}", headers=admin)).status_code == 204

    def listed(items: list[dict[str, Any]]) -> dict[str, Any]:
        return next(k for k in items if k["id"] == key_id)

    async def revoked_at() -> Any:
        conn = await asyncpg.connect(tenants.system.settings.database_url)
        try:
            return await conn.fetchval("SELECT revoked_at FROM api_keys WHERE id=$1", key_id)
        finally:
            await conn.close()

    first = listed((await http.get("/v1/keys", headers=admin)).json()["items"])
    assert first["revoked"] is True
    when = await revoked_at()
    r = await http.delete(f"/v1/keys/{key_id}", headers=admin)
    assert r.status_code == 204, r.text
    assert listed((await http.get("/v1/keys", headers=admin)).json()["items"]) == first
    assert await revoked_at() == when  # the first revocation's time stays
    assert (await http.get("/v1/whoami", headers=tenants.auth("a:submitter"))).status_code == 401
    for unknown in ("k0000000000000000", tenants.key_id["b:viewer"]):
        r = await http.delete(f"/v1/keys/{unknown}", headers=admin)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert (await http.get("/v1/whoami", headers=tenants.auth("b:viewer"))).status_code == 200
