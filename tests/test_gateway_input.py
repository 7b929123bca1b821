"""Bad input gets a 4xx problem+json and appends nothing to the event log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import System
from tests.helpers import eventually


async def _last_seq(system: System) -> int:
    info = await system.nc.jetstream().stream_info("ORDO_EVENTS")
    return int(info.state.last_seq)


BAD_BODIES: list[tuple[str, bytes, int]] = [
    ("malformed json", b'{"type": "demo.echo",', 422),
    ("not an object", b"[1, 2]", 422),
    ("invalid utf-8", b'{"type": "\xff\xfe"}', 422),
    ("unknown field", b'{"type": "demo.echo", "colour": "red"}', 422),
    ("wrong type", b'{"type": 42}', 422),
    ("empty type", b'{"type": ""}', 422),
    ("missing type", b'{"payload": {}}', 422),
    ("priority too high", b'{"type": "demo.echo", "priority": 10}', 422),
    ("bad queue name", b'{"type": "demo.echo", "queue": "Bad.Queue"}', 422),
    # Python's `$` also matches before a final line break: names must end where their pattern does.
    ("queue name with a final line break", b'{"type": "demo.echo", "queue": "default\\n"}', 422),
    ("type with a final line break", b'{"type": "demo.echo\\n"}', 422),
    ("run_at without offset", b'{"type": "demo.echo", "run_at": "2030-01-01T10:00:00"}', 422),
    ("run_at not a date", b'{"type": "demo.echo", "run_at": "tomorrow"}', 422),
    (
        "run_at and delay",
        b'{"type": "demo.echo", "run_at": "2030-01-01T10:00:00Z", "delay": 5}',
        422,
    ),
    ("negative delay", b'{"type": "demo.echo", "delay": -1}', 422),
    ("delay past a century", b'{"type": "demo.echo", "delay": 3155760001}', 422),
    ("zero max_attempts", b'{"type": "demo.echo", "max_attempts": 0}', 422),
    # Issue 12 part A (audit F1, F5): what PostgreSQL could not store never reaches the log.
    ("invalid utf-8 in payload", b'{"type": "demo.echo", "payload": "\xff\xfe"}', 422),
    ("lone surrogate in payload", b'{"type": "demo.echo", "payload": "\\ud800"}', 422),
    ("NUL in a tag", b'{"type": "demo.echo", "tags": ["a\\u0000"]}', 422),
    ("NUL in idempotency_key", b'{"type": "demo.echo", "idempotency_key": "a\\u0000"}', 422),
    ("payload 65 deep", b'{"type": "demo.echo", "payload": ' + b"[" * 65 + b"]" * 65 + b"}", 422),
    ("payload 1000 deep", b'{"type": "demo.echo", "payload": ' + b"[" * 1000 + b"]" * 1000 + b"}", 422),
]


@pytest.mark.parametrize(("case", "body", "status"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
async def test_bad_input_is_rejected_and_appends_nothing(
    gateway_only: System, case: str, body: bytes, status: int
) -> None:
    before = await _last_seq(gateway_only)
    r = await gateway_only.http.post("/v1/tasks", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, (case, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == status and problem["type"].startswith("https://")
    assert problem["detail"]
    assert await _last_seq(gateway_only) == before


async def test_payload_over_the_limit_is_413_and_appends_nothing(gateway_only: System) -> None:
    limit = gateway_only.settings.max_payload_bytes
    before = await _last_seq(gateway_only)
    big = b'{"type": "demo.echo", "payload": "' + b"x" * limit + b'"}'
    r = await gateway_only.http.post("/v1/tasks", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")
    assert await _last_seq(gateway_only) == before


async def test_body_over_the_limit_is_rejected_while_streaming(gateway_only: System) -> None:
    limit = gateway_only.settings.max_body_bytes
    before = await _last_seq(gateway_only)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"type": "demo.echo", "payload": "'
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536

    r = await gateway_only.http.post(
        "/v1/tasks", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert await _last_seq(gateway_only) == before


async def test_unknown_task_is_404_problem(gateway_only: System) -> None:
    for path in ("/v1/tasks/doesnotexist", "/v1/tasks/doesnotexist/events", "/v1/tasks/bad%20id"):
        r = await gateway_only.http.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_an_unknown_status_or_event_type_in_a_filter_is_422_naming_it(gateway_only: System) -> None:
    """A misspelt filter is named in a 422, not answered with an empty list or a silent stream."""
    for path, params, named in (
        ("/v1/tasks", {"status": "succeded"}, "succeded"),
        ("/v1/tasks", {"status": "failed,nope"}, "nope"),
        ("/v1/events/stream", {"status": "done"}, "done"),
        ("/v1/events/stream", {"type": "succeeded,finished"}, "finished"),
        ("/v1/events/stream", {"type": "succeeded", "status": "queued,ok"}, "ok"),
    ):
        r = await gateway_only.http.get(path, params=params)
        assert r.status_code == 422, (path, params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "unknown" in r.json()["detail"] and named in r.json()["detail"], r.text
    r = await gateway_only.http.get("/v1/tasks", params={"status": "failed,succeeded"})
    assert r.status_code == 200, r.text


async def test_a_time_filter_without_a_time_zone_is_422(gateway_only: System) -> None:
    """`2026-01-01T00:00:00` could be any of 24 instants: the task list asks for the offset, as the
    dead letters' list does."""
    for name in ("created_after", "created_before", "updated_after", "updated_before"):
        r = await gateway_only.http.get("/v1/tasks", params={name: "2026-01-01T00:00:00"})
        assert r.status_code == 422, (name, r.text)
        assert name in r.json()["detail"] and "time zone" in r.json()["detail"]
        r = await gateway_only.http.get("/v1/tasks", params={name: "2026-01-01T00:00:00Z"})
        assert r.status_code == 200, (name, r.text)


async def test_good_submit_is_202_and_readable(gateway_only: System) -> None:
    r = await gateway_only.http.post("/v1/tasks", json={"type": "demo.echo", "payload": {"x": 1}})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued"
    assert r.headers["location"] == f"/v1/tasks/{body['id']}"


async def test_a_delay_of_400_days_is_accepted_and_scheduled_that_far_ahead(gateway_only: System) -> None:
    """Any horizon (issue 13): timers never age out, so the API takes delays beyond a year."""
    before = datetime.now(UTC)
    r = await gateway_only.http.post("/v1/tasks", json={"type": "demo.echo", "delay": 400 * 86400})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "scheduled", body
    path, seq = f"/v1/tasks/{body['id']}", body["seq"]

    async def read() -> dict[str, Any] | None:
        got = await gateway_only.http.get(path, params={"min_seq": seq})
        return None if got.status_code == 503 else dict(got.json())

    task = await eventually(read, timeout=60, what="the task in the read model")
    run_at = datetime.fromisoformat(task["run_at"])
    assert before + timedelta(days=400) <= run_at <= datetime.now(UTC) + timedelta(days=400)
