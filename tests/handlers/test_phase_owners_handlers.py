"""The handlers behind one owner per phase, against their real SQLite tables and outbox (no bus): the
scheduler forwards cancels and failed bookings to the launcher and frees capacity through `free`;
the launcher ends a session it never launched exactly once; `publish_phase` checks every phase."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from services.launcher import store as launcher_tables
from services.launcher.driver import Drivers
from services.launcher.handlers import LauncherHandlers
from services.scheduler import store as scheduler_tables
from services.scheduler.handlers import SchedulerHandlers
from services.scheduler.states import IllegalReservationChange, ReservationState
from shared import subjects
from shared.bus.events import publish_phase
from shared.bus.runtime import Incoming
from shared.bus.store import OutboxRow, Store, Transaction
from shared.lifecycle import IllegalTransition, Phase
from shared.messages import (
    BookSession,
    CancelSession,
    FailSession,
    LaunchSession,
    QuoteSlots,
    ReleaseHolds,
    SessionEvent,
    SlotsQuoted,
    StopSession,
)
from shared.models import MessageItem
from shared.pools import Pool
from shared.subjects import LauncherVerb, SchedulerVerb

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OWNER = "alice"
POOL = "tiny"
S = ReservationState


def incoming(subject: str, message: BaseModel, msg_id: str) -> Incoming:
    return Incoming(subject, message.model_dump_json().encode(), {}, msg_id, 1)


@dataclass
class Scheduler:
    store: Store
    handlers: SchedulerHandlers

    async def run(
        self, work: Callable[[Transaction], Awaitable[None]], at: datetime = NOW
    ) -> list[OutboxRow]:
        async with self.store.transaction(at) as tx:
            await work(tx)
        return tx.outbox

    async def command(self, verb: SchedulerVerb, message: BaseModel, at: datetime = NOW) -> list[OutboxRow]:
        handler = {
            SchedulerVerb.QUOTE: self.handlers.quote,
            SchedulerVerb.BOOK: self.handlers.book,
            SchedulerVerb.RELEASE: self.handlers.release,
            SchedulerVerb.CANCEL: self.handlers.cancel,
        }[verb]
        msg = incoming(subjects.scheduler_command(POOL, verb), message, f"{verb}:{id(message)}")
        return await self.run(lambda tx: handler(tx, msg), at)

    async def hold(self, request_id: str, start: datetime) -> str:
        """One hold of the pool's only core, from `start` for a minute; its session id."""
        quote = QuoteSlots(
            request_id=request_id,
            owner=OWNER,
            cores_min=1,
            cores_max=1,
            memory_min=1,
            memory_max=1,
            duration_s=60,
            earliest_start=start,
            latest_start=start,
            prepare_s=0,
            max_offers=1,
            expires_at=NOW + timedelta(minutes=5),
            requested_at=NOW,
        )
        (answer,) = await self.command(SchedulerVerb.QUOTE, quote)
        (hold,) = SlotsQuoted.model_validate_json(answer.payload).holds
        return hold.session_id

    async def book(self, session_id: str, at: datetime = NOW) -> list[OutboxRow]:
        book = BookSession(session_id=session_id, owner=OWNER, executable={}, platform="local")
        return await self.command(SchedulerVerb.BOOK, book, at)

    async def cancel(self, session_id: str) -> list[OutboxRow]:
        return await self.command(SchedulerVerb.CANCEL, CancelSession(session_id=session_id, reason="no"))

    async def state(self, session_id: str) -> ReservationState | None:
        async with self.store.transaction(NOW) as tx:
            return await scheduler_tables.state_of(tx, session_id)


@pytest.fixture
async def scheduler(tmp_path: Path) -> AsyncIterator[Scheduler]:
    pool = Pool(name=POOL, platform="local", cores=1, memory_gib=4, grid_s=1, prepare_s=0, max_offers=1)
    handlers = SchedulerHandlers(pool, hold_grace_s=60)
    store = Store(tmp_path / "scheduler.sqlite", scheduler_tables.SCHEMA)
    await store.open()
    await handlers.load(store)
    yield Scheduler(store, handlers)
    await store.close()


def sent(rows: list[OutboxRow]) -> list[str]:
    return [row.subject for row in rows]


LATER = NOW + timedelta(hours=1)  # a slot far enough ahead that its booking is not launched at once


# -- the scheduler ------------------------------------------------------------------------------------


async def test_cancelling_a_hold_frees_it_and_forwards_the_cancel_to_the_launcher(
    scheduler: Scheduler,
) -> None:
    session_id = await scheduler.hold("r1", LATER)
    rows = await scheduler.cancel(session_id)
    assert sent(rows) == [subjects.launcher_command(POOL, LauncherVerb.STOP)]
    stop = StopSession.model_validate_json(rows[0].payload)
    assert (stop.session_id, stop.owner, stop.reason) == (session_id, OWNER, "no")
    assert await scheduler.state(session_id) is S.RELEASED
    assert session_id not in scheduler.handlers.ledger


