"""/metrics after a small workload: task counters, histograms, gauges and HTTP latency."""

from __future__ import annotations

import re

from tests.conftest import System
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
    assert (
        _value(text, "ordo_http_request_duration_seconds_count", route="/v1/tasks", method="POST") is not None
    )
    assert "# TYPE ordo_task_duration_seconds histogram" in text
