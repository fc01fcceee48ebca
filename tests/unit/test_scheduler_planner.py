"""The scheduler's planner, checked against an independent minute-by-minute brute force.

In the property tests every reservation boundary, slot start and duration is a whole minute, so
sampling usage once per minute is exact and shares no code with the event-point planner.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.scheduler.domain import (
    Capacity,
    PlanResult,
    Reservation,
    Slot,
    SlotRequest,
    Usage,
    fits,
    peak_resources,
    peak_usage,
    plan,
    plan_spans,
    plan_window,
    span,
)

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)  # a whole multiple of 1, 2 and 5 minutes since the epoch
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def res(rid: str, start_min: float, end_min: float, cores: int, memory: int, storage: int = 0) -> Reservation:
    return Reservation(rid, at(start_min), at(end_min), cores, memory, storage)


def request(
    *,
    cores: tuple[int, int] = (1, 4),
    memory: tuple[int, int] = (1, 4),
    duration: timedelta = 2 * HOUR,
    earliest: datetime = T0,
    latest: datetime | None = None,
    max_offers: int = 4,
    storage: int = 0,
) -> SlotRequest:
    return SlotRequest(
        cores_min=cores[0],
        cores_max=cores[1],
        memory_min=memory[0],
        memory_max=memory[1],
        duration=duration,
        earliest_start=earliest,
        latest_start=earliest + 2 * HOUR if latest is None else latest,
        max_offers=max_offers,
        storage_min=storage,
    )


# --- the independent brute force ------------------------------------------------------------------


def minutes_of(t: datetime) -> int:
    seconds = (t - T0).total_seconds()
    assert seconds % 60 == 0, t
    return int(seconds // 60)


Interval = tuple[int, int, int, int, int]  # start minute, end minute, cores, memory, storage


def usage(intervals: list[Interval], minute: int) -> tuple[int, int, int]:
    """Cores, memory and storage in use during the minute starting at `minute` (whole-minute bounds)."""
    cores = sum(c for s, e, c, _, _ in intervals if s <= minute < e)
    memory = sum(m for s, e, _, m, _ in intervals if s <= minute < e)
    storage = sum(g for s, e, _, _, g in intervals if s <= minute < e)
    return cores, memory, storage


def as_intervals(items: list[Reservation] | tuple[Slot, ...]) -> list[Interval]:
    return [(minutes_of(r.start), minutes_of(r.end), r.cores, r.memory_gib, r.storage_gib) for r in items]


def brute_within(capacity: Capacity, intervals: list[Interval]) -> bool:
    if not intervals:
        return True
    lo = min(i[0] for i in intervals)
    hi = max(i[1] for i in intervals)
    for minute in range(lo, hi):
        c, m, g = usage(intervals, minute)
        if c > capacity.cores or m > capacity.memory_gib or g > capacity.storage_gib:
            return False
    return True


@dataclass
class Brute:
    """Free capacity per minute over a fixed horizon, from the existing reservations only."""

    capacity: Capacity
    intervals: list[Interval]

    def min_free(self, start: int, length: int) -> tuple[int, int, int]:
        used = [usage(self.intervals, m) for m in range(start, start + length)]
        return (
            self.capacity.cores - max(u[0] for u in used),
            self.capacity.memory_gib - max(u[1] for u in used),
            self.capacity.storage_gib - max(u[2] for u in used),
        )

    def feasible(self, start: int, length: int, req: SlotRequest) -> bool:
        cores, memory, storage = self.min_free(start, length)
        return cores >= req.cores_min and memory >= req.memory_min and storage >= req.storage_min


def grid_ceil_minutes(t: datetime, grid_min: int) -> int:
    epoch_seconds = int(t.timestamp())
    step = grid_min * 60
    up = -(-epoch_seconds // step) * step
    return minutes_of(datetime.fromtimestamp(up, UTC))


# --- property tests ---------------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Capacity, list[Reservation], SlotRequest, int]:
    capacity = Capacity(draw(st.integers(1, 12)), draw(st.integers(1, 24)), draw(st.integers(0, 30)))
    # Existing reservations that fit: draw candidates, keep those the brute force accepts.
    kept: list[Reservation] = []
    for i in range(draw(st.integers(0, 14))):
        start = draw(st.integers(-60, 420))
        length = draw(st.integers(1, 180))
        cand = res(
            f"r{i}",
            start,
            start + length,
            draw(st.integers(0, capacity.cores)),
            draw(st.integers(0, capacity.memory_gib)),
            draw(st.integers(0, capacity.storage_gib)),
        )
        if brute_within(capacity, as_intervals([*kept, cand])):
            kept.append(cand)
    cores_min = draw(st.integers(1, capacity.cores))
    memory_min = draw(st.integers(1, capacity.memory_gib))
    earliest = T0 + timedelta(seconds=draw(st.integers(0, 180 * 60)))
    req = SlotRequest(
        cores_min=cores_min,
        cores_max=draw(st.integers(cores_min, 3 * cores_min + 2)),
        memory_min=memory_min,
        memory_max=draw(st.integers(memory_min, 3 * memory_min + 2)),
        duration=timedelta(minutes=draw(st.integers(1, 120))),
        earliest_start=earliest,
        latest_start=earliest + timedelta(seconds=draw(st.integers(0, 240 * 60))),
        max_offers=draw(st.integers(1, 5)),
        # Storage is often not asked for at all; when it is, it may be anything the pool has.
        storage_min=draw(st.one_of(st.just(0), st.integers(0, capacity.storage_gib))),
    )
    grid_min = draw(st.sampled_from([1, 2, 5]))
    return capacity, kept, req, grid_min


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_plan_properties_against_brute_force(
    scenario: tuple[Capacity, list[Reservation], SlotRequest, int],
) -> None:
    capacity, existing, req, grid_min = scenario
    result = plan("pool", capacity, existing, req, grid=timedelta(minutes=grid_min))
    brute = Brute(capacity, as_intervals(existing))
    length = int(req.duration / MIN)
    first_start = grid_ceil_minutes(req.earliest_start, grid_min)
    last_start = (req.latest_start - T0) // MIN  # latest whole minute not after latest_start

    def earliest_feasible(from_minute: int) -> int | None:
        for s in range(from_minute, last_start + 1, grid_min):
            if brute.feasible(s, length, req):
                return s
        return None

    assert len(result.slots) <= req.max_offers
    assert bool(result.slots) != bool(result.reasons)

    lower = first_start
    for slot in result.slots:
        # Shape of each offer.
        assert slot.end - slot.start == req.duration
        assert req.earliest_start <= slot.start <= req.latest_start
        assert req.cores_min <= slot.cores <= req.cores_max
        assert req.memory_min <= slot.memory_gib <= req.memory_max
        assert slot.storage_gib == req.storage_min  # storage is not scaled
        start = minutes_of(slot.start)
        assert start % grid_min == 0
        # Earliest first, back to back: the earliest feasible grid start after the previous offer.
        assert start == earliest_feasible(lower)
        free_cores, free_memory, _ = brute.min_free(start, length)
        assert slot.cores == min(2 * req.cores_min, req.cores_max, free_cores)
        assert slot.memory_gib == min(2 * req.memory_min, req.memory_max, free_memory)
        lower = grid_ceil_minutes(slot.end, grid_min)

    if len(result.slots) < req.max_offers:
        # Nothing was left out: no further feasible start exists in the window.
        assert earliest_feasible(lower) is None

    # The crucial one: all offers held at once never over-book the pool at any minute.
    assert brute_within(capacity, as_intervals(existing) + as_intervals(result.slots))


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_plan_is_deterministic(
    scenario: tuple[Capacity, list[Reservation], SlotRequest, int], rnd: random.Random
) -> None:
    capacity, existing, req, grid_min = scenario
    grid = timedelta(minutes=grid_min)
    once = plan("pool", capacity, existing, req, grid=grid)
    shuffled = list(existing)
    rnd.shuffle(shuffled)
    assert plan("pool", capacity, existing, req, grid=grid) == once
    assert plan("pool", capacity, shuffled, req, grid=grid) == once
    assert plan_spans("pool", capacity, [span(r) for r in shuffled], req, grid=grid) == once
    # Only reservations overlapping the plan window matter.
    window_start, window_end = plan_window(req, grid=grid)
    inside = [r for r in shuffled if r.start < window_end and r.end > window_start]
    assert plan("pool", capacity, inside, req, grid=grid) == once


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_peak_usage_and_fits_against_brute_force(
    scenario: tuple[Capacity, list[Reservation], SlotRequest, int],
) -> None:
    capacity, existing, _, _ = scenario
    intervals = as_intervals(existing)
    minutes = range(-60, 700)
    expected = tuple(max((usage(intervals, m)[i] for m in minutes), default=0) for i in range(3))
    assert peak_resources(existing) == expected
    assert peak_usage(existing) == expected[:2]
    for cand in (
        res("c1", 30, 90, 1, 1),
        res("c2", 0, 600, capacity.cores, 1),
        res("c3", 100, 200, 0, 0, capacity.storage_gib),
        res("c4", -30, 30, 1, 1, 1),
    ):
        assert fits(capacity, existing, cand) == brute_within(capacity, [*intervals, *as_intervals([cand])])


# --- explicit cases -----------------------------------------------------------------------------


def test_empty_pool_offers_back_to_back_slots() -> None:
    result = plan("local", Capacity(8, 16), [], request(cores=(2, 8), memory=(3, 4), latest=at(360)))
    assert result.reasons == ()
    assert [s.start for s in result.slots] == [at(0), at(120), at(240), at(360)]
    assert all(s.end - s.start == 2 * HOUR for s in result.slots)
    # cores = min(2 x min, max, free); memory likewise.
    assert {(s.cores, s.memory_gib) for s in result.slots} == {(4, 4)}


def test_second_offer_starts_when_the_first_ends() -> None:
    # A booking from 3 h onward leaves room for exactly two back-to-back 1 h offers before it.
    full = res("b", 180, 600, 4, 4)
    req = request(cores=(1, 1), memory=(1, 1), duration=HOUR, earliest=at(60), latest=at(300))
    result = plan("local", Capacity(4, 4), [full], req)
    assert [(s.start, s.end) for s in result.slots] == [(at(60), at(120)), (at(120), at(180))]
    assert result.slots[1].start == result.slots[0].end


def test_pool_full_until_t_offers_start_at_t_rounded_up_to_the_grid() -> None:
    t = T0 + timedelta(minutes=95, seconds=20)
    busy = Reservation("b", T0 - HOUR, t, 4, 8)
    result = plan("local", Capacity(4, 8), [busy], request(cores=(2, 4), memory=(2, 4), latest=at(600)))
    assert result.slots[0].start == at(96)
    five = plan("local", Capacity(4, 8), [busy], request(latest=at(600)), grid=timedelta(minutes=5))
    assert five.slots[0].start == at(100)


def test_earliest_start_is_rounded_up_to_the_grid() -> None:
    earliest = T0 + timedelta(seconds=1)
    result = plan("local", Capacity(4, 4), [], request(earliest=earliest, max_offers=1))
    assert result.slots[0].start == at(1)


def test_offers_of_one_request_are_all_held_at_once() -> None:
    # The pool fits one request's minimum at a time: offers must not overlap, or together they
    # would exceed the 4 cores.
    result = plan("local", Capacity(4, 4), [], request(cores=(4, 4), memory=(1, 1), latest=at(240)))
    slots = result.slots
    assert [s.start for s in slots] == [at(0), at(120), at(240)]
    held = [Reservation(str(i), s.start, s.end, s.cores, s.memory_gib) for i, s in enumerate(slots)]
    assert peak_usage(held) == (4, 1)


def test_offer_takes_the_smallest_free_capacity_over_its_whole_interval() -> None:
    # 3 of 8 cores are busy in the second hour of the first slot only.
    busy = res("b", 60, 90, 3, 0)
    result = plan("local", Capacity(8, 8), [busy], request(cores=(2, 8), memory=(1, 8), max_offers=2))
    assert [(s.start, s.cores) for s in result.slots] == [(at(0), 4), (at(120), 4)]
    tight = plan("local", Capacity(8, 8), [res("b", 60, 90, 5, 0)], request(cores=(2, 8), max_offers=1))
    assert tight.slots[0].cores == 3


def test_half_open_reservations_do_not_overlap_at_their_boundary() -> None:
    before = res("a", -120, 0, 4, 4)
    after = res("c", 120, 240, 4, 4)
    result = plan(
        "local", Capacity(4, 4), [before, after], request(cores=(4, 4), memory=(4, 4), latest=at(0))
    )
    assert [s.start for s in result.slots] == [at(0)]


def test_request_time_zone_is_kept_and_instants_compare_correctly() -> None:
    cet = timezone(timedelta(hours=1))
    busy = res("b", 0, 30, 4, 4)  # in UTC
    req = request(cores=(4, 4), memory=(4, 4), earliest=T0.astimezone(cet), max_offers=1)
    result = plan("local", Capacity(4, 4), [busy], req)
    assert result.slots[0].start == at(30)
    assert result.slots[0].start.utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (request(cores=(64, 64)), "requested 64 cores (minimum) but pool 'local' has 4 cores in total"),
        (
            request(memory=(64, 64)),
            "requested 64 GiB of memory (minimum) but pool 'local' has 8 GiB in total",
        ),
        (request(cores=(0, 4)), "requested minimum cores must be at least 1, got 0"),
        (request(memory=(0, 4)), "requested minimum memory must be at least 1 GiB, got 0"),
        (request(cores=(3, 2)), "requested maximum cores (2) is below the minimum (3)"),
        (request(memory=(3, 2)), "requested maximum memory (2 GiB) is below the minimum (3 GiB)"),
        (request(duration=timedelta(0)), "requested duration must be positive, got PT0S"),
        (request(duration=-HOUR), "requested duration must be positive, got -PT1H"),
        (
            request(latest=at(-1)),
            "start window ends (2026-01-01T09:59:00+00:00) before it begins (2026-01-01T10:00:00+00:00)",
        ),
        (request(max_offers=0), "at least one offer must be allowed, got max_offers=0"),
    ],
)
def test_validation_reasons(req: SlotRequest, expected: str) -> None:
    result = plan("local", Capacity(4, 8), [], req)
    assert result == PlanResult((), (expected,))


def test_several_validation_reasons_are_reported_together() -> None:
    result = plan("local", Capacity(4, 8), [], request(cores=(64, 64), duration=timedelta(0)))
    assert len(result.reasons) == 2


def test_no_free_slot_reason() -> None:
    busy = res("b", -60, 600, 3, 8)
    req = request(cores=(2, 4), memory=(2, 4), latest=at(120))
    result = plan("local", Capacity(4, 8), [busy], req)
    assert result == PlanResult(
        (),
        (
            "no free slot of PT2H with 2 cores and 2 GiB starts between 2026-01-01T10:00:00+00:00 "
            "and 2026-01-01T12:00:00+00:00 in pool 'local'",
        ),
    )


def test_window_without_a_grid_point() -> None:
    earliest = T0 + timedelta(seconds=10)
    result = plan(
        "local", Capacity(4, 8), [], request(earliest=earliest, latest=earliest + timedelta(seconds=20))
    )
    assert result.slots == ()
    assert result.reasons[0].startswith("no start time on the PT1M grid lies between")


def test_grid_must_be_positive() -> None:
    with pytest.raises(ValueError, match="grid must be positive"):
        plan("local", Capacity(4, 8), [], request(), grid=timedelta(0))


def test_peak_usage_and_fits_examples() -> None:
    a = res("a", 0, 60, 2, 3)
    b = res("b", 60, 120, 2, 3)  # back to back with a: never simultaneous
    c = res("c", 30, 90, 1, 5)
    assert peak_usage([]) == (0, 0)
    assert peak_usage([a, b]) == (2, 3)
    assert peak_usage([a, b, c]) == (3, 8)
    assert peak_usage([res("empty", 10, 10, 99, 99)]) == (0, 0)
    cap = Capacity(3, 8)
    assert fits(cap, [a, b], c)
    assert not fits(cap, [a, b, c], res("d", 45, 50, 1, 0))
    assert fits(cap, [a, b, c], res("d", 90, 100, 1, 5))


# --- storage --------------------------------------------------------------------------------------


def test_capacity_reservation_and_slot_default_to_no_storage() -> None:
    assert Capacity(4, 8) == Capacity(4, 8, 0)
    assert res("a", 0, 60, 1, 1).storage_gib == 0
    result = plan("local", Capacity(4, 8), [], request(max_offers=1))
    assert result.slots[0].storage_gib == 0


def test_storage_is_booked_and_not_scaled() -> None:
    # 80 of 100 GiB are held for the first hour: 30 GiB only fit once that booking ends.
    busy = res("b", -60, 60, 0, 0, 80)
    cap = Capacity(8, 8, 100)
    needs_30 = plan("local", cap, [busy], request(duration=HOUR, storage=30, max_offers=2))
    assert [(s.start, s.storage_gib) for s in needs_30.slots] == [(at(60), 30), (at(120), 30)]
    needs_20 = plan("local", cap, [busy], request(duration=HOUR, storage=20, max_offers=1))
    assert [(s.start, s.storage_gib) for s in needs_20.slots] == [(at(0), 20)]
    # Without storage the booking is no obstacle.
    assert plan("local", cap, [busy], request(max_offers=1)).slots[0].start == at(0)


def test_offers_of_one_request_together_stay_within_storage() -> None:
    result = plan("local", Capacity(8, 8, 100), [], request(duration=HOUR, storage=60, latest=at(180)))
    held = [
        Reservation(str(i), s.start, s.end, s.cores, s.memory_gib, s.storage_gib)
        for i, s in enumerate(result.slots)
    ]
    assert len(held) == 4
    assert peak_resources(held) == Usage(2, 2, 60)  # back to back, never simultaneous


def test_storage_reasons() -> None:
    too_much = plan("local", Capacity(4, 8, 100), [], request(storage=200))
    assert too_much == PlanResult((), ("requested 200 GiB of storage but pool 'local' has 100 GiB in total",))
    no_storage = plan("local", Capacity(4, 8), [], request(storage=1))
    assert no_storage.reasons == ("requested 1 GiB of storage but pool 'local' has 0 GiB in total",)
    negative = plan("local", Capacity(4, 8, 100), [], request(storage=-1))
    assert negative.reasons == ("requested storage must not be negative, got -1 GiB",)


def test_no_free_slot_reason_names_storage() -> None:
    busy = res("b", -60, 600, 0, 0, 90)
    result = plan("local", Capacity(4, 8, 100), [busy], request(cores=(2, 4), memory=(2, 4), storage=20))
    assert result.reasons == (
        "no free slot of PT2H with 2 cores, 2 GiB and 20 GiB of storage starts between "
        "2026-01-01T10:00:00+00:00 and 2026-01-01T12:00:00+00:00 in pool 'local'",
    )


def test_peak_resources_and_fits_with_storage() -> None:
    a = res("a", 0, 60, 1, 1, 40)
    b = res("b", 30, 90, 1, 1, 50)
    c = res("c", 60, 120, 1, 1, 60)  # starts when a ends
    assert peak_resources([]) == (0, 0, 0)
    assert peak_resources([a, b, c]) == Usage(2, 2, 110)
    assert peak_usage([a, b, c]) == (2, 2)
    assert fits(Capacity(4, 4, 110), [a, b], c)
    assert not fits(Capacity(4, 4, 109), [a, b], c)
    assert fits(Capacity(4, 4, 100), [a, c], res("d", 0, 120, 1, 1, 40))
