"""A canfar pool configured only by the skaha service's IVOA identifier and a registry: through the
bus, services as processes, the fake registry and the fake skaha on 127.0.0.1 (issue 15's acceptance
for registry discovery)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from services.launcher.platforms.canfar.platform import session_name
from shared.client import BrokerClient
from shared.ops.embedded import EmbeddedBroker
from tests.e2e.helpers import HAPPY_PHASES
from tests.e2e.test_canfar_e2e import TOKEN, container_request, submit_and_accept, texts
from tests.fakes.registry import FakeRegistry
from tests.fakes.serve import serve_asgi
from tests.fakes.skaha import FakeSkaha, SkahaConfig

SKAHA = "ivo://canfar.cam.uksrc.org/skaha"


@pytest.fixture
def fake() -> FakeSkaha:
    return FakeSkaha(SkahaConfig(tokens={TOKEN: "alice"}, pending_s=0.3, run_s=1.0, term_s=0.3))


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def discovering_broker(
    fake: FakeSkaha, registry: FakeRegistry, broker_factory: Callable[..., EmbeddedBroker]
) -> Iterator[EmbeddedBroker]:
    skaha_url, stop_skaha = serve_asgi(fake)
    registry_url, stop_registry = serve_asgi(registry)
    registry.entries[SKAHA] = f"{skaha_url}/skaha/capabilities"
    try:
        # No EB_CANFAR_URL: the launcher finds skaha through the registry.
        yield broker_factory(
            EB_POOL_PLATFORM="canfar",
            EB_POOL_NAME="canfar",
            EB_CANFAR_SERVICE=SKAHA,
            EB_CANFAR_REGISTRY=f"{registry_url}/reg/resource-caps",
            EB_CANFAR_TOKEN=TOKEN,
            EB_CANFAR_POLL_S="0.2",
            EB_CANFAR_BACKOFF_S="0.05",
        )
    finally:
        stop_registry()
        stop_skaha()


async def run_ok(client: BrokerClient, fake: FakeSkaha) -> None:
    session_id = await submit_and_accept(client, container_request("ok"))
    events = await client.wait_until_done(session_id, timeout=40)
    assert tuple(e.phase for e in events) == HAPPY_PHASES, texts(events)
    assert "completed" in texts(events)
    posted = fake.recorded("POST", "/skaha/v1/session")
    assert any(("name", session_name(session_id)) in r["form"] for r in posted)


async def test_a_pool_named_by_ivoid_and_registry_runs_sessions_on_the_fake_skaha(
    discovering_broker: EmbeddedBroker, fake: FakeSkaha, registry: FakeRegistry
) -> None:
    async with BrokerClient(discovering_broker.url, discovering_broker.login("alice")) as client:
        await asyncio.gather(run_ok(client, fake), run_ok(client, fake))
    # Both sessions' calls used one reading of each document.
    assert len(registry.recorded("GET", "/reg/resource-caps")) == 1
    assert len(fake.recorded("GET", "/skaha/capabilities")) == 1
    assert all("authorization" not in r["headers"] for r in registry.recorded())
