"""Input bounds at every door (issue 12 part A: audit F5, F15, F16).

Nested JSON deeper than 64 levels is a 422 on tasks, batches, task updates, schedules and the NATS
command API, never a 500 or a reset; so is a time that has no UTC form within years 1-9999; an SSE
resume point that is not a log sequence is a 400, one beyond the log a 422; the same JSON
re-submitted under an idempotency key with other whitespace or key order is the same task (200).
"""

from __future__ import annotations

import json

import nats

from ordo.gateway.json_bounds import MAX_DEPTH
from ordo.infra import subjects as sj
from tests.conftest import System
from tests.helpers import eventually

JSON = {"content-type": "application/json"}


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


async def _log_seq(system: System) -> int:
    return int((await system.nc.jetstream().stream_info(sj.EVENTS_STREAM)).state.last_seq)


async def test_deep_json_is_422_at_every_door(gateway_only: System) -> None:
    http = gateway_only.http
    ok = await http.post("/v1/tasks", content=b'{"type":"demo.echo","payload":' + _nested(MAX_DEPTH) + b"}")
    assert ok.status_code == 202, ok.text
    task_id = ok.json()["id"]
    before = await _log_seq(gateway_only)
    for deep in (_nested(MAX_DEPTH + 1), _nested(1000), _nested(100_000), _objects(1500)):
        bodies = [
            ("POST", "/v1/tasks", b'{"type":"demo.echo","payload":' + deep + b"}"),
            ("POST", "/v1/tasks:batch", b'{"tasks":[{"type":"demo.echo","payload":' + deep + b"}]}"),
            ("POST", "/v1/tasks:batch", b'{"tasks":[' + deep + b"]}"),
            ("PATCH", f"/v1/tasks/{task_id}", b'{"payload":' + deep + b"}"),
            ("POST", "/v1/schedules", b'{"cron":"0 * * * *","task":{"type":"x","payload":' + deep + b"}}"),
            ("POST", "/v1/keys", b'{"role":"viewer","name":' + deep + b"}"),  # FastAPI's parser (a 400)
        ]
        for method, path, body in bodies:
            r = await http.request(method, path, content=body, headers=JSON)
            assert r.status_code == 422, (method, path, len(deep), r.status_code, r.text[:200])
            assert r.headers["content-type"].startswith("application/problem+json")
    assert await _log_seq(gateway_only) == before

    service = await nats.connect(gateway_only.settings.nats_url, name="deep-json")
    try:
        for verb, body in (
            ("submit", b'{"type":"demo.echo","payload":' + _nested(5000) + b"}"),
            ("batch", b'{"tasks":[{"type":"demo.echo","payload":' + _nested(MAX_DEPTH + 1) + b"}]}"),
        ):
            msg = await service.request(sj.cmd_subject(gateway_only.settings.tenant, verb), body, timeout=10)
            assert (msg.headers or {}).get(sj.REPLY_STATUS) == "422", (verb, msg.data[:200])
    finally:
        await service.close()
    assert await _log_seq(gateway_only) == before


async def test_a_time_beyond_utc_range_is_422_at_every_door(gateway_only: System) -> None:
    """`9999-12-31T23:59:59-05:00` is valid RFC 3339 but falls in year 10000 in UTC (and
    `0001-01-01T00:00:00+05:00` in year 0): a 422 naming the field, never a 500."""
    http = gateway_only.http
    ok = await http.post("/v1/tasks", json={"type": "demo.echo", "delay": 3600})
    assert ok.status_code == 202, ok.text
    task_id = ok.json()["id"]
    made = await http.post("/v1/schedules", json={"cron": "0 * * * *", "task": {"type": "x"}})
    assert made.status_code == 201, made.text
    schedule_id = made.json()["id"]
    before = await _log_seq(gateway_only)
    for late in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"):
        bodies = [
            ("POST", "/v1/tasks", {"type": "demo.echo", "run_at": late}, "run_at"),
            ("POST", "/v1/tasks:batch", {"tasks": [{"type": "demo.echo", "run_at": late}]}, "run_at"),
            ("PATCH", f"/v1/tasks/{task_id}", {"run_at": late}, "run_at"),
            (
                "POST",
                "/v1/schedules",
                {"cron": "0 * * * *", "task": {"type": "x"}, "start_at": late},
                "start_at",
            ),
            ("POST", "/v1/schedules", {"cron": "0 * * * *", "task": {"type": "x"}, "end_at": late}, "end_at"),
            ("PATCH", f"/v1/schedules/{schedule_id}", {"end_at": late}, "end_at"),
            ("POST", "/v1/dead-letters:replay", {"dead_after": late}, "dead_after"),
        ]
        for method, path, body, named in bodies:
            r = await http.request(method, path, json=body)
            assert r.status_code == 422, (method, path, late, r.status_code, r.text[:300])
            assert named in r.text, r.text[:300]
        for path, name in (
            ("/v1/tasks", "created_after"),
            ("/v1/tasks", "updated_before"),
            ("/v1/dead-letters", "dead_before"),
            ("/v1/stats", "since"),
        ):
            r = await http.get(path, params={name: late})
            assert r.status_code == 422, (path, name, late, r.status_code, r.text[:300])
            assert name in r.json()["detail"], r.text[:300]
    assert await _log_seq(gateway_only) == before
    service = await nats.connect(gateway_only.settings.nats_url, name="far-time")
    try:
        body = b'{"type":"demo.echo","run_at":"9999-12-31T23:59:59-05:00"}'
        msg = await service.request(sj.cmd_subject(gateway_only.settings.tenant, "submit"), body, timeout=10)
        assert (msg.headers or {}).get(sj.REPLY_STATUS) == "422", msg.data[:200]
    finally:
        await service.close()
    assert await _log_seq(gateway_only) == before


