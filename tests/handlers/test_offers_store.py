"""The offers store has one definition of each query and row: what the handlers write in their
transaction, the HTTP API's read model reads back with the same functions, as the same rows.

(The handlers' behaviour over these tables, request states included, is in test_offers_handlers.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from services.offers import store as tables
from services.offers.domain import RequestState
from services.offers.store import SCHEMA, ReadModel, Reads
from shared.bus.postgres import PostgresStore
from shared.bus.sqlite import SqliteStore
from shared.bus.store import Store
from shared.lifecycle import Phase
from shared.messages import SlotsQuoted
from shared.models import ComponentMetadata, ExecutionRequest, OfferSetResponse, ScheduledExecutionSession
from tests.unit.offers_policy import NOW

OWNER = "alice"
REQUEST_ID = "9a1c6a52-2f43-4b8e-9a57-3c1f0c6f1d21"
OFFERSET_ID = "3f0e1d2c-4b5a-4968-8776-a5b4c3d2e1f0"
SESSION_ID = "0b8f4a5e-6c1d-4f2a-8e3b-1d2c3b4a5f60"
TRACE = {"traceparent": "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"}


@pytest.fixture(params=["sqlite", "postgres"])
async def both(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Store, ReadModel]]:
    """The handlers' store and the HTTP API's read model on a connection of its own: the SQLite
    file opened again, or a second store on the same PostgreSQL schema."""
    store: Store
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "offers.sqlite", SCHEMA)
        read_model = ReadModel(store.path)
    else:
        url = request.getfixturevalue("postgres_url")
        store = PostgresStore(url, "offers", SCHEMA)
        read_model = ReadModel(PostgresStore(url, "offers", SCHEMA))
    await store.open()
    await read_model.open()
    try:
        yield store, read_model
    finally:
        await read_model.close()
        await store.close()


def offerset() -> OfferSetResponse:
    offer = ScheduledExecutionSession(
        phase="OFFERED",
        meta=ComponentMetadata(uuid=SESSION_ID, created=NOW),
        expires=NOW + timedelta(minutes=5),
    )
    return OfferSetResponse(
        meta=ComponentMetadata(uuid=OFFERSET_ID, created=NOW), result="YES", offers=[offer]
    )


async def reads_of(db: Reads) -> tuple[object, ...]:
    return (
        await tables.request_seen(db, REQUEST_ID),
        await tables.get_request(db, REQUEST_ID),
        await tables.quotes(db, REQUEST_ID),
        await tables.session(db, SESSION_ID),
        await tables.session_view(db, SESSION_ID),
        await tables.offerset(db, OFFERSET_ID),
        await tables.offerset_sessions(db, OFFERSET_ID),
        await tables.sessions(db, OWNER, Phase.OFFERED),
        await tables.offered_siblings(db, OFFERSET_ID),
        await tables.session_pool(db, SESSION_ID),
        await tables.session_trace(db, SESSION_ID),
        await tables.due_offers(db, NOW + timedelta(hours=1)),
    )


async def test_the_read_model_reads_the_handlers_rows_with_the_same_functions(
    both: tuple[Store, ReadModel],
) -> None:
    store, read_model = both
    async with store.transaction(NOW) as tx:
        await tables.insert_request(
            tx,
            request_id=REQUEST_ID,
            owner=OWNER,
            offerset_id=OFFERSET_ID,
            state=RequestState.QUOTING,
            request=ExecutionRequest(),
            expires_at=NOW + timedelta(minutes=5),
            pools=("east", "west"),
            trace=TRACE,
        )
        await tables.add_quote(tx, SlotsQuoted(request_id=REQUEST_ID, pool="east", reasons=["full"]))
        await tables.save_offerset(tx, REQUEST_ID, OWNER, offerset(), TRACE, {SESSION_ID: "east"})
        await tables.set_request_state(tx, REQUEST_ID, RequestState.ANSWERED)
        in_transaction = await reads_of(tx)

    assert in_transaction == await reads_of(read_model)
    stored = await tables.get_request(read_model, REQUEST_ID)
    assert stored is not None
    assert (stored.owner, stored.state, stored.pools, stored.trace) == (
        OWNER,
        RequestState.ANSWERED,
        ("east", "west"),
        TRACE,
    )
    row = await tables.session(read_model, SESSION_ID)
    assert row is not None
    assert (row.owner, row.phase, row.offerset_id, row.trace) == (OWNER, Phase.OFFERED, OFFERSET_ID, TRACE)
    assert await tables.session_owner(read_model, SESSION_ID) == OWNER
