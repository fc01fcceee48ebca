"""Issue 13 end to end: no request goes unanswered. The 80,000-bad-items request and a 1 MiB valid
request are answered within 5 s, nothing is left in any service's outbox and nothing is dead-lettered
(so nothing retries for ever); a request whose quote never comes, because the scheduler is stopped,
is answered NO after the quote deadline."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable

import nats

from shared import subjects
from shared.client import BrokerClient
from shared.models import MAX_DOCUMENT_BYTES, SIMPLE_DATA_KIND, OfferSetResponse
from shared.ops.embedded import EmbeddedBroker
from tests.e2e.helpers import hello_request

SERVICES = ("offers", "scheduler", "launcher")


def kinds_and_texts(offerset: OfferSetResponse) -> list[tuple[str, str]]:
    messages = (offerset.meta.messages or []) if offerset.meta else []
    return [(m.kind, m.message or "") for m in messages]


def eighty_thousand_bad_items() -> bytes:
    document = hello_request()
    document["data"] = [{"kind": "x"}] * 80_000
    payload = json.dumps(document, separators=(",", ":")).encode()
    assert len(payload) <= MAX_DOCUMENT_BYTES
    return payload


def a_valid_mebibyte() -> bytes:
    """256 data items (the limit) with long descriptions: valid, about 1 MiB, and four offers of it
    would be four times that."""
    document = hello_request()
    item = {"kind": SIMPLE_DATA_KIND, "location": "/srv/data", "meta": {"name": "", "description": ""}}
    document["data"] = []
    for index in range(256):
        document["data"].append({**item, "meta": {"name": f"d{index}", "description": "x" * 3900}})
    payload = json.dumps(document, separators=(",", ":")).encode()
    assert MAX_DOCUMENT_BYTES - 20_000 < len(payload) <= MAX_DOCUMENT_BYTES - 4096, len(payload)
    return payload


def unsent_rows(broker: EmbeddedBroker) -> dict[str, int]:
    counts = {}
    for service in SERVICES:
        path = broker.data_dir / service / f"{service}.sqlite"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            counts[service] = conn.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
    return counts


async def dead_letters(broker: EmbeddedBroker) -> int:
    nc = await nats.connect(broker.url, **broker.operator().connect_options())
    try:
        info = await nc.jetstream().stream_info(subjects.EVENTS_STREAM, subjects_filter="eb.dead.>")
    finally:
        await nc.close()
    return sum((info.state.subjects or {}).values())


async def timed(client: BrokerClient, payload: bytes) -> tuple[OfferSetResponse, float]:
    started = time.monotonic()
    answer = await client.submit(payload, timeout=5.0)
    return answer, time.monotonic() - started


async def test_the_largest_requests_are_answered_within_five_seconds(
    broker: EmbeddedBroker, client: BrokerClient
) -> None:
    bad, took = await timed(client, eighty_thousand_bad_items())
    assert bad.result == "NO" and took < 5.0
    assert (
        "urn:input-too-large",
        "Too many items at data: 80000, more than the limit of 256",
    ) in kinds_and_texts(bad)
    assert len(kinds_and_texts(bad)) <= 51

    large, took = await timed(client, a_valid_mebibyte())
    assert large.result == "NO" and took < 5.0
    [(kind, text)] = kinds_and_texts(large)
    assert kind == "urn:answer-too-large" and "send a smaller request" in text

    # The pool's holds for that NO were given back: an ordinary request is offered as usual.
    good = await client.submit(hello_request())
    assert good.result == "YES"
    await asyncio.sleep(3)  # longer than the relay takes to pick up anything left behind
    assert unsent_rows(broker) == dict.fromkeys(SERVICES, 0)
    assert await dead_letters(broker) == 0
    assert broker.dead_services() == []


def test_a_request_whose_quote_never_comes_is_answered_no_after_the_deadline(
    broker_factory: Callable[..., EmbeddedBroker],
) -> None:
    broker = broker_factory(EB_QUOTE_TIMEOUT_S="3")
    broker.services["scheduler"].stop()

    async def submit() -> tuple[OfferSetResponse, float]:
        async with BrokerClient(broker.url, broker.login("alice")) as client:
            started = time.monotonic()
            answer = await client.submit(hello_request(), timeout=15.0)
            return answer, time.monotonic() - started

    answer, took = asyncio.run(submit())
    assert answer.result == "NO"
    [(kind, text)] = kinds_and_texts(answer)
    assert kind == "urn:service-unavailable" and "No answer from pool local within 3 s" in text
    assert 3.0 <= took < 8.0, took