async def test_cancelling_a_booking_not_launched_ends_it_and_it_is_never_launched(
    scheduler: Scheduler,
) -> None:
    session_id = await scheduler.hold("r1", LATER)
    booked = await scheduler.book(session_id)
    assert sent(booked) == [subjects.session_event(OWNER, session_id, "WAITING")]
    rows = await scheduler.cancel(session_id)
    assert sent(rows) == [subjects.launcher_command(POOL, LauncherVerb.STOP)]
    assert await scheduler.state(session_id) is S.ENDED
    assert session_id not in scheduler.handlers.ledger
    # Its launch time comes and goes: nothing is launched.
    assert await scheduler.run(scheduler.handlers.tick, LATER) == []
    # A second cancel finds the session over and says nothing more.
    assert await scheduler.cancel(session_id) == []


async def test_cancelling_a_launched_booking_stops_it_and_keeps_its_capacity_until_it_ends(
    scheduler: Scheduler,
) -> None:
    session_id = await scheduler.hold("r1", NOW + timedelta(seconds=1))
    booked = await scheduler.book(session_id, NOW + timedelta(seconds=1))
    assert sent(booked)[-1] == subjects.launcher_command(POOL, LauncherVerb.LAUNCH)
    rows = await scheduler.cancel(session_id)
    assert sent(rows) == [subjects.launcher_command(POOL, LauncherVerb.STOP)]
    assert await scheduler.state(session_id) is S.LAUNCHED
    assert session_id in scheduler.handlers.ledger
    ended = SessionEvent(session_id=session_id, phase="CANCELLED", at=NOW)
    msg = incoming(subjects.session_event(OWNER, session_id, "CANCELLED"), ended, "e1")
    await scheduler.run(lambda tx: scheduler.handlers.session_event(tx, msg))
    assert await scheduler.state(session_id) is S.ENDED
    assert session_id not in scheduler.handlers.ledger
    # The same end reported again changes nothing.
    assert await scheduler.run(lambda tx: scheduler.handlers.session_event(tx, msg)) == []
    assert await scheduler.state(session_id) is S.ENDED


async def test_a_booking_with_no_hold_is_failed_by_the_launcher(scheduler: Scheduler) -> None:
    rows = await scheduler.book("no-such-session")
    assert sent(rows) == [subjects.launcher_command(POOL, LauncherVerb.FAIL)]
    fail = FailSession.model_validate_json(rows[0].payload)
    assert (fail.session_id, fail.owner) == ("no-such-session", OWNER)
    assert [m.kind for m in fail.messages] == ["urn:not-found"]


async def test_a_lapsed_hold_whose_slot_is_taken_is_failed_by_the_launcher(scheduler: Scheduler) -> None:
    lapsed = await scheduler.hold("r1", LATER)
    expiry = NOW + timedelta(minutes=5, seconds=61)  # the offer's expiry plus the grace
    await scheduler.run(scheduler.handlers.tick, expiry)
    assert await scheduler.state(lapsed) is S.RELEASED
    taker = await scheduler.hold("r2", LATER)  # the core is free again, and taken
    rows = await scheduler.book(lapsed, expiry)
    assert sent(rows) == [subjects.launcher_command(POOL, LauncherVerb.FAIL)]
    assert [m.kind for m in FailSession.model_validate_json(rows[0].payload).messages] == [
        "urn:offer-expired"
    ]
    assert await scheduler.state(lapsed) is S.RELEASED
    assert await scheduler.state(taker) is S.HELD


async def test_a_lapsed_hold_whose_slot_is_free_is_booked_after_all(scheduler: Scheduler) -> None:
    lapsed = await scheduler.hold("r1", LATER)
    expiry = NOW + timedelta(minutes=5, seconds=61)
    await scheduler.run(scheduler.handlers.tick, expiry)
    rows = await scheduler.book(lapsed, expiry)
    assert sent(rows) == [subjects.session_event(OWNER, lapsed, "WAITING")]
    assert await scheduler.state(lapsed) is S.BOOKED
    assert lapsed in scheduler.handlers.ledger
    assert await scheduler.book(lapsed, expiry) == []  # a repeated book is a no-op


