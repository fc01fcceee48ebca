"""The pool ledger's interval index, checked against a brute-force filter over random histories."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.scheduler.domain import Capacity, Reservation, SlotRequest, plan, span
from services.scheduler.ledger import BASE, Ledger, UsageProfile

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MIN = timedelta(minutes=1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def res(
    rid: str, start_min: float, end_min: float, cores: int = 1, memory: int = 1, storage: int = 0
) -> Reservation:
    return Reservation(rid, at(start_min), at(end_min), cores, memory, storage)


def brute(reservations: list[Reservation], start: datetime, end: datetime) -> list[Reservation]:
    if end <= start:
        return []  # an empty window overlaps nothing
    hits = [r for r in reservations if r.start < end and r.end > start and r.end > r.start]
    return sorted(hits, key=lambda r: (r.start, r.id))


# Lengths from zero and sub-minute up to years, so that many length classes and a few very long
# bookings occur; seconds make boundaries coincide often.
lengths = st.one_of(
    st.integers(0, 120),
    st.integers(0, 3 * 3600),
    st.integers(0, 400 * 86400),
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[tuple[str, Reservation | str]], list[tuple[datetime, datetime]]]:
    """Random adds and removes (of ids present at the time), and queries."""
    ops: list[tuple[str, Reservation | str]] = []
    present: list[str] = []
    for i in range(draw(st.integers(0, 60))):
        if present and draw(st.integers(0, 3)) == 0:
            rid = present.pop(draw(st.integers(0, len(present) - 1)))
            ops.append(("remove", rid))
            continue
        start = T0 + timedelta(seconds=draw(st.integers(-86400, 86400)))
        r = Reservation(
            f"r{i}",
            start,
            start + timedelta(seconds=draw(lengths)),
            draw(st.integers(0, 8)),
            draw(st.integers(0, 8)),
            draw(st.integers(0, 8)),
        )
        ops.append(("add", r))
        present.append(r.id)
    queries = []
    for _ in range(draw(st.integers(1, 8))):
        qs = T0 + timedelta(seconds=draw(st.integers(-2 * 86400, 2 * 86400)))
        queries.append((qs, qs + timedelta(seconds=draw(st.integers(-60, 86400)))))
    return ops, queries


def replayed(ops: list[tuple[str, Reservation | str]]) -> Ledger:
    """A ledger after the history's adds and removes."""
    ledger = Ledger()
    for op, arg in ops:
        if op == "add":
            assert isinstance(arg, Reservation)
            ledger.add(arg)
        else:
            assert isinstance(arg, str)
            ledger.remove(arg)
    return ledger


@settings(max_examples=300, deadline=None)
@given(histories())
def test_overlapping_matches_brute_force(
    history: tuple[list[tuple[str, Reservation | str]], list[tuple[datetime, datetime]]],
) -> None:
    ops, queries = history
    ledger = Ledger()
    live: dict[str, Reservation] = {}
    for op, arg in ops:
        if op == "add":
            assert isinstance(arg, Reservation)
            ledger.add(arg)
            live[arg.id] = arg
        else:
            assert isinstance(arg, str)
            assert ledger.remove(arg) == live.pop(arg)
        assert len(ledger) == len(live)
    for rid, r in live.items():
        assert rid in ledger
        assert ledger.get(rid) == r
    for qs, qe in queries:
        expected = brute(list(live.values()), qs, qe)
        assert ledger.overlapping(qs, qe) == expected
        assert sorted(ledger.overlapping_spans(qs, qe)) == sorted(span(r) for r in expected)


