"""A real client's view: pyvo's VOSI parser (pedantic: every warning an error) reads the broker's
capabilities and availability as the broker means them."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from pyvo.io.vosi import parse_availability, parse_capabilities

from shared.ivoa import documents

SERVICE = documents.BrokerService(
    "ivo://example.org/execution-broker",
    "https://broker.example.org",
    documents.security_methods(oidc=True, public_reads=True),
)


def test_pyvo_reads_the_capabilities() -> None:
    parsed = parse_capabilities(io.BytesIO(documents.capabilities(SERVICE)), pedantic=True)
    seen = {
        c.standardid: [
            (i.accessurls[0].content, i.accessurls[0].use, [m.standardid for m in i.securitymethods])
            for i in c.interfaces
        ]
        for c in parsed
    }
    assert seen == {
        documents.VOSI_CAPABILITIES: [("https://broker.example.org/capabilities", "full", [])],
        documents.VOSI_AVAILABILITY: [("https://broker.example.org/availability", "full", [])],
        documents.EXECUTION_BROKER: [
            ("https://broker.example.org", "base", [documents.BASIC_AA, documents.BEARER_TOKEN, None])
        ],
    }


def test_pyvo_reads_the_availability() -> None:
    up = documents.Availability(True, datetime(2026, 12, 2, 15, tzinfo=UTC))
    down = documents.Availability(False, notes=("the scheduler service did not answer",))
    parsed_up = parse_availability(io.BytesIO(documents.availability(up)), pedantic=True)
    parsed_down = parse_availability(io.BytesIO(documents.availability(down)), pedantic=True)
    assert (parsed_up.available, parsed_up.upsince) == (True, "2026-12-02T15:00:00Z")
    assert (parsed_down.available, parsed_down.upsince, parsed_down.notes) == (
        False,
        None,
        ["the scheduler service did not answer"],
    )
