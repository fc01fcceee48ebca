"""An in-memory interval index of one pool's active reservations (held, booked, launched).

The planner only needs the reservations that overlap the window of one request. Reloading them from
SQLite for every request costs a query and a row-to-object conversion each time; the scheduler is the
single writer of its pool, so it can keep this index beside its tables and update both together.

Structure: reservations are split into *length classes*. Class i holds the reservations whose length
is in (BASE * 2**(i-1), BASE * 2**i] (class 0: at most BASE), each class sorted by (start, id) in a
plain list searched with `bisect`. A query for [start, end) looks, in every non-empty class, at the
reservations starting in [start - BASE * 2**i, end) and keeps those that end after `start`.

Why classes instead of one list plus the longest length: with one list, a single booking of a month
makes every query scan a month of starts. With classes, a long booking only widens the scan of its
own class. The scan of class i (i >= 1) wastes only reservations that start at or after
start - BASE * 2**i yet end at or before `start`; being longer than BASE * 2**(i-1), every one of them
contains the instant start - BASE * 2**(i-1). So the waste is bounded by how many reservations of the
class are active at one instant, which a pool's capacity bounds (every booking holds at least a core),
not by the size of the history. Class 0 wastes at most the reservations starting in one BASE before
`start`.

Costs, with n reservations, c non-empty classes (a handful: about log2 of longest/shortest length)
and k results:
* `overlapping`: O(c log n + k + waste), waste as above; results are sorted by (start, id).
* `add` / `remove`: O(log n) to find the place plus a list insert/delete, a memmove of the class's
  tail: O(n) in theory, microseconds for 10**5 entries in practice. A balanced tree would make it
  O(log n) at a large constant factor in pure Python; not worth it at a pool's scale.
* `get`, `__contains__`, `__len__`: O(1).

Deterministic: the result depends only on the set of reservations, never on insertion order.
Times must be timezone-aware (they are compared as microseconds since the Unix epoch).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import compress
from operator import itemgetter

from services.scheduler.domain import (
    Capacity,
    PlanResult,
    Reservation,
    SlotRequest,
    Span,
    plan_spans,
    plan_window,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

#: Upper length of class 0, in microseconds; class i holds lengths up to BASE * 2**i.
BASE = 60 * 1_000_000


def _micros(t: datetime) -> int:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"reservation times must be timezone-aware, got {t!r}")
    return (t - _EPOCH) // _US


def _length_class(length: int) -> int:
    """0 for lengths up to BASE, else the i with BASE * 2**(i-1) < length <= BASE * 2**i."""
    return (-(-length // BASE) - 1).bit_length()


@dataclass(slots=True)
class _Class:
    """Reservations of one length class, sorted by (start, id); the lists run parallel."""

    reach: int  # the longest length this class may hold, in microseconds
    keys: list[tuple[int, str]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    items: list[Reservation] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)


class Ledger:
    """The active reservations of one pool, indexed for "which overlap [start, end)?"."""

    def __init__(self, reservations: Iterable[Reservation] = ()) -> None:
        self._by_id: dict[str, Reservation] = {}
        self._classes: dict[int, _Class] = {}
        self._empty: set[str] = set()  # ids of zero-length reservations: they overlap nothing
        for r in reservations:
            self.add(r)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, reservation_id: object) -> bool:
        return reservation_id in self._by_id

    def __iter__(self) -> Iterator[Reservation]:
        """All reservations, in no particular order (that of insertion)."""
        return iter(self._by_id.values())

    def get(self, reservation_id: str) -> Reservation | None:
        return self._by_id.get(reservation_id)

    def add(self, reservation: Reservation) -> None:
        """Index `reservation`; its id must not be in the ledger yet (replace = remove + add)."""
        if reservation.id in self._by_id:
            raise ValueError(f"reservation {reservation.id!r} is already in the ledger")
        start, end = _micros(reservation.start), _micros(reservation.end)
        self._by_id[reservation.id] = reservation
        if end <= start:
            self._empty.add(reservation.id)
            return
        index = _length_class(end - start)
        cls = self._classes.get(index)
        if cls is None:
            cls = self._classes[index] = _Class(BASE << index)
        key = (start, reservation.id)
        i = bisect_left(cls.keys, key)
        cls.keys.insert(i, key)
        cls.starts.insert(i, start)
        cls.ends.insert(i, end)
        cls.items.insert(i, reservation)
        r = reservation
        cls.spans.insert(i, (start, end, r.cores, r.memory_gib, r.storage_gib))

    def remove(self, reservation_id: str) -> Reservation:
        """Drop a reservation and return it; KeyError if it is not in the ledger."""
        reservation = self._by_id.pop(reservation_id)
        if reservation_id in self._empty:
            self._empty.discard(reservation_id)
            return reservation
        start, end = _micros(reservation.start), _micros(reservation.end)
        index = _length_class(end - start)
        cls = self._classes[index]
        i = bisect_left(cls.keys, (start, reservation_id))
        del cls.keys[i], cls.starts[i], cls.ends[i], cls.items[i], cls.spans[i]
        if not cls.keys:
            del self._classes[index]
        return reservation

    def discard(self, reservation_id: str) -> Reservation | None:
        """Like `remove`, but None instead of KeyError for an unknown id."""
        return self.remove(reservation_id) if reservation_id in self._by_id else None

    def _scan(self, start: datetime, end: datetime) -> Iterator[tuple[_Class, int, int, list[bool]]]:
        """Per class: the index range of starts in [start - reach, end) and which of them overlap."""
        lo, hi = _micros(start), _micros(end)
        if hi <= lo:
            return
        for index in sorted(self._classes):
            cls = self._classes[index]
            i = bisect_left(cls.starts, lo - cls.reach)
            j = bisect_left(cls.starts, hi, i)
            if i < j:
                yield cls, i, j, [e > lo for e in cls.ends[i:j]]

    def overlapping(self, start: datetime, end: datetime) -> list[Reservation]:
        """The reservations r with r.start < end and r.end > start, sorted by (start, id).

        Zero-length reservations hold nothing at any instant, so they never overlap anything; nor
        does an empty window (end <= start).
        """
        found: list[tuple[tuple[int, str], Reservation]] = []
        runs = 0
        for cls, i, j, keep in self._scan(start, end):
            found.extend(compress(zip(cls.keys[i:j], cls.items[i:j], strict=True), keep))
            runs += 1
        if runs > 1:
            found.sort(key=itemgetter(0))  # merges the classes' sorted runs
        return [r for _, r in found]

    def overlapping_spans(self, start: datetime, end: datetime) -> list[Span]:
        """`overlapping` as planner spans (see `domain.Span`), in a deterministic but unsorted order.

        The planner's result does not depend on the order of its input, so this skips the merge.
        """
        found: list[Span] = []
        for cls, i, j, keep in self._scan(start, end):
            found.extend(compress(cls.spans[i:j], keep))
        return found

    def plan(
        self,
        pool_name: str,
        capacity: Capacity,
        request: SlotRequest,
        *,
        grid: timedelta = timedelta(seconds=60),
    ) -> PlanResult:
        """`domain.plan` against the reservations of this ledger, reading only those that matter."""
        window_start, window_end = plan_window(request, grid=grid)
        return plan_spans(
            pool_name, capacity, self.overlapping_spans(window_start, window_end), request, grid=grid
        )
