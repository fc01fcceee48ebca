"""Notebooks on CANFAR through the bus: the services as processes (the offers service serving the
HTTP API), the fake skaha (with its ARC storage and its nbclient runner) and a notebook server on
127.0.0.1. What a user sees is what `broker watch` prints (`shared.ops.cli.print_event`) and the
session document of the HTTP API (which the dashboard shows)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from services.launcher.platforms.canfar.platform import session_name
from shared.auth.credentials import Credentials
from shared.client import BrokerClient
from shared.messages import SessionEvent
from shared.models import JUPYTER_NOTEBOOK_KIND, SIMPLE_COMPUTE_KIND
from shared.ops.cli import console, print_event
from tests.e2e.helpers import HAPPY_PHASES
from tests.e2e.http_support import ALICE, JSON, HttpBroker, start_http_broker
from tests.e2e.test_canfar_e2e import submit_and_accept, texts
from tests.fakes.serve import serve_asgi
from tests.fakes.skaha import FakeSkaha, SkahaConfig
from tests.integration.test_canfar_notebooks import notebook_app

TOKEN = "e2e-nb-token-7a41c2"


@pytest.fixture
def fake() -> FakeSkaha:
    return FakeSkaha(SkahaConfig(tokens={TOKEN: "alice"}, pending_s=0.3, term_s=0.3))


@pytest.fixture
def notebooks_url() -> Iterator[str]:
    url, stop = serve_asgi(notebook_app())
    yield url
    stop()


@pytest.fixture
def canfar_broker(fake: FakeSkaha, notebooks_url: str, tmp_path: Path) -> Iterator[HttpBroker]:
    base_url, stop = serve_asgi(fake)
    try:
        http = start_http_broker(
            tmp_path / "broker",
            EB_POOL_PLATFORM="canfar",
            EB_POOL_NAME="canfar",
            EB_POOL_ALLOWED_HOSTS="127.0.0.1",
            EB_CANFAR_URL=f"{base_url}/skaha",
            EB_CANFAR_TOKEN=TOKEN,
            EB_CANFAR_POLL_S="0.2",
            EB_CANFAR_BACKOFF_S="0.05",
            EB_CANFAR_STORAGE_URL=f"{base_url}/arc",
            EB_CANFAR_STORAGE_USER="alice",
            EB_CANFAR_NOTEBOOK_IMAGE="images.canfar.net/skaha/astroml:latest",
            EB_CANFAR_BATCH_IMAGE="images.canfar.net/skaha/papermill:1.0",
        )
        try:
            yield http
        finally:
            http.broker.stop()
    finally:
        stop()


def notebook_request(location: str, mode: str) -> dict[str, Any]:
    return {
        "executable": {
            "kind": JUPYTER_NOTEBOOK_KIND,
            "meta": {"name": f"canfar-notebook-{mode}"},
            "location": location,
            "notebook_mode": mode,
        },
        "compute": {
            "kind": SIMPLE_COMPUTE_KIND,
            "cores": {"min": 1, "max": 1},
            "memory": {"min": 1, "max": 1},
        },
        "schedule": {"requested": {"duration": "PT5M"}},
    }


def watched(events: list[SessionEvent]) -> str:
    """What `broker watch` prints for these events."""
    with console.capture() as captured:
        for event in events:
            print_event(event, as_json=False)
    return captured.get()


async def session_document(http: HttpBroker, session_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=http.base_url, auth=ALICE, timeout=20) as api:
        response = await api.get(f"/sessions/{session_id}", headers=JSON)
    assert response.status_code == 200, response.text
    document = response.json()
    assert isinstance(document, dict)
    return document


async def run_interactive(client: BrokerClient, http: HttpBroker, notebooks: str) -> None:
    session_id = await submit_and_accept(client, notebook_request(f"{notebooks}/nb/ok.ipynb", "interactive"))
    staged = f"arc/home/alice/execution-broker/{session_name(session_id)}/ok.ipynb"
    seen: list[SessionEvent] = []
    async for event in client.events(session_id, idle_timeout=60):
        seen.append(event)
        assert event.phase not in ("COMPLETED", "FAILED", "CANCELLED"), watched(seen)
        if event.connectors:
            break
    (connector,) = seen[-1].connectors
    assert seen[-1].phase == "RUNNING" and connector["status"] == "AVAILABLE"
    location = urlsplit(connector["location"])
    assert location.path.endswith(f"/lab/tree/{staged}"), connector
    assert f"Connector urn:jupyter-notebook: {connector['location']}" in watched(seen)
    assert [e.phase for e in seen].count("RUNNING") == 2  # the phase, then its connector
    # The HTTP API (and so the dashboard) lists it once the offers service has read the event.
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        document = await session_document(http, session_id)
        if any(c.get("location") == connector["location"] for c in document.get("connectors", [])):
            break
        assert asyncio.get_running_loop().time() < deadline, document
        await asyncio.sleep(0.2)
    assert document["phase"] == "RUNNING"
    assert (await client.cancel(session_id)).applied
    events = await client.wait_until_done(session_id, timeout=60)
    assert events[-1].phase == "CANCELLED", watched(events)
    ended = await session_document(http, session_id)
    statuses = [c["status"] for c in ended["connectors"] if c["location"] == connector["location"]]
    assert statuses == ["FINISHED"]


async def run_batch(client: BrokerClient, notebooks: str) -> None:
    session_id = await submit_and_accept(client, notebook_request(f"{notebooks}/nb/ok.ipynb", "batch"))
    events = await client.wait_until_done(session_id, timeout=90)
    assert tuple(e.phase for e in events) == HAPPY_PHASES, watched(events)
    shown = watched(events)
    assert "the notebook ran to its end" in shown and "hello from the notebook" in shown
    notebook = Path(events[-1].outputs["notebook"])
    assert "hello from the notebook" in await asyncio.to_thread(notebook.read_text)
    assert events[-1].outputs["notebook_arc"].endswith(f"/{session_name(session_id)}/executed-ok.ipynb")


async def run_failing(client: BrokerClient, notebooks: str) -> None:
    session_id = await submit_and_accept(client, notebook_request(f"{notebooks}/nb/failing.ipynb", "batch"))
    events = await client.wait_until_done(session_id, timeout=90)
    assert events[-1].phase == "FAILED", watched(events)
    assert "ValueError: deliberate failure for the tests" in texts(events)


async def test_canfar_notebooks_through_the_bus(
    canfar_broker: HttpBroker, fake: FakeSkaha, notebooks_url: str
) -> None:
    async with BrokerClient(canfar_broker.broker.url, Credentials.login(*ALICE)) as client:
        await asyncio.gather(
            run_interactive(client, canfar_broker, notebooks_url),
            run_batch(client, notebooks_url),
            run_failing(client, notebooks_url),
        )
    assert all(r["headers"].get("authorization") == "Bearer <redacted>" for r in fake.requests)
    launcher_log = await asyncio.to_thread((canfar_broker.broker.data_dir / "launcher.log").read_text)
    assert "staged the notebook" in launcher_log and TOKEN not in launcher_log
