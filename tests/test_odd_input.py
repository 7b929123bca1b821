"""Odd input a user sent while trying the API (2026-12-06), each once a 500 or a 2xx that changed
something wrongly: now a 4xx problem+json that names the problem, with nothing appended to the log."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS

from ordo.domain.schedule_commands import DeleteSchedule
from ordo.infra import subjects as sj
from ordo.infra.command_handler import CommandHandler
from ordo.infra.schedule_handler import ScheduleHandler
from ordo.infra.schedule_timers import ScheduleTimers
from ordo.infra.settings import Settings
from tests.conftest import System


@pytest.fixture(autouse=True)
async def _delete_schedules_after(
    settings: Settings, nc: NATS, handler: CommandHandler
) -> AsyncIterator[None]:
    """A schedule these tests created (or wrongly got created) must not fire into the session's log."""
    yield
    created, _ = await handler.store.load_raw(f"{sj.SCHED_PREFIX}.{settings.tenant}.*.created")
    schedules = ScheduleHandler(handler, ScheduleTimers(nc, settings.timer_lead_s))
    for raw in created:
        _, sid, _ = sj.parse_schedule_subject(raw.subject)
        await schedules.execute(settings.tenant, DeleteSchedule(schedule_id=sid))


async def _last_seq(system: System) -> int:
    info = await system.nc.jetstream().stream_info(sj.EVENTS_STREAM)
    return int(info.state.last_seq)


