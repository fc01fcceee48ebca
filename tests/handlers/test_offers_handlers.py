"""The offers service's handlers as units of work: a request in, quotes out and an offer set once every
pool has answered; updates in, phases, bookings, releases and the requester's reply out; reported
phases into the read model; expiry. Checked through the outbox and plain reads of its tables."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from shared import subjects
from shared.lifecycle import Phase
from shared.messages import BookSession, CancelSession, QuoteSlots, ReleaseHolds, SessionEvent, UpdateResult
from shared.models import DOCKER_CONTAINER_KIND, ENUM_VALUE_UPDATE_KIND, MessageItem, OfferSetResponse
from shared.subjects import SchedulerVerb
from tests.handlers.harness import NOW, OWNER, Sent, StoreMaker, only, subjects_of
from tests.handlers.units import (
    EAST,
    EXPIRES,
    TWO_POOLS,
    WEST,
    Offers,
    hold,
    notebook_request,
    offers_unit,
    pool_choice,
)

START = NOW + timedelta(minutes=10)
MALLORY = "mallory"


def offerset_of(sent: list[Sent], request_id: str = "r1") -> OfferSetResponse:
    assert subjects_of(sent) == [subjects.offerset(OWNER, request_id)]
    assert sent[0].msg_id == f"offerset:{request_id}"
    return only(sent, OfferSetResponse)


def kinds(offerset: OfferSetResponse) -> list[str]:
    assert offerset.meta is not None
    return [m.kind for m in offerset.meta.messages or []]


def reply_of(sent: list[Sent], session_id: str, update_id: str, requester: str = OWNER) -> UpdateResult:
    """The answer to an update, which comes last, on the requester's own subject."""
    reply = sent[-1]
    assert reply.subject == subjects.update_result(requester, session_id, update_id)
    assert reply.msg_id == f"reply:{session_id}:{update_id}"
    result = reply.as_(UpdateResult)
    assert (result.session_id, result.update_id) == (session_id, update_id)
    return result


async def offer(offers: Offers, east: int = 2, west: int = 1) -> tuple[list[str], list[str]]:
    """Request r1 and answer it from both pools; the session ids offered by each."""
    await offers.request(notebook_request())
    east_holds = [hold(EAST, START + timedelta(minutes=i)) for i in range(east)]
    west_holds = [hold(WEST, START + timedelta(minutes=30 + i)) for i in range(west)]
    await offers.quoted(EAST, holds=east_holds)
    offerset = offerset_of(await offers.quoted(WEST, holds=west_holds))
    assert offerset.result == "YES"
    return [h.session_id for h in east_holds], [h.session_id for h in west_holds]


async def phases(offers: Offers, *session_ids: str) -> list[Phase | None]:
    return [await offers.phase(sid) for sid in session_ids]


# -- requests -------------------------------------------------------------------------------------


async def test_a_bad_document_is_answered_no_at_once_and_no_pool_is_asked(offers: Offers) -> None:
    offerset = offerset_of(await offers.request(b"- a list\n- not a request\n"))
    assert offerset.result == "NO" and not offerset.offers
    assert kinds(offerset) and all(kind.startswith("urn:") for kind in kinds(offerset))
    assert [tuple(r) for r in await offers.rows("SELECT request_id, owner, result FROM offersets")] == [
        ("r1", OWNER, "NO")
    ]
    assert await offers.rows("SELECT * FROM requests") == []
    # The same request id again, even with a good document, is answered already.
    assert await offers.request(notebook_request()) == []


