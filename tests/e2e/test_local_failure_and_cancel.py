"""The local platform through the bus: a failing job ends FAILED with the platform's reason, a
cancel really stops the running process and ends the session CANCELLED, and a session cancelled
before launch (offered, or booked and waiting) ends CANCELLED once, from the launcher, with its
capacity given back."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta

from shared import iso8601
from shared.client import BrokerClient
from shared.models import LOCAL_COMMAND_KIND, SIMPLE_COMPUTE_KIND
from shared.ops.embedded import EmbeddedBroker


def command(argv: list[str], start: str | None = None) -> dict[str, object]:
    requested = {"duration": "PT5M"} | ({"start": start} if start else {})
    return {
        "executable": {"kind": LOCAL_COMMAND_KIND, "command": argv},
        "compute": {
            "kind": SIMPLE_COMPUTE_KIND,
            "cores": {"min": 1, "max": 1},
            "memory": {"min": 1, "max": 1},
        },
        "schedule": {"requested": requested},
    }


async def accepted(client: BrokerClient, argv: list[str]) -> str:
    offerset = await client.submit(command(argv))
    session_id = (offerset.offers or [])[0].meta.uuid  # type: ignore[union-attr]
    assert session_id is not None
    assert (await client.accept(session_id)).applied
    return session_id


async def test_a_failing_job_fails_with_the_platforms_reason(broker: EmbeddedBroker) -> None:
    async with BrokerClient(broker.url, broker.login("alice")) as client:
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
    async with BrokerClient(broker.url, broker.login("alice")) as client:
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


def reservation_state(broker: EmbeddedBroker, session_id: str) -> str:
    """The scheduler's own record of the session (read-only: the service keeps writing)."""
    database = broker.data_dir / "scheduler" / "scheduler.sqlite"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        (state,) = db.execute("SELECT state FROM reservations WHERE session_id = ?", (session_id,)).fetchone()
    return str(state)


async def test_sessions_cancelled_before_launch_end_once_from_the_launcher(broker: EmbeddedBroker) -> None:
    later = iso8601.format_instant(datetime.now(UTC) + timedelta(minutes=30)) + "/PT1M"
    async with BrokerClient(broker.url, broker.login("alice")) as client:
        offered, waiting = [
            (await client.submit(command(["true"], start=later))).offers[0].meta.uuid  # type: ignore[index,union-attr]
            for _ in range(2)
        ]
        assert offered and waiting
        # An offer cancelled while OFFERED: applied at once, ended by the launcher.
        result = await client.cancel(offered)
        assert result.applied and result.phase == "CANCELLED"
        events = await client.wait_until_done(offered, timeout=30)
        # A booked session, still waiting for its start: cancelled before launch too.
        assert (await client.accept(waiting)).applied
        async for event in client.events(waiting):
            if event.phase == "WAITING":
                break
        assert (await client.cancel(waiting)).applied
        waited = await client.wait_until_done(waiting, timeout=30)
    assert [e.phase for e in events] == ["CANCELLED"]
    assert [e.phase for e in waited] == ["ACCEPTED", "WAITING", "CANCELLED"]
    for event in (events[-1], waited[-1]):
        assert [m.kind for m in event.messages] == ["urn:cancelled"]
        assert "Cancelled before launch" in (event.messages[0].message or "")
    assert reservation_state(broker, offered) == "released"
    assert reservation_state(broker, waiting) == "ended"
    assert broker.dead_services() == []
