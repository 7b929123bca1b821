"""OpenTelemetry in one place: tracer set-up, and W3C trace context in NATS message headers.

Nothing else imports OpenTelemetry's propagation API, and user handler code never does. With no
`OTEL_EXPORTER_OTLP_ENDPOINT` (and no provider installed by a test) the global tracer is the API's
no-op tracer: spans cost next to nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("ordo.telemetry")
_propagator = TraceContextTextMapPropagator()
TRACER_NAME = "ordo"


def setup_tracing(service_name: str) -> None:
    """Export spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set; otherwise do nothing."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:  # the exporter is an optional extra
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed")
        return
    service = os.environ.get("OTEL_SERVICE_NAME", service_name)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


_tracer: tuple[object, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """Ordo's tracer, made once per installed provider (spans are on every hot path)."""
    global _tracer  # noqa: PLW0603 - a cache of the global provider's tracer
    provider = trace.get_tracer_provider()
    if _tracer is None or _tracer[0] is not provider:
        _tracer = (provider, trace.get_tracer(TRACER_NAME))
    return _tracer[1]


def inject(headers: MutableMapping[str, str]) -> None:
    """Write the current span's context (traceparent/tracestate) into message headers."""
    if _no_provider() and not _carried:
        return  # no span can be current: nothing to write (the lookup is ~2 % of a worker's CPU)
    _propagator.inject(headers)


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    return _propagator.extract(dict(headers or {}))


def span(
    name: str,
    parent_headers: Mapping[str, str] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    **attributes: Any,
) -> AbstractContextManager[Span]:
    """A span, child of the trace carried in `parent_headers` if given, else of the current one.

    Without a tracer provider (no exporter configured) and without a trace to carry on, this is a
    shared no-op context: the API's no-op tracer would make the same invalid span current, at ~8 % of
    a worker's CPU per task (a generator, a context attach and detach per span)."""
    if (
        _no_provider()
        and (parent_headers is None or "traceparent" not in parent_headers)
        and not (_carried and trace.get_current_span().get_span_context().is_valid)
    ):
        return _NO_SPAN
    return _span(name, parent_headers, kind, attributes)


# Whether this process ever made a span current (`_span`). Without a tracer provider that is the only
# way a valid span can be current in Ordo's code (a trace carried on from a message's headers), so
# until then `span` and `inject` skip the context lookups that would find none.
_carried = False


_NO_SPAN = nullcontext(trace.INVALID_SPAN)
# The API keeps the installed provider in a module global that `get_tracer_provider` reads after an
# environment lookup (the provider may be named there); read it directly when that lookup cannot
# matter, i.e. unless the variable is set or this API version has no such global.
_READ_GLOBAL = "OTEL_PYTHON_TRACER_PROVIDER" not in os.environ and hasattr(trace, "_TRACER_PROVIDER")


def _no_provider() -> bool:
    """No tracer provider installed: what `isinstance(trace.get_tracer_provider(),
    ProxyTracerProvider)` answers, without the environment lookup that call makes every time no
    provider is set (a few % of a worker's CPU at W1's rate)."""
    if _READ_GLOBAL:
        return trace._TRACER_PROVIDER is None
    return isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextmanager
def _span(
    name: str, parent_headers: Mapping[str, str] | None, kind: SpanKind, attributes: dict[str, Any]
) -> Iterator[Span]:
    global _carried  # noqa: PLW0603 - once set, stays set for the process
    _carried = True
    ctx = extract(parent_headers) if parent_headers is not None else None
    with tracer().start_as_current_span(name, context=ctx, kind=kind) as current:
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(f"ordo.{key}", value)
        yield current


def trace_id_of(headers: Mapping[str, str] | None) -> str | None:
    """The 32-hex trace id in a traceparent header, if any."""
    value = (headers or {}).get("traceparent", "")
    parts = value.split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1]
    return None