async def test_a_request_two_pools_can_run_asks_both_and_waits_for_both(offers: Offers) -> None:
    sent = await offers.request(notebook_request(duration="PT1H"))
    assert subjects_of(sent) == [
        subjects.scheduler_command(EAST, SchedulerVerb.QUOTE),
        subjects.scheduler_command(WEST, SchedulerVerb.QUOTE),
    ]
    assert [s.msg_id for s in sent] == [f"quote:{EAST}:r1", f"quote:{WEST}:r1"]
    quote = sent[0].as_(QuoteSlots)
    assert sent[1].as_(QuoteSlots) == quote  # one quote, to every pool
    assert (quote.request_id, quote.owner, quote.duration_s) == ("r1", OWNER, 3600)
    assert quote.earliest_start == NOW + timedelta(seconds=60)  # the pools' preparation
    assert quote.expires_at == EXPIRES
    assert [tuple(r) for r in await offers.rows("SELECT state, pools FROM requests")] == [
        ("QUOTING", json.dumps([EAST, WEST]))
    ]
    # A re-sent request (another transport id, the same request id) asks no pool again.
    assert await offers.request(notebook_request(duration="PT1H")) == []

    east, west = hold(EAST, START), hold(WEST, START - timedelta(minutes=5))
    assert await offers.quoted(EAST, holds=[east]) == []  # west has not answered yet
    assert await offers.quoted(EAST, holds=[east]) == []  # a repeated answer changes nothing
    offerset = offerset_of(await offers.quoted(WEST, holds=[west]))
    assert offerset.result == "YES"
    assert [o.meta.uuid for o in offerset.offers or [] if o.meta] == [west.session_id, east.session_id]
    sessions = await offers.rows("SELECT session_id, pool, phase, owner FROM sessions ORDER BY pool")
    assert [tuple(r) for r in sessions] == [
        (east.session_id, EAST, "OFFERED", OWNER),
        (west.session_id, WEST, "OFFERED", OWNER),
    ]
    assert [r[0] for r in await offers.rows("SELECT state FROM requests")] == ["ANSWERED"]
    assert await offers.quoted(WEST, holds=[west]) == []  # answered already


async def test_a_request_only_one_pool_can_run_is_answered_by_that_pool_alone(stores: StoreMaker) -> None:
    docker_only = replace(
        TWO_POOLS, pools=(pool_choice(EAST), pool_choice(WEST, frozenset({DOCKER_CONTAINER_KIND})))
    )
    async with offers_unit(docker_only, stores=stores) as offers:
        sent = await offers.request(notebook_request())
        assert subjects_of(sent) == [subjects.scheduler_command(EAST, SchedulerVerb.QUOTE)]
        offerset = offerset_of(await offers.quoted(EAST, holds=[hold(EAST, START)]))
        assert offerset.result == "YES" and len(offerset.offers or []) == 1


async def test_no_holds_from_any_pool_is_answered_no_with_each_pools_reasons(offers: Offers) -> None:
    await offers.request(notebook_request())
    assert await offers.quoted(EAST, reasons=["the pool is full"]) == []
    offerset = offerset_of(await offers.quoted(WEST, reasons=["too many cores"]))
    assert offerset.result == "NO" and not offerset.offers
    assert offerset.meta is not None
    assert sorted((m.kind, m.message) for m in offerset.meta.messages or []) == [
        ("urn:resource-limit", f"No offer from pool {EAST}: the pool is full"),
        ("urn:resource-limit", f"No offer from pool {WEST}: too many cores"),
    ]
    assert await offers.rows("SELECT * FROM sessions") == []


async def test_an_answer_to_no_request_changes_nothing(offers: Offers) -> None:
    assert await offers.quoted(EAST, "unknown", holds=[hold(EAST, START)]) == []
    assert await offers.rows("SELECT * FROM quotes") == []
    assert await offers.rows("SELECT * FROM sessions") == []


async def test_a_request_that_died_is_answered_no_with_the_reason(offers: Offers) -> None:
    sent = await offers.dead(subjects.request(OWNER, "r9"), b"{}", "ValueError: boom")
    offerset = offerset_of(sent, "r9")
    assert offerset.result == "NO" and kinds(offerset) == ["urn:internal-error"]
    assert offerset.meta is not None and offerset.meta.messages
    assert "ValueError: boom" in (offerset.meta.messages[0].message or "")
    assert [r[0] for r in await offers.rows("SELECT result FROM offersets WHERE request_id = 'r9'")] == ["NO"]


# -- updates --------------------------------------------------------------------------------------


