"""/metrics after a small workload: task counters, histograms, gauges and HTTP latency."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from ordo.infra.command_handler import CommandHandler
from ordo.infra.settings import Settings
from tests.conftest import System, run_system
from tests.helpers import eventually


def _value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_metrics_count_a_small_workload(system: System) -> None:
    tenant = system.settings.tenant
    ids = []
    for i in range(3):
        r = await system.http.post("/v1/tasks", json={"type": "demo.echo", "payload": i})
        ids.append(r.json()["id"])
    r = await system.http.post("/v1/tasks", json={"type": "demo.fail", "max_attempts": 1})
    ids.append(r.json()["id"])

    async def settled() -> str | None:
        text = (await system.http.get("/metrics")).text
        ok = _value(text, "ordo_tasks_succeeded_total", tenant=tenant, type="demo.echo") == 3
        failed = _value(text, "ordo_tasks_failed_total", tenant=tenant, type="demo.fail") == 1
        return text if ok and failed else None

    text = await eventually(settled, timeout=60, what="metrics to count the workload")
    assert _value(text, "ordo_tasks_submitted_total", tenant=tenant, queue="default", type="demo.echo") == 3
    assert _value(text, "ordo_tasks_started_total", tenant=tenant, type="demo.echo") == 3
    assert _value(text, "ordo_tasks_dead_lettered_total", tenant=tenant, type="demo.fail") == 1
    assert _value(text, "ordo_task_duration_seconds_count", tenant=tenant, type="demo.echo") == 3
    assert _value(text, "ordo_task_queue_wait_seconds_count", tenant=tenant, type="demo.echo") == 3
    assert _value(text, "ordo_queue_depth", tenant=tenant, queue="default", status="succeeded") == 3
    assert _value(text, "ordo_projection_lag_events", projection="tasks") is not None
    assert _value(text, "ordo_tasks_in_flight", tenant=tenant, queue="default") == 0  # a sample, not a gap
    assert _value(text, "ordo_workers", status="online") == 1  # the system's one worker
    assert (
        _value(text, "ordo_http_request_duration_seconds_count", route="/v1/tasks", method="POST") is not None
    )
    assert "# TYPE ordo_task_duration_seconds histogram" in text


@pytest.fixture
async def two_types(settings: Settings, nc: NATS, handler: CommandHandler) -> AsyncIterator[System]:
    """No worker; /metrics with task series of their own for the two busiest types."""
    async with run_system(settings.with_(metrics_types=2), nc, handler, worker=False) as sys_:
        yield sys_


async def test_the_task_types_beyond_the_busiest_are_summed_under_other(two_types: System) -> None:
    """Every distinct type added its series to every scrape for good: one batch of 10,000 types made
    /metrics about 40 MB. Beyond `ORDO_METRICS_TYPES` types they are summed as type="(other)"."""
    tenant = two_types.settings.tenant
    counts = {"busy.a": 3, "busy.b": 2, "rare.c": 1, "rare.d": 1, "rare.e": 1}
    tasks = [{"type": t, "delay": 3600} for t, n in counts.items() for _ in range(n)]
    assert (await two_types.http.post("/v1/tasks:batch", json={"tasks": tasks})).status_code == 202

    async def settled() -> str | None:
        text = (await two_types.http.get("/metrics")).text
        other = _value(text, "ordo_tasks_submitted_total", tenant=tenant, type="(other)")
        return text if other == 3 else None

    text = await eventually(settled, timeout=60, what="the rare types summed")
    assert _value(text, "ordo_tasks_submitted_total", tenant=tenant, type="busy.a") == 3
    assert _value(text, "ordo_tasks_submitted_total", tenant=tenant, type="busy.b") == 2
    types = set(re.findall(r'ordo_tasks_submitted_total\{[^}]*type="([^"]*)"', text))
    assert types == {"busy.a", "busy.b", "(other)"}, types
