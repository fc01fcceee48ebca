"""Issue 13, "never silent" and "no message can outgrow the bus", at the handlers: a request whose
quotes do not all come is answered NO after the deadline; a dead quote still answers the request; an
offer set too large for the bus becomes a NO before it is committed (its holds freed); an offer set
the bus refused is replaced by a small NO; the scheduler's arithmetic survives any size."""

from __future__ import annotations

import json
from datetime import timedelta

from shared import subjects
from shared.bus.store import OutboxRow
from shared.lifecycle import Phase
from shared.messages import BookSession, FailSession, QuoteSlots, ReleaseHolds, SessionEvent, SlotsQuoted
from shared.models import IVOA_DATA_KIND, SIMPLE_DATA_KIND, MessageItem, OfferSetResponse
from shared.models.limits import MAX_ANSWER_BYTES
from shared.subjects import LauncherVerb, SchedulerFact, SchedulerVerb
from tests.handlers.harness import NOW, OWNER, StoreMaker, only, subjects_of
from tests.handlers.units import EAST, WEST, Launcher, Offers, Scheduler, hold, notebook_request, offers_unit

START = NOW + timedelta(minutes=10)
DEADLINE = timedelta(seconds=20)  # OffersHandlers' default quote timeout


def messages(offerset: OfferSetResponse) -> list[tuple[str, str]]:
    assert offerset.meta is not None
    return [(m.kind, m.message or "") for m in offerset.meta.messages or []]


async def test_a_request_whose_quote_never_comes_is_answered_no_after_the_deadline(offers: Offers) -> None:
    await offers.tick(NOW)  # the service was watching when the request came
    await offers.request(notebook_request())
    east = hold(EAST, START)
    assert await offers.quoted(EAST, holds=[east]) == []  # west stays silent
    assert [
        s for s in await offers.tick(NOW + DEADLINE - timedelta(seconds=1)) if "offersets" in s.subject
    ] == []

    sent = await offers.tick(NOW + DEADLINE + timedelta(seconds=1))
    assert subjects_of(sent) == [
        subjects.scheduler_command(EAST, SchedulerVerb.RELEASE),
        subjects.offerset(OWNER, "r1"),
    ]
    assert sent[0].as_(ReleaseHolds).session_ids == [east.session_id]
    offerset = sent[1].as_(OfferSetResponse)
    assert offerset.result == "NO"
    [(kind, text)] = messages(offerset)
    assert kind == "urn:service-unavailable" and "No answer from pool west within 20 s" in text
    assert [r[0] for r in await offers.rows("SELECT state FROM requests")] == ["ANSWERED"]
    # Answered once: the next tick says nothing, and a late quote only gives its holds back.
    assert [s for s in await offers.tick(NOW + DEADLINE * 2) if "offersets" in s.subject] == []
    west = hold(WEST, START)
    late = await offers.quoted(WEST, holds=[west])
    assert subjects_of(late) == [subjects.scheduler_command(WEST, SchedulerVerb.RELEASE)]
    assert late[0].as_(ReleaseHolds).session_ids == [west.session_id]


async def test_a_quote_that_could_never_be_processed_still_answers_the_request(offers: Offers) -> None:
    await offers.request(notebook_request())
    answer = SlotsQuoted(request_id="r1", pool=EAST, holds=[hold(EAST, START)])
    sent = await offers.dead(subjects.scheduler_event(EAST, SchedulerFact.QUOTED), answer, "KeyError: 'x'")
    offerset = only(sent, OfferSetResponse)
    assert offerset.result == "NO"
    assert messages(offerset) == [
        ("urn:internal-error", "The broker could not process the answer of pool east: KeyError: 'x'")
    ]
    # Bytes that name no request: the dead letter is the only record.
    assert await offers.dead(subjects.scheduler_event(EAST, SchedulerFact.QUOTED), b"\xff", "bad") == []


async def test_an_offer_set_too_large_for_the_bus_is_a_no_and_its_holds_are_freed(stores: StoreMaker) -> None:
    # 200 data items of 1.5 KB each: the request is well under 1 MiB, three offers of it are not.
    data = [
        {"kind": SIMPLE_DATA_KIND, "meta": {"name": f"d{i}", "description": "x" * 1500}, "location": "/d"}
        for i in range(200)
    ]
    async with offers_unit(stores=stores) as offers:
        await offers.request({**notebook_request(), "data": data})
        east = [hold(EAST, START + timedelta(minutes=i)) for i in range(2)]
        west = hold(WEST, START)
        await offers.quoted(EAST, holds=east)
        sent = await offers.quoted(WEST, holds=[west])
        assert subjects_of(sent) == [
            subjects.scheduler_command(EAST, SchedulerVerb.RELEASE),
            subjects.scheduler_command(WEST, SchedulerVerb.RELEASE),
            subjects.offerset(OWNER, "r1"),
        ]
        assert sorted(sent[0].as_(ReleaseHolds).session_ids) == sorted(h.session_id for h in east)
        assert sent[1].as_(ReleaseHolds).session_ids == [west.session_id]
        offerset = sent[2].as_(OfferSetResponse)
        [(kind, text)] = messages(offerset)
        assert kind == "urn:answer-too-large" and f"more than the {MAX_ANSWER_BYTES} bytes" in text
        assert await offers.rows("SELECT * FROM sessions") == []