def update_body(**fields: object) -> bytes:
    return json.dumps(
        {"kind": ENUM_VALUE_UPDATE_KIND, "path": "phase", "value": "ACCEPTED", **fields}
    ).encode()


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"{ not json", "urn:input-syntax-fail"),
        (b"[1, 2]", "urn:input-syntax-fail"),
        (update_body(kind="uri:integer-value-update"), "urn:not-supported"),
        (update_body(path="cores"), "urn:not-supported"),
        (update_body(value="ASLEEP"), "urn:invalid-value"),
    ],
)
async def test_an_update_that_cannot_be_read_is_refused(offers: Offers, body: bytes, kind: str) -> None:
    (session, *_), _ = await offer(offers)
    sent = await offers.update(session, body, update_id="u1")
    assert len(sent) == 1
    result = reply_of(sent, session, "u1")
    assert not result.applied and [m.kind for m in result.messages] == [kind]
    assert await offers.phase(session) is Phase.OFFERED


async def test_an_update_of_an_unknown_session_is_not_found(offers: Offers) -> None:
    sent = await offers.update("no-such-session", Phase.ACCEPTED, update_id="u1")
    result = reply_of(sent, "no-such-session", "u1")
    assert len(sent) == 1 and not result.applied
    assert [m.kind for m in result.messages] == ["urn:not-found"]


async def test_an_update_of_another_owners_session_is_forbidden_and_answered_to_the_requester(
    offers: Offers,
) -> None:
    (session, *_), _ = await offer(offers)
    sent = await offers.update(session, Phase.ACCEPTED, requester=MALLORY, update_id="u1")
    assert len(sent) == 1  # no booking, no phase: only the answer, on mallory's subject
    result = reply_of(sent, session, "u1", requester=MALLORY)
    assert not result.applied and [m.kind for m in result.messages] == ["urn:forbidden"]
    assert await offers.phase(session) is Phase.OFFERED


async def test_accepting_books_in_its_pool_and_rejects_and_releases_the_siblings(offers: Offers) -> None:
    (chosen, east_sibling), (west_sibling,) = await offer(offers)
    sent = await offers.update(chosen, Phase.ACCEPTED, update_id="u1")
    events = {s.as_(SessionEvent).session_id: s for s in sent if s.subject.startswith("eb.sessions.")}
    assert {sid: s.subject for sid, s in events.items()} == {
        chosen: subjects.session_event(OWNER, chosen, "ACCEPTED"),
        east_sibling: subjects.session_event(OWNER, east_sibling, "REJECTED"),
        west_sibling: subjects.session_event(OWNER, west_sibling, "REJECTED"),
    }
    assert events[chosen].msg_id == subjects.phase_msg_id(chosen, "ACCEPTED")
    commands = [s for s in sent if s.subject.startswith("eb.scheduler.")]
    assert [(s.subject, s.msg_id) for s in commands] == [
        (subjects.scheduler_command(EAST, SchedulerVerb.BOOK), f"book:{chosen}"),
        (subjects.scheduler_command(WEST, SchedulerVerb.RELEASE), f"release:u1:{WEST}"),
    ]
    book = commands[0].as_(BookSession)
    # The booking pool frees its own siblings; the other pool is told to release its hold.
    assert (book.session_id, book.owner, book.siblings, book.platform) == (
        chosen,
        OWNER,
        [east_sibling],
        "local",
    )
    assert book.executable["location"] == "/nb.ipynb"
    assert commands[1].as_(ReleaseHolds) == ReleaseHolds(session_ids=[west_sibling], reason="ACCEPTED")
    result = reply_of(sent, chosen, "u1")
    assert (result.applied, result.phase) == (True, "ACCEPTED")
    assert await phases(offers, chosen, east_sibling, west_sibling) == [
        Phase.ACCEPTED,
        Phase.REJECTED,
        Phase.REJECTED,
    ]
    # The same accept again is answered, and books nothing twice.
    again = await offers.update(chosen, Phase.ACCEPTED, update_id="u2")
    assert len(again) == 1 and reply_of(again, chosen, "u2").applied


async def test_rejecting_an_offer_releases_its_hold_alone(offers: Offers) -> None:
    (east_a, east_b), (west,) = await offer(offers)
    sent = await offers.update(west, Phase.REJECTED, update_id="u1")
    assert subjects_of(sent) == [
        subjects.session_event(OWNER, west, "REJECTED"),
        subjects.scheduler_command(WEST, SchedulerVerb.RELEASE),
        subjects.update_result(OWNER, west, "u1"),
    ]
    assert sent[1].as_(ReleaseHolds) == ReleaseHolds(session_ids=[west], reason="REJECTED")
    assert reply_of(sent, west, "u1").phase == "REJECTED"
    assert await phases(offers, east_a, east_b, west) == [Phase.OFFERED, Phase.OFFERED, Phase.REJECTED]


