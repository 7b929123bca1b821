"""One task followed through a trace: submit, append, attempt, handler and projection spans share one
trace id (in-memory exporter), and that trace id is on the task's timeline."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import System
from tests.helpers import eventually


@pytest.fixture
def spans() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)  # once per process; later tests reuse it
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_a_task_is_one_trace_from_submit_to_projection(
    spans: InMemorySpanExporter, system: System
) -> None:
    r = await system.http.post("/v1/tasks", json={"type": "demo.echo", "payload": {"traced": True}})
    task_id = r.json()["id"]

    async def done() -> list[dict[str, Any]] | None:
        events = (await system.http.get(f"/v1/tasks/{task_id}/events")).json().get("events", [])
        return events if [e["type"] for e in events][-1:] == ["succeeded"] else None

    events = await eventually(done, what="task succeeded and projected")
    submit = [
        s
        for s in spans.get_finished_spans()
        if s.name == "ordo.submit" and s.attributes and s.attributes.get("ordo.task_id") == task_id
    ]
    assert len(submit) == 1
    trace_id = submit[0].context.trace_id

    async def all_spans() -> set[str] | None:
        names = {s.name for s in spans.get_finished_spans() if s.context.trace_id == trace_id}
        wanted = {"ordo.submit", "ordo.attempt", "ordo.handler", "ordo.project"}
        return names if wanted <= names else None

    await eventually(all_spans, what="every span in the one trace")
    hex_id = f"{trace_id:032x}"
    for event in events:
        assert hex_id in event["meta"].get("traceparent", ""), event


def test_spans_are_the_shared_no_op_until_a_provider_is_installed() -> None:
    """Without a provider a span costs nothing (the shared no-op context); once one is installed,
    at any time, spans are recorded. In a process of its own: the provider is process-global."""
    import subprocess
    import sys

    code = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from ordo.infra import telemetry

assert telemetry.span("a") is telemetry._NO_SPAN
provider = TracerProvider()
exporter = InMemorySpanExporter()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
with telemetry.span("b", task_id="t1"):
    pass
assert [s.name for s in exporter.get_finished_spans()] == ["b"], exporter.get_finished_spans()
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_without_a_provider_a_carried_trace_still_goes_on_into_the_next_event() -> None:
    """Without a provider, `inject` writes nothing until a trace is carried on from a message; inside
    the span that carries it, the next event's headers get that same trace. Own process, as above."""
    import subprocess
    import sys

    code = """
from ordo.infra import telemetry

tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
headers = {}
telemetry.inject(headers)
assert headers == {}, headers
with telemetry.span("ordo.attempt", parent_headers={"traceparent": tp}):
    telemetry.inject(headers)
assert headers.get("traceparent", "").split("-")[1] == tp.split("-")[1], headers
after = {}
telemetry.inject(after)
assert after == {}, after
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