def _problem(r: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert r.status_code in statuses, (r.request.method, str(r.request.url), r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["detail"]
    return body


def _cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode("|".join(parts).encode()).decode()


async def test_a_nul_in_a_path_or_a_query_is_a_422(gateway_only: System) -> None:
    http = gateway_only.http
    before = await _last_seq(gateway_only)
    for method, url in [
        ("GET", "/v1/tasks?type=a%00"),
        ("GET", "/v1/tasks?queue=a%00"),
        ("GET", "/v1/tasks?tag=a%00"),
        ("GET", "/v1/tasks?q=%00"),
        ("GET", "/v1/dead-letters?type=a%00"),
        ("GET", "/v1/dead-letters?error_kind=a%00"),
        ("GET", "/v1/stats?type=a%00"),
        ("GET", "/v1/tasks/a%00b"),
        ("POST", "/v1/tasks/a%00b:cancel"),
        ("DELETE", "/v1/keys/k%00x"),
    ]:
        body = _problem(await http.request(method, url), 422)
        assert "NUL" in body["detail"], body
    assert await _last_seq(gateway_only) == before


async def test_a_nul_in_a_key_name_or_a_bulk_replay_filter_is_a_422(gateway_only: System) -> None:
    http = gateway_only.http
    _problem(await http.post("/v1/keys", json={"role": "viewer", "name": "a\x00b"}), 422)
    names = [k["name"] for k in (await http.get("/v1/keys")).json()["items"]]
    assert "a\x00b" not in names
    for field in ("type", "error_kind", "reason"):
        _problem(await http.post("/v1/dead-letters:replay", json={field: "a\x00"}), 422)


async def test_a_cursor_the_gateway_did_not_issue_is_a_400(gateway_only: System) -> None:
    http = gateway_only.http
    for path, cursor in [
        ("/v1/tasks", _cursor("-created_at", "9999-12-31T23:59:59-05:00", "x")),
        ("/v1/tasks", _cursor("-created_at", "0001-01-01T00:00:00+05:00", "x")),
        ("/v1/tasks", _cursor("-created_at", "2026-01-01T00:00:00", "x")),  # no time zone
        ("/v1/tasks", _cursor("-created_at", "2026-01-01T00:00:00+00:00", "a\x00")),
        ("/v1/dead-letters", _cursor("dead_letters", "9" * 30)),
        ("/v1/dead-letters", _cursor("dead_letters", "\u00b2")),
        ("/v1/schedules", _cursor("schedules", "9999-12-31T23:59:59-05:00", "x")),
    ]:
        _problem(await http.get(path, params={"cursor": cursor}), 400)


async def test_odd_headers_and_cookies_are_refused_not_failed(gateway_only: System) -> None:
    http = gateway_only.http
    seq = await http.get("/v1/tasks", headers={b"Ordo-Min-Seq": b"\xb2"})
    _problem(seq, 400)
    # A session cookie that is not ASCII is no session: the request is unauthenticated, not a 500.
    async with httpx.AsyncClient(base_url=gateway_only.base_url) as anonymous:
        for path in ("/v1/tasks", "/auth/state"):
            r = await anonymous.get(path, headers={b"Cookie": b"ordo_session=a.b.1.\xe9"})
            assert r.status_code in (200, 401), (path, r.status_code, r.text)


async def test_names_that_end_in_a_line_break_are_refused_everywhere(gateway_only: System) -> None:
    http = gateway_only.http
    before = await _last_seq(gateway_only)
    _problem(await http.post("/v1/queues/q1%0A:pause"), 422)
    task = {"type": "demo.echo"}
    _problem(await http.post("/v1/tasks:batch", json={"tasks": [{**task, "queue": "default\n"}]}), 422)
    sched = {"cron": "0 0 1 1 *", "task": task}
    _problem(await http.post("/v1/schedules", json={**sched, "id": "sx\n"}), 422)
    _problem(await http.post("/v1/schedules", json={**sched, "task": {**task, "queue": "default\n"}}), 422)
    _problem(await http.post("/v1/schedules", json={**sched, "task": {"type": "demo.echo\n"}}), 422)
    assert await _last_seq(gateway_only) == before


async def test_schedule_changes_that_cannot_fire_or_change_nothing_are_a_422(gateway_only: System) -> None:
    http = gateway_only.http
    before = await _last_seq(gateway_only)
    far = {
        "cron": "59 23 31 12 *",
        "timezone": "America/New_York",
        "start_at": "9999-12-30T00:00:00Z",
        "task": {"type": "demo.echo"},
    }
    _problem(await http.post("/v1/schedules", json=far), 422)
    assert await _last_seq(gateway_only) == before
    created = await http.post("/v1/schedules", json={"cron": "0 0 1 1 *", "task": {"type": "demo.echo"}})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    before = await _last_seq(gateway_only)
    _problem(await http.patch(f"/v1/schedules/{sid}", json={"end_at": "2020-01-01T00:00:00Z"}), 422)
    _problem(await http.patch(f"/v1/schedules/{sid}", json={}), 422)
    _problem(await http.patch(f"/v1/schedules/{sid}", json={"start_at": "9999-12-30T00:00:00Z",
                                                              "timezone": "America/New_York",
                                                              "cron": "59 23 31 12 *"}), 422)  # fmt: skip
    assert await _last_seq(gateway_only) == before


async def test_a_stats_window_before_year_one_is_a_422(gateway_only: System) -> None:
    r = await gateway_only.http.get("/v1/stats", params={"until": "0001-01-01T00:30:00Z"})
    _problem(r, 422)


async def test_a_task_update_to_a_null_payload_is_a_422_not_a_silent_no_op(gateway_only: System) -> None:
    http = gateway_only.http
    sub = (
        await http.post("/v1/tasks", json={"type": "demo.echo", "delay": 3600, "payload": {"a": 1}})
    ).json()
    before = await _last_seq(gateway_only)
    body = _problem(await http.patch(f"/v1/tasks/{sub['id']}", json={"payload": None}), 422)
    assert "null" in body["detail"]
    assert await _last_seq(gateway_only) == before


async def test_an_empty_body_or_a_lone_surrogate_is_named_as_such(gateway_only: System) -> None:
    """msgspec says "Input data was truncated" for both: the answer says what is wrong."""
    http = gateway_only.http
    headers = {"content-type": "application/json"}
    empty = _problem(await http.post("/v1/tasks", content=b"", headers=headers), 422)
    assert "empty" in empty["detail"], empty
    for body in (b'{"type": "demo\\ud800"}', b'{"type": "demo.echo", "payload": "\\udc00"}'):
        lone = _problem(await http.post("/v1/tasks", content=body, headers=headers), 422)
        assert "surrogate" in lone["detail"], lone
    sched = b'{"cron": "\\ud800", "task": {"type": "demo.echo"}}'
    assert (
        "surrogate"
        in _problem(await http.post("/v1/schedules", content=sched, headers=headers), 422)["detail"]
    )


async def test_head_answers_as_get_without_a_body(gateway_only: System) -> None:
    """HEAD fell through to the UI's static files: a 404 for every API route."""
    http = gateway_only.http
    for path in ("/v1/tasks?limit=1", "/healthz", "/readyz", "/v1/queues"):
        get, head = await http.get(path), await http.head(path)
        assert head.status_code == get.status_code == 200, (path, head.status_code)
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    assert (await http.head("/v1/tasks/0190aaaa-0000-7000-8000-000000000000")).status_code == 404
    stream = await http.head("/v1/events/stream")
    assert stream.status_code == 405 and stream.headers["allow"] == "GET"


async def test_a_queue_pause_reads_its_body_a_reason_or_a_422(gateway_only: System) -> None:
    """Its body was never read: any bytes paused the queue, and a reason was dropped."""
    http = gateway_only.http
    before = await _last_seq(gateway_only)
    for body in (
        b'{"role":',
        b'{"reasn": "typo"}',
        b'{"reason": 5}',
        b"[]",
        b'{"reason": "' + b"x" * 501 + b'"}',
    ):
        _problem(await http.post("/v1/queues/oddq:pause", content=body), 422)
    big = b'{"reason": "' + b"x" * 200_000 + b'"}'
    _problem(await http.post("/v1/queues/oddq:pause", content=big), 413)  # read with a limit
    assert await _last_seq(gateway_only) == before  # nothing paused
    r = await http.post("/v1/queues/oddq:pause", json={"reason": "maintenance until 14:00"})
    assert r.status_code == 202 and r.json()["paused"], r.text
    event = await gateway_only.nc.jetstream().get_msg(sj.EVENTS_STREAM, r.json()["seq"])
    assert b"maintenance until 14:00" in (event.data or b"")
    assert (await http.post("/v1/queues/oddq:resume")).status_code == 202
    assert (await http.post("/v1/queues/oddq:pause")).status_code == 202  # no body: no reason
    assert (await http.post("/v1/queues/oddq:resume")).status_code == 202


async def test_a_query_parameter_an_endpoint_does_not_take_is_a_422(gateway_only: System) -> None:
    """A misspelt filter was dropped: every row came back as if unfiltered."""
    http = gateway_only.http
    for path in (
        "/v1/dead-letters?before=2000-01-01T00:00:00Z",
        "/v1/schedules?status=paused",
        "/v1/tasks?stauts=failed",
        "/v1/events/stream?types=succeeded",
    ):
        body = _problem(await http.get(path), 422)
        assert "unknown query parameter" in body["detail"], body
    body = _problem(await http.get("/v1/dead-letters?before=2000-01-01T00:00:00Z"), 422)
    assert "dead_before" in body["detail"]  # it says what the endpoint takes
    ok = await http.get("/v1/dead-letters?dead_before=2000-01-01T00:00:00Z&limit=5")
    assert ok.status_code == 200 and ok.json()["items"] == []
    assert (await http.get("/v1/tasks?status=failed&limit=1")).status_code == 200


async def test_a_misspelt_task_action_is_a_404_naming_the_actions(gateway_only: System) -> None:
    r = await gateway_only.http.post("/v1/tasks", json={"type": "demo.echo", "delay": 3600})
    task_id = r.json()["id"]
    body = _problem(await gateway_only.http.post(f"/v1/tasks/{task_id}:cancle"), 404)
    assert "cancel" in body["detail"] and "unarchive" in body["detail"], body
    assert (await gateway_only.http.post(f"/v1/tasks/{task_id}:cancel")).status_code == 202


async def test_a_link_scanners_or_probes_added_parameters_are_not_refused(gateway_only: System) -> None:
    """Only the API (`/v1/…`) checks parameter names: a sign-in link a mail scanner extended, or
    a probe's cache-buster, keep working."""
    http = gateway_only.http
    assert (await http.get("/healthz?_=123")).status_code == 200
    assert (await http.get("/metrics?_=123")).status_code == 200
    r = await http.get("/auth/token?t=not-a-token&utm_source=mail", follow_redirects=False)
    assert r.status_code != 422, r.text


async def test_a_schedule_read_waits_for_a_task_writes_seq_too(gateway_only: System) -> None:
    """A client sends the `seq` of its last write on every read; the last may be a task's, past
    every schedule event: that read was a 422 ("beyond the end of the event log")."""
    http = gateway_only.http
    made = await http.post("/v1/schedules", json={"cron": "0 5 * * *", "task": {"type": "demo.echo"}})
    assert made.status_code == 201, made.text
    later = await http.post("/v1/tasks", json={"type": "demo.echo", "delay": 3600})
    r = await http.get(f"/v1/schedules/{made.json()['id']}", params={"min_seq": later.json()["seq"]})
    assert r.status_code == 200, r.text