@settings(max_examples=100, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_ledger_depends_only_on_its_contents(
    history: tuple[list[tuple[str, Reservation | str]], list[tuple[datetime, datetime]]],
    rnd: random.Random,
) -> None:
    ops, queries = history
    ledger = replayed(ops)
    contents = list(ledger)
    rnd.shuffle(contents)
    rebuilt = Ledger(contents)
    for qs, qe in queries:
        assert rebuilt.overlapping(qs, qe) == ledger.overlapping(qs, qe)
        assert rebuilt.overlapping_spans(qs, qe) == ledger.overlapping_spans(qs, qe)


@settings(max_examples=100, deadline=None)
@given(histories(), st.integers(1, 60), st.integers(0, 240), st.integers(0, 5))
def test_ledger_plan_equals_plan_over_everything(
    history: tuple[list[tuple[str, Reservation | str]], list[tuple[datetime, datetime]]],
    minutes: int,
    window: int,
    storage: int,
) -> None:
    ops, queries = history
    ledger = replayed(ops)
    capacity = Capacity(16, 16, 16)
    for qs, _ in queries:
        req = SlotRequest(1, 2, 1, 2, minutes * MIN, qs, qs + window * MIN, 4, storage)
        assert ledger.plan("pool", capacity, req) == plan("pool", capacity, list(ledger), req)


def usage_at(profile: UsageProfile, t: int) -> tuple[int, int, int]:
    i = int(np.searchsorted(profile.at, t, side="right")) - 1
    if i < 0:
        return (0, 0, 0)
    c, m, s = profile.used[i]
    return int(c), int(m), int(s)


@settings(max_examples=300, deadline=None)
@given(histories())
def test_usage_profile_follows_every_add_and_remove(
    history: tuple[list[tuple[str, Reservation | str]], list[tuple[datetime, datetime]]],
) -> None:
    """The incrementally kept profile equals brute-force sums at every instant that matters, and a
    profile built in one sweep from the survivors agrees with it."""
    ops, _ = history
    ledger = replayed(ops)
    live = list(ledger)
    spans = [span(r) for r in live]
    rebuilt = UsageProfile.of(spans)
    assert list(ledger.profile.at) == sorted(set(ledger.profile.at))  # strictly increasing
    instants = {t + d for sp in spans for t in sp[:2] for d in (-1, 0, 1)} | set(ledger.profile.at.tolist())
    for t in instants:
        expected = tuple(sum(sp[k] for sp in spans if sp[0] <= t < sp[1]) for k in (2, 3, 4))
        assert usage_at(ledger.profile, t) == expected
        assert usage_at(rebuilt, t) == expected
    if not live:
        assert len(ledger.profile) == 0  # removing everything leaves no steps behind


def test_basic_operations() -> None:
    a, b, empty = res("a", 0, 60), res("b", 30, 90), res("e", 45, 45)
    ledger = Ledger([b, a, empty])
    assert len(ledger) == 3
    assert "a" in ledger and "e" in ledger and "x" not in ledger
    assert ledger.get("b") == b and ledger.get("x") is None
    assert ledger.overlapping(at(0), at(120)) == [a, b]  # sorted by start; the empty one holds nothing
    assert ledger.overlapping(at(60), at(61)) == [b]  # half-open: a ends where the query starts
    assert ledger.overlapping(at(-10), at(0)) == []  # ... and a starts where this one ends
    assert ledger.overlapping(at(40), at(40)) == []  # an empty query window
    assert ledger.remove("a") == a
    assert ledger.discard("a") is None
    assert ledger.discard("e") == empty
    assert list(ledger) == [b]
    with pytest.raises(KeyError):
        ledger.remove("a")


def test_duplicate_ids_and_naive_times_are_refused() -> None:
    ledger = Ledger([res("a", 0, 60)])
    with pytest.raises(ValueError, match="already in the ledger"):
        ledger.add(res("a", 100, 160))
    naive = Reservation("n", datetime(2026, 1, 1), datetime(2026, 1, 2), 1, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.add(naive)
    assert "n" not in ledger
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.overlapping(datetime(2026, 1, 1), datetime(2026, 1, 2))


def test_ties_on_start_are_ordered_by_id() -> None:
    ledger = Ledger([res("b", 0, 10), res("a", 0, 500), res("c", 0, 1)])
    assert [r.id for r in ledger.overlapping(at(0), at(1))] == ["a", "b", "c"]


def test_a_very_long_booking_is_found_without_widening_other_scans() -> None:
    # One booking of ten years among short ones: found by queries anywhere inside it.
    long = Reservation("long", T0 - timedelta(days=3650), T0 + timedelta(days=3650), 1, 1)
    short = [res(f"s{i}", 10 * i, 10 * i + 5) for i in range(1000)]
    ledger = Ledger([long, *short])
    assert ledger.overlapping(at(2), at(3)) == [long, short[0]]
    far = T0 + timedelta(days=1000)
    assert ledger.overlapping(far, far + MIN) == [long]
    # The short bookings sit in a class of their own, whose scan reaches back one class length only.
    assert BASE == 60_000_000
    assert len(ledger._classes) == 2
