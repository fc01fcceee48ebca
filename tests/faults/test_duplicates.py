"""The same request or update published twice — by a retrying client or a network hiccup — is
applied once, end to end through the three services."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from shared import subjects
from shared.client import BrokerClient, read_request_file
from shared.ops.embedded import EmbeddedBroker
from shared.subjects import SchedulerVerb
from tests.e2e.helpers import HELLO_REQUEST, phase_event_counts

pytestmark = pytest.mark.faults


async def stored_count(client: BrokerClient, stream: str, subject: str) -> int:
    info = await client.nc.jetstream().stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


# The operator acting for alice: the same subjects, and it may read the streams' state to count.
async def test_a_request_published_twice_gets_one_offer_set(broker: EmbeddedBroker) -> None:
    async with BrokerClient(broker.url, broker.operator("alice")) as client:
        request_id = str(uuid.uuid4())
        body = json.dumps(read_request_file(HELLO_REQUEST)).encode()
        # Two raw publishes with different transport ids: only the services' inboxes can catch this.
        js = client.nc.jetstream()
        await js.publish(
            subjects.request(client.owner, request_id), body, headers={"Nats-Msg-Id": f"{request_id}-first"}
        )
        offerset = await client.submit(body, request_id=request_id)
        assert offerset.result == "YES"
        await asyncio.sleep(1.0)
        assert (
            await stored_count(client, subjects.EVENTS_STREAM, subjects.offerset(client.owner, request_id))
            == 1
        )
        quotes = await stored_count(
            client, subjects.COMMANDS_STREAM, subjects.scheduler_command("local", SchedulerVerb.QUOTE)
        )
        assert quotes == 1


async def test_an_update_published_twice_is_applied_once(broker: EmbeddedBroker) -> None:
    async with BrokerClient(broker.url, broker.operator("alice")) as client:
        offerset = await client.submit(read_request_file(HELLO_REQUEST))
        assert offerset.offers and offerset.offers[0].meta
        session_id = offerset.offers[0].meta.uuid
        assert session_id is not None
        update_id = str(uuid.uuid4())
        body = json.dumps({"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}).encode()
        reply = subjects.update_result(client.owner, session_id, update_id)
        replies = await client.nc.subscribe(reply)
        js = client.nc.jetstream()
        for _ in range(2):
            await js.publish(
                subjects.update(client.owner, session_id), body, headers={"Nats-Msg-Id": update_id}
            )
        first = await replies.next_msg(timeout=10)
        assert json.loads(first.data)["applied"] is True
        events = await client.wait_until_done(session_id, timeout=60)
        assert events[-1].phase == "COMPLETED"
        counts = await phase_event_counts(broker, session_id)
        assert all(n == 1 for n in counts.values()), counts
        assert await stored_count(client, subjects.EVENTS_STREAM, reply) == 1
        assert (
            await stored_count(
                client, subjects.COMMANDS_STREAM, subjects.scheduler_command("local", SchedulerVerb.BOOK)
            )
            == 1
        )
