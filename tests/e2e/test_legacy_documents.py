"""Older client documents through the bus, the services as processes (issue 15, item 5): each legacy
generation gets YES with a WARN naming its form, and its session runs to COMPLETED on the local
platform; a document that mixes generations gets a specific NO."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.client import BrokerClient, BrokerRefused, read_request_file
from shared.models import OfferSetResponse
from shared.ops.embedded import EmbeddedBroker
from tests.e2e.helpers import HAPPY_PHASES

REQUESTS = Path(__file__).resolve().parents[1] / "data" / "requests"
MALFORMED = Path(__file__).resolve().parents[1] / "data" / "malformed"
TRANSLATED = "urn:legacy-form-translated"
ATTEMPTS = 15


@pytest.fixture
async def alice(broker: EmbeddedBroker) -> AsyncIterator[BrokerClient]:
    """Alice's client. On a loaded machine the auth callout may answer a first login after the
    server's 2 s limit (the login is then refused): tries for up to 30 s, as a user would retry."""
    for attempt in range(ATTEMPTS):
        client = BrokerClient(broker.url, broker.login("alice"))
        try:
            await client.connect()
        except BrokerRefused:
            if attempt == ATTEMPTS - 1:
                raise
            await asyncio.sleep(2)
            continue
        try:
            yield client
        finally:
            await client.close()
        return


def messages(offerset: OfferSetResponse) -> list[tuple[str, str, str]]:
    return (
        [(m.kind, str(m.level), m.message or "") for m in (offerset.meta.messages or [])]
        if offerset.meta
        else []
    )


EARLIER = "the earlier form (before Nov 2025)"
V1_0 = "the v1.0 form (Nov 2025 to Mar 2026)"
LEGACY_DOCUMENTS = [
    ("legacy-earlier-form-notebook.yaml", EARLIER, "'computer' is now 'compute'"),
    ("legacy-v1.0-top-level-volumes.yaml", V1_0, "(scratch-volume)"),
]


async def test_legacy_generations_run_to_completed_and_mixed_ones_get_a_no(
    broker: EmbeddedBroker, alice: BrokerClient
) -> None:
    # One broker for all: each start costs more than the sessions themselves.
    mixed = await alice.submit((MALFORMED / "mixed-compute-and-computer.yaml").read_bytes())
    assert mixed.result == "NO"
    assert [kind for kind, _, _ in messages(mixed)] == ["urn:mixed-generations"]

    for name, form, change in LEGACY_DOCUMENTS:
        offerset = await alice.submit(read_request_file(REQUESTS / name))
        assert offerset.result == "YES", (name, messages(offerset))
        warns = [text for kind, level, text in messages(offerset) if kind == TRANSLATED and level == "WARN"]
        assert any(form in text and change in text for text in warns), (name, messages(offerset))
        offer = (offerset.offers or [])[0]
        # The answer is schema 1.0.7 whatever the request's generation.
        assert offer.compute is not None
        assert offer.compute.kind.endswith("kinds/compute/simple-compute-resource.yaml")
        session_id = offer.meta.uuid if offer.meta else None
        assert session_id is not None
        assert (await alice.accept(session_id)).applied
        events = await alice.wait_until_done(session_id, timeout=120)
        phases = tuple(event.phase for event in events)
        assert phases[-1] == "COMPLETED", (name, [(e.phase, [m.message for m in e.messages]) for e in events])
        assert set(phases) <= set(HAPPY_PHASES)
    assert broker.dead_services() == []
