"""The three services as processes with their state in PostgreSQL (``EB_DATABASE_URL``): a session
runs to COMPLETED, each service's rows are in a schema of its own, and no SQLite file is made."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest

from shared.client import BrokerClient
from shared.ops.embedded import SERVICES, EmbeddedBroker
from tests.e2e.helpers import HAPPY_PHASES, hello_request


@pytest.fixture
def broker(broker_factory: Callable[..., EmbeddedBroker], postgres_url: str) -> EmbeddedBroker:
    """Started outside the test's event loop (it waits for the services with one of its own)."""
    return broker_factory(EB_DATABASE_URL=postgres_url)


async def test_a_session_runs_to_completed_with_every_service_on_postgres(
    broker: EmbeddedBroker, postgres_url: str
) -> None:
    async with BrokerClient(broker.url, broker.login("alice")) as client:
        offerset = await client.submit(hello_request(), timeout=60)
        assert offerset.result == "YES", offerset.meta
        assert offerset.offers and offerset.offers[0].meta
        session_id = offerset.offers[0].meta.uuid
        assert session_id is not None
        assert (await client.accept(session_id)).applied
        phases = [event.phase async for event in client.events(session_id, until_done=True)]
    assert phases[-1] == "COMPLETED", phases
    assert set(phases) <= set(HAPPY_PHASES)

    assert not list(broker.data_dir.rglob("*.sqlite")), "a service kept its state in SQLite"
    await asyncio.sleep(0.5)  # the relays mark their last rows sent
    with psycopg.connect(postgres_url) as db:
        schemas = {row[0] for row in db.execute("SELECT schema_name FROM information_schema.schemata")}
        assert set(SERVICES) <= schemas
        assert db.execute(
            "SELECT phase FROM offers.sessions WHERE session_id = %s", (session_id,)
        ).fetchall() == [("COMPLETED",)]
        assert db.execute(
            "SELECT state FROM scheduler.reservations WHERE session_id = %s", (session_id,)
        ).fetchall() == [("ended",)]
        assert db.execute(
            "SELECT phase FROM launcher.runs WHERE session_id = %s", (session_id,)
        ).fetchall() == [("COMPLETED",)]
        for service in SERVICES:
            (unsent,) = db.execute(
                f"SELECT count(*) FROM {service}.outbox WHERE sent_at IS NULL"
            ).fetchone() or (None,)
            assert unsent == 0, f"{service} left {unsent} messages unsent"
