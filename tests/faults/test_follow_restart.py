"""A user following events keeps receiving them: across a nats-server restart, and when nats-py
restarts the follower's ordered consumer while it still exists (`BrokerClient._ordered`)."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest
from nats.js.api import DeliverPolicy

from shared import subjects
from shared.client import BrokerClient, BrokerUnavailable
from shared.lifecycle import Phase
from shared.models import LOCAL_COMMAND_KIND
from shared.ops.embedded import EmbeddedBroker
from tests.e2e.helpers import follow_until_running, one_core_request

pytestmark = pytest.mark.faults
SLEEPER = {"kind": LOCAL_COMMAND_KIND, "command": [sys.executable, "-c", "import time; time.sleep(8)"]}


async def test_a_follower_gets_every_phase_across_a_nats_restart(broker: EmbeddedBroker) -> None:
    async with BrokerClient(broker.url, broker.login("alice"), reconnect=True) as client:
        followed = await follow_until_running(client, one_core_request(SLEEPER))
        assert broker.nats is not None
        broker.nats.stop(signal.SIGKILL)
        await asyncio.to_thread(broker.nats.start)
        await asyncio.wait_for(followed.follower, timeout=90)
    seen = followed.seen
    assert seen[-1] == Phase.COMPLETED.value
    assert seen.count(Phase.RUNNING.value) == 1 and Phase.RELEASING.value in seen


async def test_a_restarted_follower_gets_a_fresh_consumer_name(broker: EmbeddedBroker) -> None:
    """nats-py restarts an ordered consumer that still exists (after a gap in its sequence, or missed
    heartbeats) by creating it again: under the same name the server refuses that (10012)."""
    async with BrokerClient(broker.url, broker.login("alice")) as client:
        answers = subjects.OFFERSET.filter(owner=client.owner)
        sub = await client._ordered(answers, DeliverPolicy.NEW)
        await client.submit(one_core_request(SLEEPER))
        await sub.next_msg(timeout=10)
        jsi = sub._sub._jsi  # type: ignore[attr-defined]
        first_name = jsi._ccreq.name
        await jsi.reset_ordered_consumer(jsi._sseq + 1)  # what nats-py does on a gap
        await asyncio.sleep(0.5)
        assert jsi._ccreq.name != first_name
        await client.submit(one_core_request(SLEEPER))
        assert (await sub.next_msg(timeout=10)).subject.startswith(answers.rstrip("*"))
        await sub.unsubscribe()


async def test_a_long_running_client_logs_in_again_when_nats_py_gives_its_connection_up(
    broker: EmbeddedBroker,
) -> None:
    """nats-py closes a connection for good when the server refuses a reconnect's login (a client
    back before the auth callout after a server restart): a long-running client logs in again, and
    its follower carries on after the last event it read, without repeating one."""
    async with BrokerClient(broker.url, broker.login("alice"), reconnect=True) as client:
        followed = await follow_until_running(client, one_core_request(SLEEPER))
        first = client.nc
        await first.close()  # what nats-py does after "Authorization Violation" while reconnecting
        offers = await client.submit(one_core_request(SLEEPER), timeout=30)
        assert offers.offers, "a submit after the connection was given up is answered"
        assert client.nc is not first and client.nc.is_connected
        await asyncio.wait_for(followed.follower, timeout=60)
    seen = followed.seen
    assert seen[-1] == Phase.COMPLETED.value
    assert seen.count(Phase.RUNNING.value) == 1, seen


async def test_an_interactive_client_does_not_log_in_again(broker: EmbeddedBroker) -> None:
    async with BrokerClient(broker.url, broker.login("alice")) as client:
        await client.nc.close()
        with pytest.raises(BrokerUnavailable, match="connection to NATS was closed"):
            await client.submit(one_core_request(SLEEPER), timeout=5)
