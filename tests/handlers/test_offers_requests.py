"""The offers handlers of a request that waits for its pools, against their real SQLite tables and
outbox (no bus): the request state goes QUOTING → ANSWERED once, a late answer changes nothing,
and the HTTP API's read model reads the very rows the handlers wrote, with the same functions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pytest

from services.offers import store as tables
from services.offers.domain import PoolChoice, RequestState
from services.offers.handlers import OffersHandlers
from services.offers.store import SCHEMA, ReadModel
from shared import subjects
from shared.bus.runtime import Incoming
from shared.bus.store import OutboxRow, Store, Transaction
from shared.lifecycle import Phase
from shared.messages import Hold, SlotsQuoted
from shared.models import JUPYTER_NOTEBOOK_KIND, OfferSetResponse
from shared.subjects import SchedulerFact, SchedulerVerb
from tests.unit.offers_policy import NOW, POLICY

OWNER = "alice"
REQUEST_ID = "9a1c6a52-2f43-4b8e-9a57-3c1f0c6f1d21"
POOLS = ("east", "west")
#: The session each pool's hold is for.
SESSIONS = {"east": "0b8f4a5e-6c1d-4f2a-8e3b-1d2c3b4a5f60", "west": "7e2d9c1b-3a4f-4b5e-9c6d-8f7e6d5c4b3a"}
REQUEST = json.dumps(
    {
        "executable": {
            "kind": JUPYTER_NOTEBOOK_KIND,
            "meta": {"name": "nb"},
            "location": "https://example.org/a.ipynb",
        }
    }
).encode()


@dataclass
class Offers:
    store: Store
    handlers: OffersHandlers
    read_model: ReadModel

    async def run(self, work: Callable[[Transaction], Awaitable[None]]) -> list[OutboxRow]:
        async with self.store.transaction(NOW) as tx:
            await work(tx)
        return tx.outbox

    async def submit(self, msg_id: str = "m-1") -> list[OutboxRow]:
        msg = Incoming(subjects.request(OWNER, REQUEST_ID), REQUEST, {}, msg_id, 1)
        return await self.run(lambda tx: self.handlers.submit_request(tx, msg))

    async def quoted(self, pool: str) -> list[OutboxRow]:
        start = NOW + timedelta(minutes=2)
        hold = Hold(
            session_id=SESSIONS[pool],
            pool=pool,
            start=start,
            end=start + timedelta(minutes=30),
            cores=1,
            memory_gib=1,
            prepare_s=60,
        )
        answer = SlotsQuoted(request_id=REQUEST_ID, pool=pool, holds=[hold])
        msg = Incoming(
            subjects.scheduler_event(pool, SchedulerFact.QUOTED), answer.to_bytes(), {}, f"q-{pool}", 1
        )
        return await self.run(lambda tx: self.handlers.slots_quoted(tx, msg))

    async def state(self) -> RequestState | None:
        stored = await tables.get_request(self.read_model, REQUEST_ID)
        return stored.state if stored is not None else None


@pytest.fixture
async def offers(tmp_path: Path) -> AsyncIterator[Offers]:
    store = Store(tmp_path / "offers.sqlite", SCHEMA)
    await store.open()
    read_model = ReadModel(store.path)
    await read_model.open()
    policy = replace(POLICY, pools=tuple(PoolChoice(pool, "local", 60) for pool in POOLS))
    try:
        yield Offers(store, OffersHandlers(policy), read_model)
    finally:
        await read_model.close()
        await store.close()


async def test_a_request_asks_every_pool_and_waits_in_quoting(offers: Offers) -> None:
    sent = await offers.submit()
    assert sorted(row.subject for row in sent) == sorted(
        subjects.scheduler_command(pool, SchedulerVerb.QUOTE) for pool in POOLS
    )
    assert await offers.state() is RequestState.QUOTING
    assert await offers.submit("m-2") == []  # a re-send under another transport id
    assert await offers.quoted("east") == []  # west has not answered yet
    assert await offers.state() is RequestState.QUOTING


async def test_the_last_answer_sends_the_offer_set_once(offers: Offers) -> None:
    await offers.submit()
    await offers.quoted("east")
    (sent,) = await offers.quoted("west")
    assert sent.subject == subjects.offerset(OWNER, REQUEST_ID)
    offerset = OfferSetResponse.model_validate_json(sent.payload)
    assert offerset.result == "YES"
    assert await offers.state() is RequestState.ANSWERED
    # A redelivered answer after the offer set went out is a repeated fact: nothing happens.
    assert await offers.quoted("east") == []
    assert await offers.state() is RequestState.ANSWERED

    # The HTTP side reads what the handlers wrote, through the same store functions and rows.
    assert offerset.meta is not None and offerset.meta.uuid is not None
    offered = {offer.meta.uuid for offer in offerset.offers or [] if offer.meta is not None}
    assert offered == set(SESSIONS.values())
    for pool, session_id in SESSIONS.items():
        row = await tables.session(offers.read_model, session_id)
        assert row is not None
        assert (row.owner, row.phase, row.offerset_id) == (OWNER, Phase.OFFERED, offerset.meta.uuid)
        assert await tables.session_pool(offers.read_model, session_id) == pool
    stored = await tables.offerset(offers.read_model, offerset.meta.uuid)
    assert stored is not None and (stored.owner, stored.result) == (OWNER, "YES")


async def test_a_dead_request_is_answered_no_and_never_stored(offers: Offers) -> None:
    msg = Incoming(subjects.request(OWNER, REQUEST_ID), b"", {}, "m-1", 5)
    (sent,) = await offers.run(lambda tx: offers.handlers.request_dead(tx, msg, "too many deliveries"))
    assert OfferSetResponse.model_validate_json(sent.payload).result == "NO"
    assert await offers.state() is None