async def test_schedule_text_with_nul_is_422_and_a_nul_payload_is_kept(gateway_only: System) -> None:
    http = gateway_only.http
    for body in (
        b'{"cron":"0 * * * *","task":{"type":"x"},"description":"a\\u0000b"}',
        b'{"cron":"0 * * * *","task":{"type":"x","tags":["\\u0000"]}}',
        b'{"cron":"0 * * * *","task":{"type":"x","payload":"\xff"}}',
    ):
        r = await http.post("/v1/schedules", content=body, headers=JSON)
        assert r.status_code == 422, (body, r.text)
    r = await http.post(
        "/v1/schedules", content=b'{"cron":"0 * * * *","task":{"type":"x","payload":{"k":"a\\u0000"}}}'
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]

    async def stored() -> dict[str, object] | None:
        got = await http.get(f"/v1/schedules/{sid}")
        return got.json() if got.status_code == 200 else None

    schedule = await eventually(stored, timeout=30, what="schedule in the read model")
    assert '"a\\u0000"' in json.dumps(schedule)  # the payload's NUL, read back as given
    assert (await http.get("/readyz")).json()["degraded"] is False


async def test_sse_resume_point_must_be_a_log_sequence(gateway_only: System) -> None:
    http = gateway_only.http
    cases = [("abc", 400), ("-5", 400), ("1e3", 400), ("10" * 15, 400), (str(2**63), 400), (str(10**15), 422)]
    for header, status in cases:
        r = await http.get("/v1/events/stream", headers={"Last-Event-ID": header})
        assert r.status_code == status, (header, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_sse_after_beyond_the_log_is_422_and_a_real_position_streams(gateway_only: System) -> None:
    http = gateway_only.http
    submitted = await http.post("/v1/tasks", json={"type": "demo.echo"})
    task_id, seq = submitted.json()["id"], submitted.json()["seq"]
    for params in ({"after": str(10**12)}, {"after": "-1"}, {"after": "x"}):
        r = await http.get("/v1/events/stream", params=params)
        assert r.status_code == 422, (params, r.text)
    r = await http.get(f"/v1/tasks/{task_id}/stream", headers={"Last-Event-ID": str(10**12)})
    assert r.status_code == 422, r.text
    async with http.stream("GET", "/v1/events/stream", headers={"Last-Event-ID": str(seq)}) as stream:
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            if line.startswith("id:"):
                assert line == f"id: {seq}" or line == f"id:{seq}"
                break


async def test_the_same_json_resubmitted_is_the_same_task(gateway_only: System) -> None:
    http = gateway_only.http
    first = await http.post(
        "/v1/tasks",
        content=b'{"type":"demo.echo","idempotency_key":"k1",'
        b'"payload":{"x": 1, "y": {"b": [1, 2], "a": null}}}',
        headers=JSON,
    )
    assert first.status_code == 202, first.text
    for body in (
        b'{"idempotency_key":"k1","type":"demo.echo","payload":{"y":{"a":null,"b":[1,2]},"x":1}}',
        b'{ "type" : "demo.echo" , "idempotency_key" : "k1" ,'
        b' "payload" : { "x" :1 ,"y":{"a" : null, "b":[ 1,2 ]} } }',
    ):
        again = await http.post("/v1/tasks", content=body, headers=JSON)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]
    other = await http.post(
        "/v1/tasks", json={"type": "demo.echo", "idempotency_key": "k1", "payload": {"x": 2, "y": {}}}
    )
    assert other.status_code == 409, other.text
