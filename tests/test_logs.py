"""Structured logs: one JSON object per line with task fields and the current trace id."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from ordo.infra.logs import JsonFormatter, TextFormatter


def test_json_log_lines_carry_task_fields_and_trace_id() -> None:
    record = logging.LogRecord("ordo.worker", logging.INFO, __file__, 1, "attempt %s done", (2,), None)
    record.task_id = "abc"
    record.attempt = 2
    record.worker_id = "w1"
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("s") as span:
        line = JsonFormatter().format(record)
        trace_id = f"{span.get_span_context().trace_id:032x}"
    out = json.loads(line)
    assert out["msg"] == "attempt 2 done" and out["level"] == "info"
    assert (out["task_id"], out["attempt"], out["worker_id"]) == ("abc", 2, "w1")
    assert out["trace_id"] == trace_id


def test_text_log_lines_say_which_task_they_are_about() -> None:
    """Only the JSON lines named the task: a busy worker's "handler timed out" could be any task's."""
    record = logging.LogRecord("ordo.worker", logging.WARNING, __file__, 1, "handler timed out", (), None)
    record.task_id = "abc"
    record.attempt = 2
    assert TextFormatter().format(record).endswith("handler timed out [task=abc attempt=2]")
    plain = logging.LogRecord("ordo.up", logging.INFO, __file__, 1, "worker pool at 1", (), None)
    assert TextFormatter().format(plain).endswith("ordo.up: worker pool at 1")