async def test_cancelling_an_offer_is_recorded_and_forwarded_without_an_event(offers: Offers) -> None:
    (session, _), _ = await offer(offers)
    sent = await offers.update(session, Phase.CANCELLED, update_id="u1")
    # CANCELLED is the launcher's to publish: offers records it and forwards the cancel.
    assert subjects_of(sent) == [
        subjects.scheduler_command(EAST, SchedulerVerb.CANCEL),
        subjects.update_result(OWNER, session, "u1"),
    ]
    assert sent[0].msg_id == f"cancel:{session}"
    assert sent[0].as_(CancelSession) == CancelSession(session_id=session, reason="cancelled by its owner")
    assert (reply_of(sent, session, "u1").applied, reply_of(sent, session, "u1").phase) == (True, "CANCELLED")
    assert await offers.phase(session) is Phase.CANCELLED


async def test_cancelling_an_accepted_session_is_answered_once_it_has_ended(offers: Offers) -> None:
    (session, _), _ = await offer(offers)
    await offers.update(session, Phase.ACCEPTED)
    sent = await offers.update(session, Phase.CANCELLED, update_id="u2")
    # Forwarded, its phase kept (CANCELLED is the launcher's), and no answer yet: the cancel is
    # answered when the session has ended, so that the answer shows CANCELLED.
    assert subjects_of(sent) == [subjects.scheduler_command(EAST, SchedulerVerb.CANCEL)]
    assert await offers.phase(session) is Phase.ACCEPTED
    again = await offers.update(session, Phase.CANCELLED, update_id="u3")  # a second one waits too
    assert subjects_of(again) == [subjects.scheduler_command(EAST, SchedulerVerb.CANCEL)]

    stopped = MessageItem.info("urn:cancelled", "Cancelled before launch")
    ended = await offers.report(session, Phase.CANCELLED, messages=[stopped])
    assert subjects_of(ended) == [
        subjects.update_result(OWNER, session, "u2"),
        subjects.update_result(OWNER, session, "u3"),
    ]
    for reply, update_id in zip(ended, ("u2", "u3"), strict=True):
        assert reply.msg_id == f"reply:{session}:{update_id}"
        result = reply.as_(UpdateResult)
        assert (result.applied, result.phase, result.update_id) == (True, "CANCELLED", update_id)
        assert [m.kind for m in result.messages] == ["urn:cancelled"]
    assert await offers.phase(session) is Phase.CANCELLED
    # Answered once: a repeated event answers nothing.
    assert await offers.report(session, Phase.CANCELLED) == []


async def test_a_cancel_overtaken_by_the_sessions_end_says_how_it_ended(offers: Offers) -> None:
    (session, _), _ = await offer(offers)
    await offers.update(session, Phase.ACCEPTED)
    await offers.report(session, Phase.RUNNING)
    assert subjects_of(await offers.update(session, Phase.CANCELLED, update_id="u2")) == [
        subjects.scheduler_command(EAST, SchedulerVerb.CANCEL)
    ]
    assert await offers.report(session, Phase.RELEASING) == []  # not ended yet: still waiting
    (reply,) = await offers.report(session, Phase.COMPLETED)
    result = reply.as_(UpdateResult)
    assert (result.applied, result.phase) == (False, "COMPLETED")
    (message,) = result.messages
    assert message.kind == "urn:session-ended"
    assert "ended COMPLETED before the cancellation took effect" in (message.message or "")


async def test_an_illegal_update_is_refused_with_the_legal_ones(offers: Offers) -> None:
    (session, _), _ = await offer(offers)
    await offers.update(session, Phase.REJECTED)
    sent = await offers.update(session, Phase.ACCEPTED, update_id="u2")
    result = reply_of(sent, session, "u2")
    assert len(sent) == 1 and not result.applied and result.phase == "REJECTED"
    assert [m.kind for m in result.messages] == ["urn:illegal-transition"]


