"""The handlers behind one owner per phase, against their real tables and outbox (no bus): the
scheduler forwards cancels and failed bookings to the launcher and frees capacity through `free`;
the launcher ends a session it never launched exactly once; `publish_phase` checks every phase."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.scheduler.states import IllegalReservationChange, ReservationState
from shared import subjects
from shared.bus.events import publish_phase
from shared.bus.sqlite import MEMORY, SqliteStore
from shared.lifecycle import IllegalTransition, Phase
from shared.messages import (
    FailSession,
    LaunchSession,
    SessionEvent,
    StopSession,
)
from shared.models import MessageItem
from shared.subjects import LauncherVerb
from tests.handlers.harness import NOW, OWNER, only, subjects_of
from tests.handlers.units import Launcher, Scheduler

POOL = "tiny"
S = ReservationState
LATER = NOW + timedelta(hours=1)  # a slot far enough ahead that its booking is not launched at once


# -- the scheduler ------------------------------------------------------------------------------------


async def test_cancelling_a_hold_frees_it_and_forwards_the_cancel_to_the_launcher(
    scheduler: Scheduler,
) -> None:
    session_id = await scheduler.hold("r1", LATER)
    rows = await scheduler.cancel(session_id)
    assert subjects_of(rows) == [subjects.launcher_command(POOL, LauncherVerb.STOP)]
    stop = only(rows, StopSession)
    assert rows[0].msg_id == f"stop:{session_id}"
    assert (stop.session_id, stop.owner, stop.reason) == (session_id, OWNER, "no")
    assert await scheduler.state(session_id) is S.RELEASED
    assert session_id not in scheduler.handlers.ledger


async def test_cancelling_a_booking_not_launched_ends_it_and_it_is_never_launched(
    scheduler: Scheduler,
) -> None:
    session_id = await scheduler.hold("r1", LATER)
    booked = await scheduler.book(session_id)
    assert subjects_of(booked) == [subjects.session_event(OWNER, session_id, "WAITING")]
    rows = await scheduler.cancel(session_id)
    assert subjects_of(rows) == [subjects.launcher_command(POOL, LauncherVerb.STOP)]
    assert await scheduler.state(session_id) is S.ENDED
    assert session_id not in scheduler.handlers.ledger
    # Its launch time comes and goes: nothing is launched.
    assert await scheduler.tick(LATER) == []
    # A second cancel finds the session over and says nothing more.
    assert await scheduler.cancel(session_id) == []


async def test_cancelling_a_launched_booking_stops_it_and_keeps_its_capacity_until_it_ends(
    scheduler: Scheduler,
) -> None:
    session_id = await scheduler.hold("r1", NOW + timedelta(seconds=1))
    booked = await scheduler.book(session_id, NOW + timedelta(seconds=1))
    assert subjects_of(booked)[-1] == subjects.launcher_command(POOL, LauncherVerb.LAUNCH)
    rows = await scheduler.cancel(session_id)
    assert subjects_of(rows) == [subjects.launcher_command(POOL, LauncherVerb.STOP)]
    assert await scheduler.state(session_id) is S.LAUNCHED
    assert session_id in scheduler.handlers.ledger
    assert await scheduler.report(session_id, Phase.CANCELLED) == []
    assert await scheduler.state(session_id) is S.ENDED
    assert session_id not in scheduler.handlers.ledger
    # The same end reported again changes nothing.
    assert await scheduler.report(session_id, Phase.CANCELLED) == []
    assert await scheduler.state(session_id) is S.ENDED


async def test_a_booking_with_no_hold_is_failed_by_the_launcher(scheduler: Scheduler) -> None:
    rows = await scheduler.book("no-such-session")
    assert subjects_of(rows) == [subjects.launcher_command(POOL, LauncherVerb.FAIL)]
    fail = only(rows, FailSession)
    assert (fail.session_id, fail.owner) == ("no-such-session", OWNER)
    assert [m.kind for m in fail.messages] == ["urn:not-found"]


async def test_a_lapsed_hold_whose_slot_is_taken_is_failed_by_the_launcher(scheduler: Scheduler) -> None:
    lapsed = await scheduler.hold("r1", LATER)
    expiry = NOW + timedelta(minutes=5, seconds=61)  # the offer's expiry plus the grace
    await scheduler.tick(expiry)
    assert await scheduler.state(lapsed) is S.RELEASED
    taker = await scheduler.hold("r2", LATER)  # the core is free again, and taken
    rows = await scheduler.book(lapsed, expiry)
    assert subjects_of(rows) == [subjects.launcher_command(POOL, LauncherVerb.FAIL)]
    assert [m.kind for m in only(rows, FailSession).messages] == ["urn:offer-expired"]
    assert await scheduler.state(lapsed) is S.RELEASED
    assert await scheduler.state(taker) is S.HELD


async def test_a_lapsed_hold_whose_slot_is_free_is_booked_after_all(scheduler: Scheduler) -> None:
    lapsed = await scheduler.hold("r1", LATER)
    expiry = NOW + timedelta(minutes=5, seconds=61)
    await scheduler.tick(expiry)
    rows = await scheduler.book(lapsed, expiry)
    assert subjects_of(rows) == [subjects.session_event(OWNER, lapsed, "WAITING")]
    assert await scheduler.state(lapsed) is S.BOOKED
    assert lapsed in scheduler.handlers.ledger
    assert await scheduler.book(lapsed, expiry) == []  # a repeated book is a no-op


async def test_booking_frees_the_siblings_and_a_release_never_frees_a_booking(scheduler: Scheduler) -> None:
    sibling = await scheduler.hold("r1", LATER)
    chosen = await scheduler.hold("r1b", LATER + timedelta(minutes=2))
    await scheduler.book(chosen, siblings=[sibling])
    assert await scheduler.state(sibling) is S.RELEASED
    assert sibling not in scheduler.handlers.ledger
    with pytest.raises(IllegalReservationChange, match="from booked to released"):
        await scheduler.release(chosen, reason="EXPIRED")
    # The refused message changed nothing, in the table or the ledger.
    assert await scheduler.state(chosen) is S.BOOKED
    assert chosen in scheduler.handlers.ledger


async def test_the_release_command_and_the_terminal_event_free_a_hold_once(scheduler: Scheduler) -> None:
    session_id = await scheduler.hold("r1", LATER)
    await scheduler.release(session_id, reason="REJECTED")
    assert await scheduler.state(session_id) is S.RELEASED
    assert len(scheduler.handlers.ledger) == 0
    assert await scheduler.report(session_id, Phase.REJECTED) == []
    assert await scheduler.state(session_id) is S.RELEASED


# -- the launcher -------------------------------------------------------------------------------------


def launch(session_id: str) -> LaunchSession:
    return LaunchSession(
        session_id=session_id,
        owner=OWNER,
        executable={},
        pool=POOL,
        cores=1,
        memory_gib=1,
        start=LATER,
        end=LATER + timedelta(minutes=1),
    )


async def test_a_stop_with_no_run_cancels_once_and_no_launch_follows_it(launcher: Launcher) -> None:
    stop = StopSession(session_id="s1", owner=OWNER, reason="changed my mind")
    rows = await launcher.command(LauncherVerb.STOP, stop)
    assert subjects_of(rows) == [subjects.session_event(OWNER, "s1", "CANCELLED")]
    event = only(rows, SessionEvent)
    assert [m.kind for m in event.messages] == ["urn:cancelled"]
    assert "Cancelled before launch: changed my mind" in (event.messages[0].message or "")
    assert await launcher.phase("s1") is Phase.CANCELLED
    # The same stop again publishes nothing; a launch after it leaves the run as it is.
    assert await launcher.command(LauncherVerb.STOP, stop) == []
    assert await launcher.command(LauncherVerb.LAUNCH, launch("s1")) == []
    assert await launcher.phase("s1") is Phase.CANCELLED


async def test_a_failed_booking_fails_once_with_the_schedulers_reason(launcher: Launcher) -> None:
    why = MessageItem.error(
        "urn:not-found", "The scheduler holds no slot for session ${session}", session="s2"
    )
    fail = FailSession(session_id="s2", owner=OWNER, messages=[why])
    rows = await launcher.command(LauncherVerb.FAIL, fail)
    assert subjects_of(rows) == [subjects.session_event(OWNER, "s2", "FAILED")]
    assert only(rows, SessionEvent).messages == [why]
    assert await launcher.phase("s2") is Phase.FAILED
    assert await launcher.command(LauncherVerb.FAIL, fail) == []
    # A cancel that comes after the end changes nothing either.
    stop = StopSession(session_id="s2", owner=OWNER, reason="late")
    assert await launcher.command(LauncherVerb.STOP, stop) == []
    assert await launcher.phase("s2") is Phase.FAILED


async def test_a_launched_session_is_not_failed_by_a_late_failure(launcher: Launcher) -> None:
    await launcher.command(LauncherVerb.LAUNCH, launch("s3"))
    assert launcher.drivers.ensured == ["s3"]
    fail = FailSession(session_id="s3", owner=OWNER)
    assert await launcher.command(LauncherVerb.FAIL, fail) == []
    assert await launcher.phase("s3") is Phase.WAITING


async def test_a_stop_of_a_launched_session_is_left_to_its_driver(launcher: Launcher) -> None:
    await launcher.command(LauncherVerb.LAUNCH, launch("s4"))
    stop = StopSession(session_id="s4", owner=OWNER, reason="no")
    assert await launcher.command(LauncherVerb.STOP, stop) == []
    assert launcher.drivers.ensured == ["s4", "wake s4", "s4"]
    run = await launcher.run_of("s4")
    assert run is not None and run.cancel_reason == "no"


# -- publish_phase ------------------------------------------------------------------------------------


async def test_publish_phase_checks_every_change_against_the_lifecycle() -> None:
    store = SqliteStore(MEMORY, "")
    await store.open()
    async with store.transaction(NOW) as tx:
        assert await publish_phase(tx, "s", OWNER, Phase.RUNNING, Phase.RELEASING, {}) is True
        assert await publish_phase(tx, "s", OWNER, Phase.RELEASING, Phase.RELEASING, {}) is False
        with pytest.raises(IllegalTransition, match="cannot go from COMPLETED to RUNNING"):
            await publish_phase(tx, "s", OWNER, Phase.COMPLETED, Phase.RUNNING, {})
        with pytest.raises(IllegalTransition):
            await publish_phase(tx, "s", OWNER, Phase.INITIAL, Phase.WAITING, {})
    assert [row.subject for row in tx.outbox] == [subjects.session_event(OWNER, "s", "RELEASING")]
    assert [row.msg_id for row in tx.outbox] == [subjects.phase_msg_id("s", "RELEASING")]
    await store.close()
