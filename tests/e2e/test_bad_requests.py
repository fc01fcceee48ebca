"""Bad requests and bad updates each get a specific answer; the services survive them all."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import iso8601
from shared.client import BrokerClient
from shared.models import OfferSetResponse
from shared.ops.embedded import EmbeddedBroker
from tests.e2e.helpers import hello_request


def kinds_and_texts(offerset: OfferSetResponse) -> list[tuple[str, str]]:
    messages = (offerset.meta.messages or []) if offerset.meta else []
    return [(m.kind, m.message or "") for m in messages]


def assert_no(offerset: OfferSetResponse, kind: str) -> str:
    """The offer set is NO with a message of `kind`, and every message has text; returns that text."""
    assert offerset.result == "NO", offerset
    assert not offerset.offers
    found = kinds_and_texts(offerset)
    assert found, "a NO must say why"
    assert all(text.strip() for _, text in found), found
    matching = [text for k, text in found if k == kind]
    assert matching, f"no message of kind {kind}: {found}"
    return matching[0]


def with_changes(**changes: Any) -> dict[str, Any]:
    document = hello_request()
    for path, value in changes.items():
        target = document
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target.setdefault(parent, {})
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return document


async def test_bad_requests_each_get_a_specific_no(broker: EmbeddedBroker, client: BrokerClient) -> None:
    unknown = await client.submit(with_changes(executable__kind="https://example.org/kinds/no-such-executable.yaml"))
    text = assert_no(unknown, "uri:unknown-type")
    assert "no-such-executable" in text

    assert_no(await client.submit(with_changes(executable=None)), "urn:executable-required")

    too_big = await client.submit(with_changes(compute__cores={"min": 64, "max": 64}))
    text = assert_no(too_big, "urn:resource-limit")
    assert "64" in text and "4 cores" in text, text

    text = assert_no(await client.submit(with_changes(schedule__requested__duration="PT1X")),
                     "urn:input-syntax-fail")
    assert "PT1X" in text

    text = assert_no(await client.submit(b"\x00\xff{{not yaml"), "urn:input-syntax-fail")
    assert "could not be parsed" in text

    now = datetime.now(UTC)
    past = iso8601.format_interval(now - timedelta(hours=2), now - timedelta(hours=1))
    text = assert_no(await client.submit(with_changes(schedule__requested__start=past)),
                     "urn:start-window-unmet")
    assert iso8601.format_instant(now - timedelta(hours=1)) in text

    # All of that crashed nothing, and the next valid request is answered as usual.
    assert broker.dead_services() == []
    good = await client.submit(hello_request())
    assert good.result == "YES", kinds_and_texts(good)
    assert good.offers


async def test_illegal_and_foreign_updates_are_refused(broker: EmbeddedBroker, client: BrokerClient) -> None:
    # A start window two minutes ahead keeps the accepted session waiting while we poke at it.
    now = datetime.now(UTC)
    window = iso8601.format_interval(now + timedelta(minutes=2), now + timedelta(minutes=3))
    offerset = await client.submit(with_changes(schedule__requested__start=window,
                                                schedule__requested__duration="PT1M"))
    assert offerset.result == "YES", kinds_and_texts(offerset)
    assert offerset.offers and offerset.offers[0].meta
    session_id = offerset.offers[0].meta.uuid
    assert session_id is not None

    accepted = await client.accept(session_id)
    assert accepted.applied, accepted
    assert accepted.phase == "ACCEPTED"

    illegal = await client.reject(session_id)
    assert illegal.applied is False
    assert illegal.session_id == session_id
    (message,) = illegal.messages
    assert message.kind == "urn:illegal-transition"
    text = message.message or ""
    assert "REJECTED" in text
    assert "legal updates now: CANCELLED" in text, text

    async with BrokerClient(broker.url, broker.login("mallory")) as mallory:
        results = await asyncio.gather(mallory.cancel(session_id), mallory.accept(session_id))
    for foreign in results:
        assert foreign.applied is False
        assert [m.kind for m in foreign.messages] == ["urn:forbidden"]
        assert all((m.message or "").strip() for m in foreign.messages)

    # The owner still can: cancel is the one legal update, and it is applied.
    cancelled = await client.cancel(session_id)
    assert cancelled.applied is True, cancelled
    assert broker.dead_services() == []
