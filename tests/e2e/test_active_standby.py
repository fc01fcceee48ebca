"""Active and standby on PostgreSQL: two processes each of the scheduler and the launcher share one
database (``EmbeddedBroker.replicas``); the one holding its schema's lease works, the other waits
(`shared.bus.lease`). SIGKILL the active ones while sessions run: the standbys take over within
seconds and every session ends COMPLETED, each phase stored once. An active whose leased
connection the server ends exits (status 3) instead of writing on without the lease."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shared.client import BrokerClient, wait_for_services
from shared.ops import takeover
from shared.ops.cli import LEASE_LOST_EXIT
from shared.ops.embedded import SERVICES, EmbeddedBroker
from shared.ops.faults import LOCAL_COMMAND_KIND
from tests.conftest import broker_env
from tests.e2e.helpers import HAPPY_PHASES, offered_session, one_core_request, phase_event_counts

pytestmark = pytest.mark.faults

#: "Within seconds", with room for a loaded machine (docs/deployment.md has the measured figures).
TAKEOVER_WITHIN_S = 30.0


@pytest.fixture
def broker(tmp_path: Path, postgres_url: str) -> Iterator[EmbeddedBroker]:
    started = EmbeddedBroker(
        data_dir=tmp_path / "broker",
        env=broker_env(EB_DATABASE_URL=postgres_url, EB_ACK_WAIT_S="4"),
        replicas={"scheduler": 2, "launcher": 2},
    )
    try:
        started.start()
        asyncio.run(wait_for_services(started.url, SERVICES, timeout=60, credentials=started.operator()))
        yield started
    finally:
        started.stop()


def sleeping(seconds: int) -> dict[str, Any]:
    return one_core_request({"kind": LOCAL_COMMAND_KIND, "command": ["sleep", str(seconds)]}, duration="PT2M")


async def started_session(client: BrokerClient, request: dict[str, Any]) -> str:
    session_id = await offered_session(client, request)
    assert (await client.accept(session_id)).applied
    return session_id


async def ending(client: BrokerClient, session_id: str) -> list[str]:
    return [event.phase async for event in client.events(session_id, until_done=True)]


async def test_standbys_take_over_from_killed_actives_and_every_session_completes(
    broker: EmbeddedBroker, postgres_url: str
) -> None:
    async with BrokerClient(broker.url, broker.login("alice"), reconnect=True) as client:
        sessions = [await started_session(client, sleeping(4)) for _ in range(3)]
        followers = [asyncio.create_task(ending(client, s)) for s in sessions]
        actives = {
            name: await takeover.active_process(broker, postgres_url, name, timeout=30)
            for name in takeover.LEASED_SERVICES
        }
        # Both the first process and its standby are up; the active one is either.
        assert {p.label for p in broker.processes("scheduler")} == {"scheduler", "scheduler-2"}
        await asyncio.sleep(1.0)  # the sessions are being launched and run
        killed_at = time.monotonic()
        for process in actives.values():
            process.kill()
        assert sorted(broker.dead_services()) == sorted(p.label for p in actives.values())
        await wait_for_services(broker.url, takeover.LEASED_SERVICES, TAKEOVER_WITHIN_S, broker.operator())
        took = time.monotonic() - killed_at
        print(f"the standbys served {took:.2f} s after the kill")
        assert took < TAKEOVER_WITHIN_S
        for name, process in actives.items():
            new = await takeover.active_process(broker, postgres_url, name, timeout=5)
            assert new is not process and new.alive()

        # New work goes to the new actives; what ran before the kill ends once.
        sessions.append(await started_session(client, sleeping(1)))
        followers.append(asyncio.create_task(ending(client, sessions[-1])))
        phases = await asyncio.wait_for(asyncio.gather(*followers), 120)
    for seen in phases:
        assert seen[-1] == "COMPLETED", phases
    await asyncio.sleep(1.0)  # let a relay resend, if there is one, land before counting
    for session_id in sessions:
        assert await phase_event_counts(broker, session_id) == dict.fromkeys(HAPPY_PHASES, 1)


async def test_an_active_whose_lease_connection_is_cut_exits_and_its_standby_takes_over(
    broker: EmbeddedBroker, postgres_url: str
) -> None:
    active = await takeover.active_process(broker, postgres_url, "scheduler", timeout=30)
    assert active.proc is not None
    with psycopg.connect(postgres_url, autocommit=True) as db:
        cut = db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"eb-scheduler:{active.proc.pid}@%",),
        ).fetchall()
    cut_at = time.monotonic()
    assert cut == [(True,)]
    assert active.proc.wait(15) == LEASE_LOST_EXIT
    print(f"the active that lost its lease exited {time.monotonic() - cut_at:.2f} s after the cut")
    log = (broker.data_dir / f"{active.label}.log").read_text(encoding="utf-8")
    assert "scheduler store lost its lease" in log
    assert "exiting (restarted, it waits as a standby)" in log
    new = await takeover.active_process(broker, postgres_url, "scheduler", timeout=TAKEOVER_WITHIN_S)
    assert new is not active
    # Restarted, the process that lost the lease waits as the standby.
    active.start()
    await asyncio.sleep(2.0)
    assert active.alive()
    assert "standby: waiting for the scheduler lease" in (broker.data_dir / f"{active.label}.log").read_text(
        encoding="utf-8"
    )
    async with BrokerClient(broker.url, broker.login("alice")) as client:
        session_id = await started_session(client, sleeping(1))
        assert (await asyncio.wait_for(ending(client, session_id), 90))[-1] == "COMPLETED"
    # A standby told to stop leaves at once, cleanly (it does not wait for the lease first).
    assert active.proc is not None
    active.proc.terminate()
    assert active.proc.wait(5) == 0
