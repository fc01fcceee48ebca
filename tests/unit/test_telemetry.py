"""Tracing set-up: only the OTLP/HTTP exporter ships, so a gRPC configuration is refused by name."""

from __future__ import annotations

import pytest

from shared.telemetry import setup_tracing


@pytest.mark.parametrize("protocol", ["grpc", "http/json"])
def test_an_otlp_protocol_other_than_http_protobuf_is_refused(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    with pytest.raises(ValueError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL='.+' is not supported.*http/protobuf"):
        setup_tracing("svc")


def test_the_protocol_matters_only_when_exporting(monkeypatch: pytest.MonkeyPatch) -> None:
    # No endpoint, no export: a stray protocol variable must not stop a service from starting.
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    provider = setup_tracing("svc")
    with provider.get_tracer("test").start_as_current_span("span") as span:
        assert span.get_span_context().is_valid
    provider.shutdown()
