"""The services' entry points: each names a `ServiceEntry`, whose wiring tools read without running
anything (no connection, no file, no thread, no process-wide tracing)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from opentelemetry import trace

from shared.ops.embedded import SERVICES
from shared.service import ServiceEntry, UnknownService, installed_services, load_service
from shared.settings import Settings


def test_every_service_is_installed_as_an_entry() -> None:
    entries = installed_services()
    assert sorted(entries) == sorted(SERVICES)
    for name, entry in entries.items():
        assert isinstance(entry, ServiceEntry)
        assert entry.name == name
        assert load_service(name) is entry


def test_an_unknown_service_is_named_with_the_installed_ones() -> None:
    with pytest.raises(UnknownService, match=r"'nope'.*installed: launcher, offers, scheduler"):
        load_service("nope")


def test_reading_a_wiring_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With OTLP configured, starting tracing would start an exporter thread: building must not.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    settings = Settings(data_dir=tmp_path / "data")
    threads = {t.ident for t in threading.enumerate()}
    provider = trace.get_tracer_provider()
    for name, entry in installed_services().items():
        wiring = entry.wiring(settings)
        assert wiring.service == name
        assert wiring.consumers, name
    assert {t.ident for t in threading.enumerate()} == threads
    assert trace.get_tracer_provider() is provider
    assert not (tmp_path / "data").exists()