async def test_accepting_an_offer_past_its_expiry_expires_it(offers: Offers) -> None:
    (session, _), _ = await offer(offers)
    sent = await offers.update(session, Phase.ACCEPTED, at=EXPIRES, update_id="u1")
    assert subjects_of(sent) == [
        subjects.session_event(OWNER, session, "EXPIRED"),
        subjects.scheduler_command(EAST, SchedulerVerb.RELEASE),
        subjects.update_result(OWNER, session, "u1"),
    ]
    result = reply_of(sent, session, "u1")
    assert (result.applied, result.phase, [m.kind for m in result.messages]) == (
        False,
        "EXPIRED",
        ["urn:offer-expired"],
    )
    assert await offers.phase(session) is Phase.EXPIRED


async def test_an_update_that_died_is_answered_to_its_requester(offers: Offers) -> None:
    sent = await offers.dead(subjects.update(MALLORY, "s1"), update_body(), "KeyError: x", msg_id="u9")
    assert len(sent) == 1
    result = reply_of(sent, "s1", "u9", requester=MALLORY)
    assert not result.applied and [m.kind for m in result.messages] == ["urn:internal-error"]
    assert "KeyError: x" in (result.messages[0].message or "")


# -- the read model and expiry --------------------------------------------------------------------


async def test_the_read_model_follows_reported_phases_and_ignores_late_ones(offers: Offers) -> None:
    (session, _), _ = await offer(offers)
    await offers.update(session, Phase.ACCEPTED)
    assert await offers.report(session, Phase.RUNNING, outputs={"log": "a"}) == []
    late = {"kind": "urn:late", "type": "info", "message": "preparing"}
    await offers.report(session, Phase.PREPARING, messages=[late], outputs={"nb": "b"})
    assert await offers.phase(session) is Phase.RUNNING  # behind: not taken, its details are
    await offers.report(session, Phase.COMPLETED)
    await offers.report(session, Phase.RUNNING)
    assert await offers.phase(session) is Phase.COMPLETED  # nothing follows a terminal phase
    ((messages, outputs),) = await offers.rows(
        "SELECT messages, outputs FROM sessions WHERE session_id = ?", (session,)
    )
    assert [m["kind"] for m in json.loads(messages)] == ["urn:late"]
    assert json.loads(outputs) == {"log": "a", "nb": "b"}
    # A phase of a session offers never offered changes nothing, and its own phases never reach it.
    await offers.report("elsewhere", Phase.RUNNING)
    assert await offers.phase("elsewhere") is None
    assert offers.consumer(subjects.session_event(OWNER, session, "ACCEPTED")) is None


async def test_expiry_publishes_expired_once_and_releases_each_pools_holds(offers: Offers) -> None:
    (east_a, east_b), (west,) = await offer(offers)
    assert await offers.tick(EXPIRES - timedelta(seconds=1)) == []
    sent = await offers.tick(EXPIRES)
    events = [s for s in sent if s.subject.startswith("eb.sessions.")]
    assert sorted((s.subject, s.msg_id) for s in events) == sorted(
        (subjects.session_event(OWNER, sid, "EXPIRED"), subjects.phase_msg_id(sid, "EXPIRED"))
        for sid in (east_a, east_b, west)
    )
    releases = {s.subject: s for s in sent if s.subject.startswith("eb.scheduler.")}
    first = events[0].as_(SessionEvent).session_id
    assert {subject: s.msg_id for subject, s in releases.items()} == {
        subjects.scheduler_command(EAST, SchedulerVerb.RELEASE): f"release:expired:{first}:{EAST}",
        subjects.scheduler_command(WEST, SchedulerVerb.RELEASE): f"release:expired:{first}:{WEST}",
    }
    east_release = releases[subjects.scheduler_command(EAST, SchedulerVerb.RELEASE)].as_(ReleaseHolds)
    assert (sorted(east_release.session_ids), east_release.reason) == (sorted([east_a, east_b]), "EXPIRED")
    assert await phases(offers, east_a, east_b, west) == [Phase.EXPIRED] * 3
    assert await offers.tick(EXPIRES + timedelta(seconds=1)) == []


async def test_an_accepted_offer_never_expires(offers: Offers) -> None:
    (session, _), _ = await offer(offers)
    await offers.update(session, Phase.ACCEPTED)
    assert await offers.tick(EXPIRES) == []
    assert await offers.phase(session) is Phase.ACCEPTED
