"""The session state machine, checked exhaustively against literal tables written here.

The expectations are spelled out independently of `shared.lifecycle.TRANSITIONS`, so a wrong edit
to the table makes these tests fail instead of silently agreeing with itself.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.lifecycle import (
    CLIENT_UPDATES,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    Phase,
    client_update,
    is_terminal,
    observe,
    transition,
)

ALL_PAIRS = list(itertools.product(list(Phase), repeat=2))

ALLOWED = {
    ("INITIAL", "OFFERED"),
    ("INITIAL", "FAILED"),
    ("INITIAL", "CANCELLED"),
    ("OFFERED", "ACCEPTED"),
    ("OFFERED", "REJECTED"),
    ("OFFERED", "EXPIRED"),
    ("OFFERED", "CANCELLED"),
    ("OFFERED", "FAILED"),
    ("ACCEPTED", "WAITING"),
    ("ACCEPTED", "PREPARING"),
    ("ACCEPTED", "CANCELLED"),
    ("ACCEPTED", "FAILED"),
    ("WAITING", "PREPARING"),
    ("WAITING", "CANCELLED"),
    ("WAITING", "FAILED"),
    ("PREPARING", "AVAILABLE"),
    ("PREPARING", "RELEASING"),
    ("PREPARING", "CANCELLED"),
    ("PREPARING", "FAILED"),
    ("AVAILABLE", "RUNNING"),
    ("AVAILABLE", "RELEASING"),
    ("AVAILABLE", "CANCELLED"),
    ("AVAILABLE", "FAILED"),
    ("RUNNING", "RELEASING"),
    ("RUNNING", "CANCELLED"),
    ("RUNNING", "FAILED"),
    ("RELEASING", "COMPLETED"),
    ("RELEASING", "FAILED"),
    ("RELEASING", "CANCELLED"),
}

CLIENT_ALLOWED = {
    ("OFFERED", "ACCEPTED"),
    ("OFFERED", "REJECTED"),
    ("OFFERED", "CANCELLED"),
    ("ACCEPTED", "CANCELLED"),
    ("WAITING", "CANCELLED"),
    ("PREPARING", "CANCELLED"),
    ("AVAILABLE", "CANCELLED"),
    ("RUNNING", "CANCELLED"),
}

TERMINAL_NAMES = {"REJECTED", "EXPIRED", "COMPLETED", "FAILED", "CANCELLED"}


def _ids(pair: tuple[Phase, Phase]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_thirteen_phases_with_value_equal_to_name() -> None:
    assert [p.value for p in Phase] == [
        "INITIAL",
        "OFFERED",
        "ACCEPTED",
        "REJECTED",
        "EXPIRED",
        "WAITING",
        "PREPARING",
        "AVAILABLE",
        "RUNNING",
        "RELEASING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
    ]
    assert all(p.name == p.value for p in Phase)


def test_terminal_set() -> None:
    assert {p.value for p in TERMINAL} == TERMINAL_NAMES
    assert {p.value for p in Phase if is_terminal(p)} == TERMINAL_NAMES


def test_tables_cover_every_phase_and_terminals_go_nowhere() -> None:
    assert set(TRANSITIONS) == set(Phase)
    assert set(CLIENT_UPDATES) == set(Phase)
    for p in TERMINAL:
        assert TRANSITIONS[p] == frozenset()
        assert CLIENT_UPDATES[p] == frozenset()


def test_client_updates_are_a_subset_of_transitions() -> None:
    for p in Phase:
        assert CLIENT_UPDATES[p] <= TRANSITIONS[p], p


def test_no_transition_leads_back_to_initial_or_offered_after_acceptance() -> None:
    # A sanity property of the literal table itself: the lifecycle only moves forward.
    assert not any(to == "INITIAL" for _, to in ALLOWED)
    assert not any(to == "OFFERED" and frm != "INITIAL" for frm, to in ALLOWED)


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=_ids)
def test_transition_over_all_pairs(pair: tuple[Phase, Phase]) -> None:
    current, requested = pair
    if current == requested:
        assert transition(current, requested) is False
    elif (current.value, requested.value) in ALLOWED:
        assert transition(current, requested) is True
    else:
        with pytest.raises(IllegalTransition) as info:
            transition(current, requested)
        err = info.value
        assert err.current is current
        assert err.requested is requested
        assert {p.value for p in err.legal} == {to for frm, to in ALLOWED if frm == current.value}


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=_ids)
def test_client_update_over_all_pairs(pair: tuple[Phase, Phase]) -> None:
    current, requested = pair
    if current == requested:
        assert client_update(current, requested) is False
    elif (current.value, requested.value) in CLIENT_ALLOWED:
        assert client_update(current, requested) is True
    else:
        with pytest.raises(IllegalTransition) as info:
            client_update(current, requested)
        err = info.value
        assert (err.current, err.requested) == (current, requested)
        assert err.legal == CLIENT_UPDATES[current]
        assert {p.value for p in err.legal} == {to for frm, to in CLIENT_ALLOWED if frm == current.value}


def test_illegal_transition_message_names_the_phases() -> None:
    with pytest.raises(IllegalTransition) as info:
        transition(Phase.RUNNING, Phase.ACCEPTED)
    msg = str(info.value)
    assert msg.startswith("cannot go from RUNNING to ACCEPTED; legal next phases: ")
    for name in ("RELEASING", "CANCELLED", "FAILED"):
        assert name in msg
    assert isinstance(info.value, ValueError)


def test_illegal_transition_from_terminal_says_none() -> None:
    with pytest.raises(IllegalTransition, match="legal next phases: none"):
        transition(Phase.COMPLETED, Phase.RUNNING)


# --- observe -------------------------------------------------------------------------------------

phases = st.sampled_from(list(Phase))


@given(phases, phases)
def test_observe_returns_current_or_reported(current: Phase, reported: Phase) -> None:
    assert observe(current, reported) in {current, reported}


@given(phases, phases)
def test_observe_never_leaves_a_terminal_phase(current: Phase, reported: Phase) -> None:
    if is_terminal(current):
        assert observe(current, reported) == current


@given(phases, phases)
def test_observe_is_idempotent(current: Phase, reported: Phase) -> None:
    once = observe(current, reported)
    assert observe(once, reported) == once


@given(phases, st.lists(phases, max_size=12))
def test_observe_only_moves_along_legal_paths(start: Phase, reports: list[Phase]) -> None:
    # Whatever order events arrive in, each stored change is a step forward in the table.
    current = start
    for reported in reports:
        nxt = observe(current, reported)
        if nxt != current:
            assert not is_terminal(current)
            assert _reachable_literal(current.value, nxt.value)
        current = nxt


def _reachable_literal(frm: str, to: str) -> bool:
    frontier: set[str] = {frm}
    seen: set[str] = set()
    while frontier:
        step = {b for a, b in ALLOWED if a in frontier} - seen
        if to in step:
            return True
        seen |= step
        frontier = step
    return False


@pytest.mark.parametrize(
    ("current", "reported", "expected"),
    [
        (Phase.WAITING, Phase.RUNNING, Phase.RUNNING),  # skipped PREPARING and AVAILABLE
        (Phase.OFFERED, Phase.COMPLETED, Phase.COMPLETED),
        (Phase.RUNNING, Phase.PREPARING, Phase.RUNNING),  # a late, older event
        (Phase.COMPLETED, Phase.FAILED, Phase.COMPLETED),  # nothing after the end
        (Phase.ACCEPTED, Phase.REJECTED, Phase.ACCEPTED),  # not reachable after accepting
        (Phase.RELEASING, Phase.RELEASING, Phase.RELEASING),
    ],
)
def test_observe_examples(current: Phase, reported: Phase, expected: Phase) -> None:
    assert observe(current, reported) == expected


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=_ids)
def test_observe_over_all_pairs(pair: tuple[Phase, Phase]) -> None:
    current, reported = pair
    ahead = current.value not in TERMINAL_NAMES and _reachable_literal(current.value, reported.value)
    assert observe(current, reported) == (reported if ahead else current)
