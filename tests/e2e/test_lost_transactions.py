"""A machine crash with ``EB_DURABILITY=fast`` can take a service's last committed transactions with
it although the messages that caused them were acknowledged. Simulated here with the services as
separate processes: the scheduler's SQLite files are put back to a copy taken before it booked a
session, the launcher's to one taken before it took the session's launch. Started again, each
applies what it forgot (the start-up inbox replay) and the session runs to COMPLETED with each
phase stored once."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from shared.client import BrokerClient
from shared.ops.embedded import EmbeddedBroker
from shared.settings import Settings
from tests.e2e.helpers import HAPPY_PHASES, NOTEBOOKS, notebook_request, offered_session, phase_event_counts

pytestmark = pytest.mark.faults

VICTIMS = ("scheduler", "launcher")


def database(broker: EmbeddedBroker, service: str) -> Path:
    return Settings(data_dir=broker.data_dir).service_dir(service) / f"{service}.sqlite"


def copy_database(source: Path, target: Path) -> None:
    """The SQLite file with its WAL and shared-memory files (those there are), replacing the target's."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
        if Path(f"{source}{suffix}").exists():
            shutil.copy2(f"{source}{suffix}", f"{target}{suffix}")


async def test_a_session_runs_to_its_end_after_the_scheduler_and_launcher_forgot_its_book_and_launch(
    broker: EmbeddedBroker, client: BrokerClient, tmp_path: Path
) -> None:
    session_id = await offered_session(client, notebook_request(NOTEBOOKS / "sleep4.ipynb", duration="PT2M"))

    # The holds are the scheduler's; it has neither booked nor launched anything yet.
    for name in VICTIMS:
        broker.services[name].stop()
        copy_database(database(broker, name), tmp_path / f"{name}.sqlite")
        broker.services[name].start()

    assert (await client.accept(session_id)).applied
    seen: list[str] = []

    async def follow() -> None:
        crashed = False
        async for event in client.events(session_id, until_done=True):
            seen.append(event.phase)
            if event.phase == "PREPARING" and not crashed:
                # The launcher has taken the launch, the scheduler made the booking: both are lost.
                crashed = True
                for name in VICTIMS:
                    broker.services[name].kill()
                    copy_database(tmp_path / f"{name}.sqlite", database(broker, name))
                    broker.services[name].start()

    await asyncio.wait_for(follow(), 120)
    assert seen[-1] == "COMPLETED", seen
    assert broker.dead_services() == []
    for name in VICTIMS:
        log = (broker.data_dir / f"{name}.log").read_text(encoding="utf-8")
        assert "they were applied again" in log, name

    await asyncio.sleep(1.0)  # a relay resend, if there is one, lands before counting
    assert await phase_event_counts(broker, session_id) == dict.fromkeys(HAPPY_PHASES, 1)
