"""SIGKILL a service mid-flight and start it again: nothing pending is lost, nothing happens twice."""

from __future__ import annotations

import asyncio

import pytest

from shared.client import BrokerClient
from shared.ops.embedded import EmbeddedBroker
from shared.settings import Settings
from tests.e2e.helpers import (
    HAPPY_PHASES,
    NOTEBOOKS,
    hello_request,
    notebook_request,
    offered_session,
    phase_event_counts,
)

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("victim", ["scheduler", "offers"])
async def test_a_request_pending_while_a_service_is_dead_gets_its_offers(
    broker: EmbeddedBroker, client: BrokerClient, victim: str
) -> None:
    service = broker.services[victim]
    service.kill()
    assert broker.dead_services() == [victim]

    pending = asyncio.create_task(client.submit(hello_request(), timeout=60))
    await asyncio.sleep(1.0)
    assert not pending.done(), "a request was answered while the service that answers it was dead"

    service.start()
    offerset = await asyncio.wait_for(pending, 60)
    assert offerset.result == "YES", offerset.meta
    assert offerset.offers
    assert broker.dead_services() == []


@pytest.mark.parametrize("broker", ["sqlite", "postgres"], indirect=True)
async def test_a_session_survives_a_launcher_killed_while_it_runs(
    broker: EmbeddedBroker, client: BrokerClient
) -> None:
    session_id = await offered_session(client, notebook_request(NOTEBOOKS / "sleep4.ipynb", duration="PT2M"))
    assert (await client.accept(session_id)).applied

    launcher = broker.services["launcher"]
    work_dir = Settings(data_dir=broker.data_dir).work_root() / session_id
    seen: list[str] = []

    async def follow() -> None:
        killed = False
        async for event in client.events(session_id, until_done=True):
            seen.append(event.phase)
            if event.phase == "RUNNING" and not killed:
                # The notebook sleeps 4 s: the launcher dies while it runs, and comes back.
                launcher.kill()
                assert not (work_dir / "result.json").exists(), "the run ended before the kill"
                killed = True
                assert broker.dead_services() == ["launcher"]
                await asyncio.sleep(0.5)
                launcher.start()

    await asyncio.wait_for(follow(), 90)
    assert seen[-1] == "COMPLETED", seen
    assert "RUNNING" in seen
    assert broker.dead_services() == []
    # The run that was started before the kill is the one that finished: the notebook's last line.
    assert "woke up after 4 s" in (work_dir / "output.ipynb").read_text(encoding="utf-8")

    # Each phase is stored exactly once in the events stream, resends after the kill included.
    await asyncio.sleep(1.0)  # let a relay resend, if there is one, land before counting
    counts = await phase_event_counts(broker, session_id)
    assert counts == dict.fromkeys(HAPPY_PHASES, 1)