async def test_an_offer_set_the_bus_refused_becomes_a_small_no(offers: Offers) -> None:
    await offers.request(notebook_request())
    await offers.quoted(EAST, holds=[hold(EAST, START)])
    sent = await offers.quoted(WEST, holds=[hold(WEST, START)])
    row = OutboxRow(1, sent[0].subject, b"x" * 2_000_000, sent[0].msg_id, {})
    refused = await offers.run(lambda tx: offers.handlers.answer_refused(tx, row, "too large"))
    assert subjects_of(refused)[-1] == subjects.offerset(OWNER, "r1")
    assert {s.subject for s in refused[:-1]} == {
        subjects.scheduler_command(EAST, SchedulerVerb.RELEASE),
        subjects.scheduler_command(WEST, SchedulerVerb.RELEASE),
    }
    offerset = refused[-1].as_(OfferSetResponse)
    [(kind, text)] = messages(offerset)
    assert kind == "urn:answer-too-large" and "2000000 bytes" in text
    assert {r[0] for r in await offers.rows("SELECT phase FROM sessions")} == {"EXPIRED"}
    assert [r[0] for r in await offers.rows("SELECT result FROM offersets")] == ["NO"]


async def test_the_scheduler_survives_any_data_size(scheduler: Scheduler) -> None:
    data = [
        {"kind": IVOA_DATA_KIND, "meta": {"name": "huge"}, "ivoa": {"datalink": {"content_length": 10**400}}}
    ]
    quoted = await scheduler.quote("r1", START, latest_start=START + timedelta(days=1), data=data)
    assert quoted.holds == []
    [reason] = quoted.reasons
    assert "would take longer than P36525D" in reason


async def test_a_dead_quote_is_still_answered_by_the_scheduler(scheduler: Scheduler) -> None:
    quote = QuoteSlots(
        request_id="r9",
        owner=OWNER,
        cores_min=1,
        cores_max=1,
        memory_min=1,
        memory_max=1,
        duration_s=60,
        earliest_start=START,
        latest_start=START,
        prepare_s=0,
        max_offers=1,
        expires_at=START,
        requested_at=NOW,
    )
    sent = await scheduler.dead(
        subjects.scheduler_command(scheduler.pool, SchedulerVerb.QUOTE), quote, "OverflowError: too big"
    )
    answer = only(sent, SlotsQuoted)
    assert (answer.request_id, answer.holds) == ("r9", [])
    assert answer.reasons == ["the scheduler could not process this request: OverflowError: too big"]
    release = ReleaseHolds(session_ids=["s"], reason="x")
    assert (
        await scheduler.dead(subjects.scheduler_command(scheduler.pool, SchedulerVerb.RELEASE), release, "x")
        == []
    )


async def test_a_restarted_service_gives_quotes_one_timeout_to_arrive(offers: Offers) -> None:
    """Requests made long before the first look (the service was down) wait one more timeout from
    then: their quotes may be in the stream, not yet read."""
    await offers.request(notebook_request())
    first_look = NOW + DEADLINE * 10
    assert [s for s in await offers.tick(first_look) if "offersets" in s.subject] == []
    assert [s for s in await offers.tick(first_look + DEADLINE / 2) if "offersets" in s.subject] == []
    sent = await offers.tick(first_look + DEADLINE)
    assert subjects.offerset(OWNER, "r1") in subjects_of(sent)


async def test_a_booking_that_could_never_be_made_fails_its_session(scheduler: Scheduler) -> None:
    book = BookSession(session_id="s1", owner=OWNER, executable={}, platform="local")
    sent = await scheduler.dead(subjects.scheduler_command(scheduler.pool, SchedulerVerb.BOOK), book, "boom")
    fail = only(sent, FailSession)
    assert (fail.session_id, fail.owner) == ("s1", OWNER)
    assert [m.message for m in fail.messages] == ["The broker could not book this session: boom"]


async def test_a_launcher_command_that_could_never_be_processed_fails_its_session(launcher: Launcher) -> None:
    launch = {"session_id": "s1", "owner": OWNER, "not": "a launch"}
    subject = subjects.launcher_command(launcher.handlers.pool, LauncherVerb.LAUNCH)
    sent = await launcher.dead(subject, json.dumps(launch).encode(), "ValidationError: bad")
    assert subjects_of(sent) == [subjects.session_event(OWNER, "s1", Phase.FAILED.value)]
    event = only(sent, SessionEvent)
    assert [m.message for m in event.messages] == [
        "The broker could not run this session: ValidationError: bad"
    ]
    assert await launcher.phase("s1") is Phase.FAILED
    # Again, or for bytes that name no session: nothing more.
    assert await launcher.dead(subject, json.dumps(launch).encode(), "again") == []
    assert await launcher.dead(subject, b"\xff", "bad") == []


async def test_a_phase_event_the_bus_refused_goes_again_without_its_bulk(launcher: Launcher) -> None:
    huge = MessageItem.error("urn:run-failed", "The command failed: ${output}", output="y" * 2_000_000)
    event = SessionEvent(session_id="s1", phase="FAILED", at=NOW, messages=[huge], outputs={"log": "/x/log"})
    subject = subjects.session_event(OWNER, "s1", "FAILED")
    row = OutboxRow(7, subject, event.to_bytes(), "s1:FAILED", {})
    on_refused = launcher.wiring.on_refused
    assert on_refused is not None
    [sent] = await launcher.run(lambda tx: on_refused(tx, row, "too large"))
    assert (sent.subject, sent.msg_id) == (subject, "s1:FAILED")  # the same phase, exactly once
    smaller = sent.as_(SessionEvent)
    assert smaller.phase == "FAILED" and smaller.outputs == {"log": "/x/log"}
    assert len(smaller.to_bytes()) < 10_000
    assert smaller.messages[0].message == ("The command failed: " + "y" * 2_000_000)[:2000]
    assert smaller.messages[-1].kind == "urn:event-too-large"
    # Not a phase event: only the dead letter records it.
    other = OutboxRow(8, subjects.dead_letter("launcher"), b"{}", "d", {})
    assert await launcher.run(lambda tx: on_refused(tx, other, "too large")) == []
