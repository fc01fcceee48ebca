"""OpenTelemetry set-up: one TracerProvider per service process, OTLP export only when configured."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

OTLP_PROTOCOL = "http/protobuf"


def tracer_provider(service_name: str) -> TracerProvider:
    """A provider for a service's spans that exports nothing yet and is not the global one.

    Building a service creates one of these, so that building (for its wiring, say) starts no
    exporter thread and changes no process-wide state; ``start_tracing`` does that when it runs.
    """
    return TracerProvider(resource=Resource.create({"service.name": service_name}))


def start_tracing(provider: TracerProvider) -> None:
    """Export the provider's spans over OTLP when that is configured, and make it the global one.

    Spans always exist (session events carry trace ids); they leave the process only with OTLP set.
    Tracers already taken from ``provider`` export too: processors are shared by its tracers.
    """
    exporting = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOL)
    # Only the HTTP exporter is a dependency (gRPC would pull in grpcio for every install): a
    # collector configured for gRPC is refused at start-up rather than failing on every export.
    if exporting and protocol != OTLP_PROTOCOL:
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: the broker exports OTLP "
            f"over HTTP only; set it to {OTLP_PROTOCOL!r} (or unset it) and use the collector's "
            "HTTP port (4318)"
        )
    if exporting:
        # Imported only when exporting: it costs a quarter of a second of start-up.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def setup_tracing(service_name: str) -> TracerProvider:
    """``tracer_provider`` and ``start_tracing`` at once, for code that runs as soon as it is made."""
    provider = tracer_provider(service_name)
    start_tracing(provider)
    return provider


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def trace_id_from_headers(headers: dict[str, str]) -> str | None:
    """The trace id inside a W3C ``traceparent`` header, if there is one."""
    parts = headers.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 else None