async def test_booking_frees_the_siblings_and_a_release_never_frees_a_booking(scheduler: Scheduler) -> None:
    sibling = await scheduler.hold("r1", LATER)
    chosen = await scheduler.hold("r1b", LATER + timedelta(minutes=2))
    book = BookSession(session_id=chosen, owner=OWNER, siblings=[sibling], executable={}, platform="local")
    await scheduler.command(SchedulerVerb.BOOK, book)
    assert await scheduler.state(sibling) is S.RELEASED
    assert sibling not in scheduler.handlers.ledger
    with pytest.raises(IllegalReservationChange, match="from booked to released"):
        await scheduler.command(SchedulerVerb.RELEASE, ReleaseHolds(session_ids=[chosen], reason="EXPIRED"))
    # The refused message changed nothing, in the table or the ledger.
    assert await scheduler.state(chosen) is S.BOOKED
    assert chosen in scheduler.handlers.ledger


async def test_the_release_command_and_the_terminal_event_free_a_hold_once(scheduler: Scheduler) -> None:
    session_id = await scheduler.hold("r1", LATER)
    await scheduler.command(SchedulerVerb.RELEASE, ReleaseHolds(session_ids=[session_id], reason="REJECTED"))
    assert await scheduler.state(session_id) is S.RELEASED
    assert len(scheduler.handlers.ledger) == 0
    rejected = SessionEvent(session_id=session_id, phase="REJECTED", at=NOW)
    msg = incoming(subjects.session_event(OWNER, session_id, "REJECTED"), rejected, "e1")
    assert await scheduler.run(lambda tx: scheduler.handlers.session_event(tx, msg)) == []
    assert await scheduler.state(session_id) is S.RELEASED


# -- the launcher -------------------------------------------------------------------------------------


class RecordingDrivers(Drivers):
    """The launcher's drivers, recording which sessions the handlers asked to drive or wake."""

    def __init__(self, work_root: Path) -> None:
        super().__init__(None, {}, work_root)
        self.ensured: list[str] = []

    def ensure(self, session_id: str) -> None:
        self.ensured.append(session_id)

    def wake(self, session_id: str) -> None:
        self.ensured.append(f"wake {session_id}")


@dataclass
class Launcher:
    store: Store
    handlers: LauncherHandlers
    drivers: RecordingDrivers

    async def command(self, verb: LauncherVerb, message: BaseModel) -> list[OutboxRow]:
        handler = {
            LauncherVerb.LAUNCH: self.handlers.launch,
            LauncherVerb.STOP: self.handlers.stop,
            LauncherVerb.FAIL: self.handlers.fail,
        }[verb]
        msg = incoming(subjects.launcher_command(POOL, verb), message, f"{verb}:{id(message)}")
        async with self.store.transaction(NOW) as tx:
            await handler(tx, msg)
        return tx.outbox

    async def phase(self, session_id: str) -> Phase | None:
        run = await launcher_tables.read(self.store, session_id)
        return run.phase if run is not None else None


@pytest.fixture
async def launcher(tmp_path: Path) -> AsyncIterator[Launcher]:
    store = Store(tmp_path / "launcher.sqlite", launcher_tables.SCHEMA)
    await store.open()
    drivers = RecordingDrivers(tmp_path / "sessions")
    yield Launcher(store, LauncherHandlers(drivers, POOL, "local"), drivers)
    await store.close()


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
    assert sent(rows) == [subjects.session_event(OWNER, "s1", "CANCELLED")]
    event = SessionEvent.model_validate_json(rows[0].payload)
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
    assert sent(rows) == [subjects.session_event(OWNER, "s2", "FAILED")]
    assert SessionEvent.model_validate_json(rows[0].payload).messages == [why]
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
    run = await launcher_tables.read(launcher.store, "s4")
    assert run is not None and run.cancel_reason == "no"


# -- publish_phase ------------------------------------------------------------------------------------


async def test_publish_phase_checks_every_change_against_the_lifecycle(tmp_path: Path) -> None:
    store = Store(tmp_path / "any.sqlite", "")
    await store.open()
    async with store.transaction(NOW) as tx:
        assert await publish_phase(tx, "s", OWNER, Phase.RUNNING, Phase.RELEASING, {}) is True
        assert await publish_phase(tx, "s", OWNER, Phase.RELEASING, Phase.RELEASING, {}) is False
        with pytest.raises(IllegalTransition, match="cannot go from COMPLETED to RUNNING"):
            await publish_phase(tx, "s", OWNER, Phase.COMPLETED, Phase.RUNNING, {})
        with pytest.raises(IllegalTransition):
            await publish_phase(tx, "s", OWNER, Phase.INITIAL, Phase.WAITING, {})
    assert sent(tx.outbox) == [subjects.session_event(OWNER, "s", "RELEASING")]
    assert [row.msg_id for row in tx.outbox] == [subjects.phase_msg_id("s", "RELEASING")]
    await store.close()
