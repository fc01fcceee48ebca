"""A user following a session's events through a nats-server restart keeps receiving them.

nats-py restarts an ordered consumer after a server restart under the consumer's old name, which
the server refuses for a user (a consumer name a user's permissions allow is created, not updated:
10012); `BrokerClient` gives each restart a fresh name. Without it, the follower goes quiet."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from shared.client import BrokerClient
from shared.lifecycle import Phase
from shared.models import LOCAL_COMMAND_KIND
from shared.ops.embedded import EmbeddedBroker
from tests.e2e.helpers import one_core_request

pytestmark = pytest.mark.faults


async def test_a_follower_gets_every_phase_across_a_nats_restart(broker: EmbeddedBroker) -> None:
    sleeper = {"kind": LOCAL_COMMAND_KIND, "command": [sys.executable, "-c", "import time; time.sleep(8)"]}
    async with BrokerClient(broker.url, broker.login("alice"), reconnect=True) as client:
        offerset = await client.submit(one_core_request(sleeper))
        session_id = (offerset.offers or [])[0].meta.uuid  # type: ignore[union-attr]
        assert session_id is not None
        assert (await client.accept(session_id)).applied
        seen: list[str] = []

        async def follow() -> None:
            async for event in client.events(session_id, until_done=True):
                seen.append(event.phase)

        follower = asyncio.create_task(follow())
        deadline = asyncio.get_running_loop().time() + 30
        while Phase.RUNNING.value not in seen:
            assert asyncio.get_running_loop().time() < deadline, seen
            await asyncio.sleep(0.1)
        assert broker.nats is not None
        broker.nats.stop(signal.SIGKILL)
        await asyncio.to_thread(broker.nats.start)
        await asyncio.wait_for(follower, timeout=90)
    assert seen[-1] == Phase.COMPLETED.value
    assert seen.count(Phase.RUNNING.value) == 1 and Phase.RELEASING.value in seen
