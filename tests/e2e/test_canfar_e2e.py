"""The canfar platform through the bus: real services as processes, the fake skaha on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from services.launcher.platforms.canfar.platform import session_name
from shared.client import BrokerClient
from shared.messages import SessionEvent
from shared.models import DOCKER_CONTAINER_KIND, SIMPLE_COMPUTE_KIND
from shared.ops.embedded import EmbeddedBroker
from tests.e2e.helpers import HAPPY_PHASES
from tests.fakes.serve import serve_asgi
from tests.fakes.skaha import FakeSkaha, SkahaConfig

TOKEN = "e2e-token-0c2d9f"
IMAGE = "images.canfar.net/skaha/terminal:1.1.2"
DIGEST = "sha256:" + "b" * 64  # what the fake's /image lists for IMAGE


@pytest.fixture
def fake() -> FakeSkaha:
    config = SkahaConfig(tokens={TOKEN: "alice"}, pending_s=0.3, run_s=1.0, fail_after_s=0.5, term_s=0.3)
    return FakeSkaha(config)


@pytest.fixture
def canfar_broker(fake: FakeSkaha, broker_factory: Callable[..., EmbeddedBroker]) -> Iterator[EmbeddedBroker]:
    base_url, stop = serve_asgi(fake)
    try:
        yield broker_factory(
            EB_POOL_PLATFORM="canfar",
            EB_POOL_NAME="canfar",
            EB_CANFAR_URL=f"{base_url}/skaha",
            EB_CANFAR_TOKEN=TOKEN,
            EB_CANFAR_POLL_S="0.2",
            EB_CANFAR_BACKOFF_S="0.05",
        )
    finally:
        stop()


def container_request(scenario: str, **env: str) -> dict[str, Any]:
    return {
        "executable": {
            "kind": DOCKER_CONTAINER_KIND,
            "meta": {"name": f"canfar-{scenario}"},
            "image": {"locations": [IMAGE], "digest": DIGEST},
            "command": ["python", "-c", "print(42)"],
            "environment": {"FAKE_SCENARIO": scenario, **env},
        },
        "compute": {
            "kind": SIMPLE_COMPUTE_KIND,
            "cores": {"min": 1, "max": 1},
            "memory": {"min": 1, "max": 1},
        },
        "schedule": {"requested": {"duration": "PT2M"}},
    }


async def submit_and_accept(client: BrokerClient, request: dict[str, Any]) -> str:
    offerset = await client.submit(request)
    assert offerset.result == "YES", offerset
    assert offerset.offers and offerset.offers[0].meta
    session_id = offerset.offers[0].meta.uuid
    assert session_id is not None
    assert (await client.accept(session_id)).applied
    return session_id


def texts(events: list[SessionEvent]) -> str:
    return "\n".join(m.message or "" for e in events for m in e.messages)


def skaha_id(fake: FakeSkaha, session_id: str) -> str:
    (found,) = [s.id for s in fake.sessions.values() if s.name == session_name(session_id)]
    return found


async def run_ok(client: BrokerClient, fake: FakeSkaha) -> None:
    session_id = await submit_and_accept(client, container_request("ok"))
    events = await client.wait_until_done(session_id, timeout=40)
    assert tuple(e.phase for e in events) == HAPPY_PHASES, texts(events)
    assert "completed" in texts(events)
    assert "log" in events[-1].outputs
    posted = fake.recorded("POST", "/skaha/v1/session")
    form = next(r["form"] for r in posted if ("name", session_name(session_id)) in r["form"])
    assert ("type", "headless") in form and ("image", IMAGE) in form


async def run_failing(client: BrokerClient, fake: FakeSkaha) -> None:
    session_id = await submit_and_accept(client, container_request("fail_exit"))
    events = await client.wait_until_done(session_id, timeout=40)
    assert events[-1].phase == "FAILED", [e.phase for e in events]
    reason = texts(events)
    assert "ended Failed: BackoffLimitExceeded" in reason and "exited with code 3" in reason


async def run_cancelled(client: BrokerClient, fake: FakeSkaha) -> None:
    session_id = await submit_and_accept(client, container_request("ok", FAKE_RUN_S="forever"))
    async for event in client.events(session_id, idle_timeout=40):
        assert event.phase not in ("COMPLETED", "FAILED", "CANCELLED"), texts([event])
        if event.phase == "RUNNING":
            break
    # RUNNING is published once the session is created; wait until CANFAR runs it too.
    deadline = time.monotonic() + 20
    while fake.status(fake.sessions[skaha_id(fake, session_id)]) != "Running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert (await client.cancel(session_id)).applied
    events = await client.wait_until_done(session_id, timeout=40)
    assert events[-1].phase == "CANCELLED", [e.phase for e in events]
    assert fake.recorded("DELETE", f"/skaha/v1/session/{skaha_id(fake, session_id)}")


async def test_canfar_sessions_through_the_bus(canfar_broker: EmbeddedBroker, fake: FakeSkaha) -> None:
    async with BrokerClient(canfar_broker.url, canfar_broker.login("alice")) as client:
        await asyncio.gather(run_ok(client, fake), run_failing(client, fake), run_cancelled(client, fake))
    assert all(r["headers"]["authorization"] == "Bearer <redacted>" for r in fake.requests)
