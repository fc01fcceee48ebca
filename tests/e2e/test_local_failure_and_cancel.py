"""The local platform through the bus: a failing job ends FAILED with the platform's reason, and a
cancel really stops the running process and ends the session CANCELLED."""

from __future__ import annotations

import asyncio
import sys
import time

from shared.client import BrokerClient
from shared.models import LOCAL_COMMAND_KIND, SIMPLE_COMPUTE_KIND
from shared.ops.embedded import EmbeddedBroker


def command(argv: list[str]) -> dict[str, object]:
    return {
        "executable": {"kind": LOCAL_COMMAND_KIND, "command": argv},
        "compute": {
            "kind": SIMPLE_COMPUTE_KIND,
            "cores": {"min": 1, "max": 1},
            "memory": {"min": 1, "max": 1},
        },
        "schedule": {"requested": {"duration": "PT5M"}},
    }


async def accepted(client: BrokerClient, argv: list[str]) -> str:
    offerset = await client.submit(command(argv))
    session_id = (offerset.offers or [])[0].meta.uuid  # type: ignore[union-attr]
    assert session_id is not None
    assert (await client.accept(session_id)).applied
    return session_id


async def test_a_failing_job_fails_with_the_platforms_reason(broker: EmbeddedBroker) -> None:
    async with BrokerClient(broker.url, "alice") as client:
        session_id = await accepted(
            client, [sys.executable, "-c", "import sys; print('bad input'); sys.exit(3)"]
        )
        events = await client.wait_until_done(session_id, timeout=60)
    final = events[-1]
    assert final.phase == "FAILED"
    text = " ".join(m.message or "" for m in final.messages)
    assert "exit code 3" in text and "bad input" in text


async def test_cancel_really_stops_a_running_job(broker: EmbeddedBroker) -> None:
    marker = str(time.time_ns() % 100000 + 2000)
    async with BrokerClient(broker.url, "alice") as client:
        session_id = await accepted(client, ["sleep", marker])
        async for event in client.events(session_id):
            if event.phase == "RUNNING":
                break
        result = await client.cancel(session_id)
        assert result.applied
        events = await client.wait_until_done(session_id, timeout=30)
    assert events[-1].phase == "CANCELLED"
    assert "RELEASING" in [e.phase for e in events]
    ps = await asyncio.create_subprocess_exec("ps", "-eo", "args", stdout=asyncio.subprocess.PIPE)
    listing, _ = await ps.communicate()
    assert f"sleep {marker}" not in listing.decode()
