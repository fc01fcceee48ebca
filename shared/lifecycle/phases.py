"""The session phase state machine of the IVOA Execution Broker (pure, no I/O, no clock).

One transition table (`TRANSITIONS`) is the single source of truth for what the broker itself may
do; `CLIENT_UPDATES` is the narrower set a client may ask for. Calycopis had no transition checking
at all (`setPhase()` accepted anything), so every writer of a phase goes through `transition` or
`client_update`, and every reader of phase events goes through `observe`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class Phase(StrEnum):
    """`SimpleExecutionSessionPhase` from the IVOA schema; the value is the wire spelling."""

    INITIAL = "INITIAL"
    OFFERED = "OFFERED"
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    WAITING = "WAITING"
    PREPARING = "PREPARING"
    AVAILABLE = "AVAILABLE"
    RUNNING = "RUNNING"
    RELEASING = "RELEASING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL: frozenset[Phase] = frozenset(
    {Phase.REJECTED, Phase.EXPIRED, Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED}
)

_P = Phase
# Wrapped in MappingProxyType so no caller can mutate the shared table at run time.
TRANSITIONS: Mapping[Phase, frozenset[Phase]] = MappingProxyType(
    {
        _P.INITIAL: frozenset({_P.OFFERED, _P.FAILED, _P.CANCELLED}),
        _P.OFFERED: frozenset({_P.ACCEPTED, _P.REJECTED, _P.EXPIRED, _P.CANCELLED, _P.FAILED}),
        _P.ACCEPTED: frozenset({_P.WAITING, _P.PREPARING, _P.CANCELLED, _P.FAILED}),
        _P.WAITING: frozenset({_P.PREPARING, _P.CANCELLED, _P.FAILED}),
        # PREPARING may go straight to RELEASING: a session whose slot ends before it became
        # available is still released (its partly prepared components need cleaning up).
        _P.PREPARING: frozenset({_P.AVAILABLE, _P.RELEASING, _P.CANCELLED, _P.FAILED}),
        _P.AVAILABLE: frozenset({_P.RUNNING, _P.RELEASING, _P.CANCELLED, _P.FAILED}),
        _P.RUNNING: frozenset({_P.RELEASING, _P.CANCELLED, _P.FAILED}),
        _P.RELEASING: frozenset({_P.COMPLETED, _P.FAILED, _P.CANCELLED}),
        **{p: frozenset[Phase]() for p in TERMINAL},
    }
)

# What a client may request. RELEASING is deliberately absent: the release is already under way,
# so a client cancel would only race with it. FAILED is absent too (Calycopis let clients set it
# with no reason; here only the services that observe a failure report it).
_CANCEL_ONLY = frozenset({_P.CANCELLED})
CLIENT_UPDATES: Mapping[Phase, frozenset[Phase]] = MappingProxyType(
    {
        **{p: frozenset[Phase]() for p in Phase},
        _P.OFFERED: frozenset({_P.ACCEPTED, _P.REJECTED, _P.CANCELLED}),
        _P.ACCEPTED: _CANCEL_ONLY,
        _P.WAITING: _CANCEL_ONLY,
        _P.PREPARING: _CANCEL_ONLY,
        _P.AVAILABLE: _CANCEL_ONLY,
        _P.RUNNING: _CANCEL_ONLY,
    }
)


def _sorted_names(phases: frozenset[Phase]) -> str:
    # Enum declaration order reads like the lifecycle, which makes messages easier to follow.
    order = list(Phase)
    return ", ".join(p.value for p in sorted(phases, key=order.index)) or "none"


class IllegalTransition(ValueError):
    """A phase change that the rules forbid; carries what *would* have been legal."""

    def __init__(self, current: Phase, requested: Phase, legal: frozenset[Phase]) -> None:
        self.current = current
        self.requested = requested
        self.legal = legal
        super().__init__(
            f"cannot go from {current.value} to {requested.value}; legal next phases: {_sorted_names(legal)}"
        )


def _check(table: Mapping[Phase, frozenset[Phase]], current: Phase, requested: Phase) -> bool:
    if requested == current:
        # JetStream is at-least-once: the same fact can arrive twice. Repeating it is not an error.
        return False
    legal = table[current]
    if requested not in legal:
        raise IllegalTransition(current, requested, legal)
    return True


def transition(current: Phase, requested: Phase) -> bool:
    """True if the broker may move `current` to `requested`; False for a repeat; else raise."""
    return _check(TRANSITIONS, current, requested)


def client_update(current: Phase, requested: Phase) -> bool:
    """Like `transition`, but for what a client may ask for (`CLIENT_UPDATES`)."""
    return _check(CLIENT_UPDATES, current, requested)


def is_terminal(p: Phase) -> bool:
    return p in TERMINAL


def _reachable(start: Phase) -> frozenset[Phase]:
    """Every phase reachable from `start` in one or more legal steps."""
    seen: set[Phase] = set()
    stack = list(TRANSITIONS[start])
    while stack:
        p = stack.pop()
        if p not in seen:
            seen.add(p)
            stack.extend(TRANSITIONS[p])
    return frozenset(seen)


# The graph is tiny and fixed, so the closure is computed once at import.
_REACHABLE: Mapping[Phase, frozenset[Phase]] = MappingProxyType({p: _reachable(p) for p in Phase})


def observe(current: Phase, reported: Phase) -> Phase:
    """The phase a read model should store after learning `reported` while holding `current`.

    Events may arrive late or out of order (different services own different phases), so a reported
    phase that lies *ahead* of the current one is taken even if intermediate events were skipped,
    while one that lies *behind* it, or anything after a terminal phase, is ignored. Never raises.
    """
    if reported == current or current in TERMINAL:
        return current
    if reported in _REACHABLE[current]:
        return reported
    return current
