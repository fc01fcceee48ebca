"""The state machine of a reservation (a hold or a booking of a pool), pure like the planner.

One transition table (`TRANSITIONS`), as `shared.lifecycle` has for session phases: every state
change of the scheduler goes through `change`, which raises for a change the table forbids and
answers False for a repeated fact. The values are the strings stored in the ``reservations`` table,
so databases written before the enum existed still read.

    HELD ──book──► BOOKED ──launch──► LAUNCHED
      │               ▲  │                 │
   release          book end              end
      ▼               │  ▼                 │
    RELEASED ─────────┘  ENDED ◄───────────┘

A hold that lapsed while its accept was in flight (RELEASED) is booked after all if its slot is
still free; a booking never becomes RELEASED, and nothing leaves ENDED.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class ReservationState(StrEnum):
    HELD = "held"  # offered: capacity held until the offer is accepted, let go or expires
    BOOKED = "booked"  # accepted: waits for its launch time
    LAUNCHED = "launched"  # handed to the launcher, which now owns the session's phases
    ENDED = "ended"  # a booking whose session ended (or was cancelled before launch)
    RELEASED = "released"  # a hold let go without becoming a booking


_S = ReservationState
TRANSITIONS: Mapping[ReservationState, frozenset[ReservationState]] = MappingProxyType(
    {
        _S.HELD: frozenset({_S.BOOKED, _S.RELEASED}),
        _S.RELEASED: frozenset({_S.BOOKED}),
        _S.BOOKED: frozenset({_S.LAUNCHED, _S.ENDED}),
        _S.LAUNCHED: frozenset({_S.ENDED}),
        _S.ENDED: frozenset(),
    }
)

#: The states that take capacity: the ledger holds exactly the reservations in one of these. In
#: declaration order, which is also the order of the SQL that selects them (see the store).
TAKES_CAPACITY: tuple[ReservationState, ...] = (_S.HELD, _S.BOOKED, _S.LAUNCHED)

#: A reservation in one of these has been booked (and may have moved on since): a book for it is a
#: repeat, answered by nothing.
BOOKED_ONCE: frozenset[ReservationState] = frozenset({_S.BOOKED, _S.LAUNCHED, _S.ENDED})


class IllegalReservationChange(ValueError):
    """A state change the table forbids; carries what would have been legal."""

    def __init__(self, current: ReservationState, requested: ReservationState) -> None:
        self.current = current
        self.requested = requested
        self.legal = TRANSITIONS[current]
        legal = ", ".join(s.value for s in ReservationState if s in self.legal) or "none"
        super().__init__(
            f"a reservation cannot go from {current.value} to {requested.value}; legal next states: {legal}"
        )


def change(current: ReservationState, requested: ReservationState) -> bool:
    """True if a reservation may move from `current` to `requested`; False for a repeat; else raise."""
    if requested == current:
        # JetStream is at-least-once: the same fact can arrive twice. Repeating it is not an error.
        return False
    if requested not in TRANSITIONS[current]:
        raise IllegalReservationChange(current, requested)
    return True


class Release(StrEnum):
    """Why a reservation gives its capacity back: the argument of the scheduler's one `free`."""

    SIBLING_BOOKED = "sibling booked"  # another offer of the same request was booked in this pool
    OFFER_CLOSED = "offer closed"  # offers let the hold go: rejected, expired, accepted in another pool
    HOLD_EXPIRED = "hold expired"  # nobody accepted it in time (the scheduler's own timer)
    CANCELLED = "cancelled"  # its owner cancelled it before launch
    SESSION_ENDED = "session ended"  # its session reached a terminal phase


#: The reasons that end a booking as well as a hold; the others only ever concern holds.
_ENDS_BOOKINGS = frozenset({Release.CANCELLED, Release.SESSION_ENDED})


def freed(current: ReservationState, reason: Release) -> ReservationState:
    """The state that frees the capacity of a reservation in `current`, for `reason`.

    A hold (or a lapsed one) is RELEASED, a booking ENDED. A reason that only concerns holds gives
    RELEASED whatever the state, so `change` refuses it for a booking instead of freeing a booking
    on a hold's account.
    """
    if reason in _ENDS_BOOKINGS and current in BOOKED_ONCE:
        return _S.ENDED
    return _S.RELEASED
