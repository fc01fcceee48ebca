"""The scheduler's handlers as units of work: quotes held or refused in words, bookings launched on
time, capacity given back by releases, expiries and ended sessions, and preparation times learnt.

The cancel and failed-booking paths, owned with the launcher, are in test_phase_owners_handlers.py.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from services.scheduler.estimates import REMOTE_SOURCE
from services.scheduler.states import ReservationState
from shared import subjects
from shared.lifecycle import Phase
from shared.messages import LaunchSession, PreparationMeasured, SessionEvent
from shared.models import SIMPLE_DATA_KIND
from shared.pools import PoolLimits
from shared.subjects import LauncherFact, LauncherVerb
from tests.handlers.harness import NOW, OWNER, StoreMaker, only, subjects_of
from tests.handlers.units import HOLD_GRACE_S, TINY, Scheduler, scheduler_unit

S = ReservationState
LATER = NOW + timedelta(hours=1)
#: When the holds of a quote made at NOW lapse: the offer's expiry (see `Scheduler.quote`) and the grace.
LAPSED = NOW + timedelta(minutes=5, seconds=HOLD_GRACE_S)


# -- quotes ---------------------------------------------------------------------------------------


async def test_a_quote_with_capacity_holds_slots_in_the_table_and_the_ledger(stores: StoreMaker) -> None:
    pool = TINY.model_copy(update={"cores": 2, "max_offers": 3})
    async with scheduler_unit(pool, stores=stores) as scheduler:
        quoted = await scheduler.quote("r1", LATER, latest_start=LATER + timedelta(hours=1), max_offers=5)
        assert (quoted.request_id, quoted.pool, quoted.reasons) == ("r1", TINY.name, [])
        assert len(quoted.holds) == 3  # the pool's max_offers caps the request's
        assert all(
            (h.pool, h.cores, h.end - h.start) == (TINY.name, 1, timedelta(minutes=1)) for h in quoted.holds
        )
        rows = await scheduler.rows("SELECT session_id, request_id, owner, state FROM reservations")
        assert sorted(tuple(r) for r in rows) == sorted(
            (h.session_id, "r1", OWNER, "held") for h in quoted.holds
        )
        assert {h.session_id for h in quoted.holds} <= {r.id for r in scheduler.handlers.ledger}


async def test_a_quote_applied_again_on_a_store_that_lost_it_holds_the_same_sessions() -> None:
    """The start-up replay applies a quote again when a crash lost the transaction that held its
    slots; the answer it re-produces is dropped by the stream as a duplicate, so the holds must
    carry the ids the offer set already announced. Another request gets other ids."""
    pool = TINY.model_copy(update={"cores": 2, "max_offers": 2})
    window = {"latest_start": LATER + timedelta(hours=1), "max_offers": 2}
    async with scheduler_unit(pool) as first:
        announced = await first.quote("r1", LATER, **window)
    async with scheduler_unit(pool) as restarted:  # the same quote on a store without it
        again = await restarted.quote("r1", LATER, **window)
        other = await restarted.quote("r2", LATER, **window)
    assert len(announced.holds) == 2
    assert [h.session_id for h in again.holds] == [h.session_id for h in announced.holds]
    assert not {h.session_id for h in other.holds} & {h.session_id for h in announced.holds}


async def test_a_quote_over_the_pools_limits_is_refused_with_every_reason(stores: StoreMaker) -> None:
    limits = PoolLimits(cores=1, memory_gib=2, storage_gib=4, duration_s=3600)
    pool = TINY.model_copy(update={"limits": limits})
    async with scheduler_unit(pool, stores=stores) as scheduler:
        quoted = await scheduler.quote(
            "r1",
            LATER,
            cores_min=2,
            cores_max=2,
            memory_min=3,
            memory_max=3,
            storage_min=5,
            duration_s=7200,
        )
        assert quoted.holds == []
        assert quoted.reasons == [
            "requested 2 cores (minimum) but pool 'tiny' allows at most 1 per request",
            "requested 3 GiB of memory (minimum) but pool 'tiny' allows at most 2 GiB per request",
            "requested 5 GiB of storage (minimum) but pool 'tiny' allows at most 4 GiB per request",
            "requested a duration of PT2H but pool 'tiny' allows at most PT1H",
        ]
        assert await scheduler.rows("SELECT * FROM reservations") == []


async def test_a_quote_with_no_free_slot_says_why(scheduler: Scheduler) -> None:
    await scheduler.hold("r1", LATER)
    quoted = await scheduler.quote("r2", LATER)
    assert quoted.holds == [] and quoted.reasons
    assert len(await scheduler.rows("SELECT * FROM reservations")) == 1


async def test_a_quote_whose_window_closes_before_preparation_ends_is_refused(stores: StoreMaker) -> None:
    async with scheduler_unit(TINY.model_copy(update={"prepare_s": 600}), stores=stores) as scheduler:
        quoted = await scheduler.quote("r1", NOW + timedelta(minutes=5))
        assert quoted.holds == []
        (reason,) = quoted.reasons
        assert "preparation on pool 'tiny' takes PT10M" in reason


# -- bookings and the timers ----------------------------------------------------------------------


async def test_a_booking_waits_for_its_launch_time_and_is_launched_once(scheduler: Scheduler) -> None:
    session_id = await scheduler.hold("r1", LATER)
    booked = await scheduler.book(session_id)
    assert [(s.subject, s.msg_id) for s in booked] == [
        (subjects.session_event(OWNER, session_id, "WAITING"), subjects.phase_msg_id(session_id, "WAITING"))
    ]
    assert only(booked, SessionEvent).phase == "WAITING"
    assert await scheduler.state(session_id) is S.BOOKED
    assert await scheduler.tick(LATER - timedelta(seconds=1)) == []
    launched = await scheduler.tick(LATER)
    assert [(s.subject, s.msg_id) for s in launched] == [
        (subjects.launcher_command(TINY.name, LauncherVerb.LAUNCH), f"launch:{session_id}")
    ]
    launch = only(launched, LaunchSession)
    assert (launch.session_id, launch.owner, launch.pool, launch.cores) == (session_id, OWNER, TINY.name, 1)
    assert (launch.start, launch.end) == (LATER, LATER + timedelta(minutes=1))
    assert await scheduler.state(session_id) is S.LAUNCHED
    assert await scheduler.tick(LATER + timedelta(seconds=1)) == []


async def test_a_hold_lasts_its_offers_expiry_and_the_grace(scheduler: Scheduler) -> None:
    session_id = await scheduler.hold("r1", LATER)
    assert await scheduler.tick(LAPSED - timedelta(seconds=1)) == []
    assert await scheduler.state(session_id) is S.HELD
    assert await scheduler.tick(LAPSED) == []  # a lapsed hold is let go without a word
    assert await scheduler.state(session_id) is S.RELEASED
    assert session_id not in scheduler.handlers.ledger


async def test_releases_and_cancels_of_unknown_sessions_change_nothing(scheduler: Scheduler) -> None:
    session_id = await scheduler.hold("r1", LATER)
    assert await scheduler.release("no-such-session") == []
    assert await scheduler.cancel("no-such-session") == []
    assert await scheduler.state(session_id) is S.HELD
    assert [r.id for r in scheduler.handlers.ledger] == [session_id]


async def test_a_launched_session_that_ends_gives_its_slot_to_the_next_quote(scheduler: Scheduler) -> None:
    session_id = await scheduler.hold("r1", NOW)
    assert subjects_of(await scheduler.book(session_id))[-1] == subjects.launcher_command(
        TINY.name, LauncherVerb.LAUNCH
    )
    assert (await scheduler.quote("r2", NOW)).holds == []
    assert await scheduler.report(session_id, Phase.COMPLETED, at=NOW) == []
    assert await scheduler.state(session_id) is S.ENDED
    assert len((await scheduler.quote("r3", NOW)).holds) == 1


async def test_only_terminal_phases_reach_the_scheduler(scheduler: Scheduler) -> None:
    for phase in Phase:
        routed = scheduler.consumer(subjects.session_event(OWNER, "s1", phase.value)) is not None
        assert routed is (
            phase in {Phase.REJECTED, Phase.EXPIRED, Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED}
        )


# -- learnt preparation times ---------------------------------------------------------------------


def measured(session_id: str, data_s: float) -> PreparationMeasured:
    return PreparationMeasured(
        session_id=session_id, seconds=data_s + 5, steps={"data:input": data_s, "image": 5}
    )


async def test_measured_preparations_become_the_estimate_of_the_next_quote(scheduler: Scheduler) -> None:
    subject = subjects.launcher_event(TINY.name, LauncherFact.MEASURED)
    data = [{"kind": SIMPLE_DATA_KIND, "meta": {"name": "input"}}]
    window: dict[str, Any] = {"latest_start": LATER + timedelta(hours=1), "data": data}
    before = (await scheduler.quote("r0", LATER, **window)).holds[0]
    assert before.steps == {"data:input": 30.0}  # a download of unknown size, never measured
    for n, seconds in enumerate((40.0, 90.0, 50.0)):
        session_id = await scheduler.hold(f"r{n + 1}", LATER + timedelta(minutes=2 * (n + 1)))
        assert await scheduler.deliver(subject, measured(session_id, seconds)) == []
    ((estimates,),) = await scheduler.rows("SELECT estimates FROM learned WHERE pool = ?", (TINY.name,))
    assert json.loads(estimates)["samples"] == [
        {"source": REMOTE_SOURCE, "pool": TINY.name, "seconds": [40.0, 90.0, 50.0]}
    ]
    assert len(await scheduler.rows("SELECT * FROM preparations")) == 3
    after = (await scheduler.quote("r4", LATER, **window)).holds[0]
    assert after.steps == {"data:input": 50.0}  # the median of what was measured


async def test_a_session_measured_twice_is_one_sample(scheduler: Scheduler) -> None:
    subject = subjects.launcher_event(TINY.name, LauncherFact.MEASURED)
    session_id = await scheduler.hold("r1", LATER)
    for seconds in (40.0, 90.0):  # a resend with another message id, or a second report
        assert await scheduler.deliver(subject, measured(session_id, seconds)) == []
    ((estimates,),) = await scheduler.rows("SELECT estimates FROM learned WHERE pool = ?", (TINY.name,))
    assert json.loads(estimates)["samples"] == [
        {"source": REMOTE_SOURCE, "pool": TINY.name, "seconds": [40.0]}
    ]


async def test_a_measurement_of_an_unknown_session_is_kept_but_teaches_nothing(scheduler: Scheduler) -> None:
    subject = subjects.launcher_event(TINY.name, LauncherFact.MEASURED)
    assert await scheduler.deliver(subject, measured("elsewhere", 10.0)) == []
    assert [r[0] for r in await scheduler.rows("SELECT session_id FROM preparations")] == ["elsewhere"]
    assert await scheduler.rows("SELECT * FROM learned") == []
