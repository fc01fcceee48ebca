"""200 concurrent requests against a 4-core pool: every offer that can be accepted is, and at no
instant do the accepted sessions need more than the pool has."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from services.scheduler.domain import Reservation, peak_usage
from shared import iso8601
from shared.client import BrokerClient
from shared.models import OfferSetResponse, ScheduledExecutionSession
from shared.ops.embedded import EmbeddedBroker
from tests.e2e.helpers import hello_request

REQUESTS = 200
POOL_CORES = 4  # tests/conftest.py broker_env
POOL_MEMORY_GIB = 16


def small_request() -> dict[str, object]:
    document = hello_request()
    document["compute"]["cores"] = {"min": 1, "max": 1}  # type: ignore[index]
    document["compute"]["memory"] = {"min": 1, "max": 1}  # type: ignore[index]
    document["schedule"] = {"requested": {"duration": "PT20S"}}
    return document


def reservation_of(offer: ScheduledExecutionSession) -> Reservation:
    """The slot and size an accepted offer books, read from the offer the client was given."""
    assert offer.meta and offer.meta.uuid and offer.schedule and offer.schedule.available
    available = offer.schedule.available
    assert available.start and available.duration
    start, _ = iso8601.parse_interval(available.start)  # "<instant>/PT0S"
    end = start + iso8601.parse_duration(available.duration)
    compute = offer.compute
    assert compute is not None and compute.cores and compute.memory
    cores, memory = compute.cores.min, compute.memory.min
    assert cores is not None and memory is not None
    return Reservation(offer.meta.uuid, start, end, cores, memory)


def booked_in_scheduler(database: Path) -> list[Reservation]:
    """Accepted bookings as the scheduler stored them (read-only: the service keeps writing)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT session_id, start, end, cores, memory_gib FROM reservations "
            "WHERE state IN ('booked', 'launched', 'ended')"
        ).fetchall()
    return [
        Reservation(sid, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC), cores, memory)
        for sid, start, end, cores, memory in rows
    ]


async def test_two_hundred_concurrent_requests_never_overbook(broker: EmbeddedBroker,
                                                             client: BrokerClient) -> None:
    pool = (int(broker.env["EB_POOL_CORES"]), int(broker.env["EB_POOL_MEMORY_GIB"]))
    assert pool == (POOL_CORES, POOL_MEMORY_GIB)
    document = small_request()
    answers = await asyncio.gather(*(client.submit(document, timeout=120) for _ in range(REQUESTS)),
                                   return_exceptions=True)
    failures = [answer for answer in answers if not isinstance(answer, OfferSetResponse)]
    assert not failures, f"{len(failures)} requests got no answer, e.g. {failures[0]!r}"
    offersets = [answer for answer in answers if isinstance(answer, OfferSetResponse)]
    assert all(o.result in ("YES", "NO") for o in offersets)
    firsts = [o.offers[0] for o in offersets if o.result == "YES" and o.offers]
    assert len(firsts) >= POOL_CORES
    session_ids = [offer.meta.uuid if offer.meta else None for offer in firsts]
    assert all(session_ids)

    # Accept the first offer of every YES, all at once.
    results = await asyncio.gather(*(client.update(str(sid), "ACCEPTED", timeout=120) for sid in session_ids))
    accepted = [offer for offer, result in zip(firsts, results, strict=True) if result.applied]
    refused = [result for result in results if not result.applied]
    assert all(result.messages for result in refused), "a refused accept must say why"
    assert len(accepted) >= POOL_CORES

    # What the clients were promised never exceeds the pool at any instant.
    promised = [reservation_of(offer) for offer in accepted]
    cores, memory = peak_usage(promised)
    assert cores <= POOL_CORES, f"accepted sessions need {cores} cores at once"
    assert memory <= POOL_MEMORY_GIB
    # ... and the pool is really full at some instant, so the bound above was put to the test.
    assert cores == POOL_CORES

    # Nor does what the scheduler booked (its own record, which it alone writes). The accept is
    # answered by the offers service; the booking follows on the bus, so wait for all of them.
    database = broker.data_dir / "scheduler" / "scheduler.sqlite"
    wanted = {r.id for r in promised}
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        booked = booked_in_scheduler(database)
        if {r.id for r in booked} >= wanted or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert {r.id for r in booked} == wanted
    cores, memory = peak_usage(booked)
    assert cores <= POOL_CORES, f"the scheduler booked {cores} cores at once"
    assert memory <= POOL_MEMORY_GIB
    assert broker.dead_services() == []
