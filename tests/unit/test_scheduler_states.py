"""The reservation state machine: every change the table does not list raises, a repeat is a no-op,
and freeing capacity moves a hold and a booking to the states the table allows."""

from __future__ import annotations

import itertools

import pytest

from services.scheduler.states import (
    BOOKED_ONCE,
    TAKES_CAPACITY,
    TRANSITIONS,
    IllegalReservationChange,
    Release,
    ReservationState,
    change,
    freed,
)

S = ReservationState
LEGAL = [(current, new) for current, targets in TRANSITIONS.items() for new in targets]
ILLEGAL = [
    (current, new)
    for current, new in itertools.product(ReservationState, repeat=2)
    if current != new and new not in TRANSITIONS[current]
]


def test_the_stored_values_are_the_strings_databases_already_hold() -> None:
    assert {s.value for s in ReservationState} == {"held", "booked", "launched", "ended", "released"}
    assert [s.value for s in TAKES_CAPACITY] == ["held", "booked", "launched"]


def test_the_table_covers_every_state_and_only_the_expected_changes() -> None:
    assert set(TRANSITIONS) == set(ReservationState)
    assert sorted(LEGAL) == sorted(
        [
            (S.HELD, S.BOOKED),
            (S.HELD, S.RELEASED),
            (S.RELEASED, S.BOOKED),
            (S.BOOKED, S.LAUNCHED),
            (S.BOOKED, S.ENDED),
            (S.LAUNCHED, S.ENDED),
        ]
    )


@pytest.mark.parametrize(("current", "new"), LEGAL)
def test_every_legal_change_is_allowed(current: ReservationState, new: ReservationState) -> None:
    assert change(current, new) is True


@pytest.mark.parametrize(("current", "new"), ILLEGAL)
def test_every_illegal_change_raises_with_what_was_legal(
    current: ReservationState, new: ReservationState
) -> None:
    with pytest.raises(IllegalReservationChange) as raised:
        change(current, new)
    assert raised.value.current is current and raised.value.requested is new
    assert raised.value.legal == TRANSITIONS[current]
    assert f"from {current.value} to {new.value}" in str(raised.value)


@pytest.mark.parametrize("state", list(ReservationState))
def test_a_repeated_fact_is_a_no_op(state: ReservationState) -> None:
    assert change(state, state) is False


def test_nothing_leaves_ended_and_a_booking_is_never_released() -> None:
    assert TRANSITIONS[S.ENDED] == frozenset()
    for booking in (S.BOOKED, S.LAUNCHED):
        with pytest.raises(IllegalReservationChange):
            change(booking, S.RELEASED)


@pytest.mark.parametrize("reason", list(Release))
def test_freeing_a_hold_releases_it_whatever_the_reason(reason: Release) -> None:
    assert freed(S.HELD, reason) is S.RELEASED
    assert change(S.HELD, freed(S.HELD, reason)) is True
    # A hold released already stays so: a second reason to free it is a repeat.
    assert change(S.RELEASED, freed(S.RELEASED, reason)) is False


@pytest.mark.parametrize("reason", [Release.CANCELLED, Release.SESSION_ENDED])
@pytest.mark.parametrize("state", [S.BOOKED, S.LAUNCHED])
def test_a_booking_ends_only_with_its_session_or_its_cancel(state: ReservationState, reason: Release) -> None:
    assert freed(state, reason) is S.ENDED
    assert change(state, freed(state, reason)) is True
    assert change(S.ENDED, freed(S.ENDED, reason)) is False


@pytest.mark.parametrize("reason", [Release.SIBLING_BOOKED, Release.OFFER_CLOSED, Release.HOLD_EXPIRED])
@pytest.mark.parametrize("state", sorted(BOOKED_ONCE))
def test_a_reason_that_concerns_holds_never_frees_a_booking(state: ReservationState, reason: Release) -> None:
    with pytest.raises(IllegalReservationChange):
        change(state, freed(state, reason))
