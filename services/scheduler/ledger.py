"""An in-memory interval index of one pool's active reservations (`states.TAKES_CAPACITY`).

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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import compress
from operator import itemgetter

import numpy as np
import numpy.typing as npt

from services.scheduler.domain import (
    Capacity,
    PlanResult,
    Reservation,
    SlotRequest,
    Span,
    plan_on_usage,
    plan_window_micros,
    usage_steps,
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


class UsageProfile:
    """A pool's usage as a step function, changed in place as reservations come and go.

    `at` holds the distinct instants where usage changes, sorted; row i of `used` (cores, memory,
    storage) holds from `at[i]` to `at[i + 1]`; nothing is used before `at[0]` or from the last
    instant on. Adding or removing a reservation touches only the steps inside it (plus an insert
    of up to two instants, a memmove), so the planner reads the usage of its window as two array
    slices instead of sorting every overlapping reservation for every request: with thousands of
    holds in the window that sort was most of the scheduler's time per request.
    """

    def __init__(self) -> None:
        self.at: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self.used: npt.NDArray[np.int64] = np.empty((0, 3), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.at)

    @classmethod
    def of(cls, spans: Sequence[Span]) -> UsageProfile:
        """Built in one sweep (O(n log n)), where n single changes would cost O(n) each."""
        profile = cls()
        at, used = usage_steps(spans)
        if len(at):
            # One row per instant, the last (all the instant's events applied), and only where the
            # usage changes.
            last_of_instant = np.concatenate((at[1:] != at[:-1], [True]))
            at, used = at[last_of_instant], used[last_of_instant]
            previous = np.vstack((np.zeros((1, 3), dtype=np.int64), used[:-1]))
            changes = np.any(used != previous, axis=1)
            profile.at, profile.used = at[changes].copy(), used[changes].copy()
        return profile

    def _instant(self, t: int) -> int:
        """The index of instant `t`, inserted (with the usage in force there) if it is new."""
        i = int(np.searchsorted(self.at, t))
        if i < len(self.at) and self.at[i] == t:
            return i
        in_force = self.used[i - 1] if i else np.zeros(3, dtype=np.int64)
        self.at = np.insert(self.at, i, t)
        self.used = np.insert(self.used, i, in_force, axis=0)
        return i

    def _drop_if_redundant(self, t: int) -> None:
        """Forget instant `t` if usage no longer changes there, so the steps stay as few as the
        live reservations need."""
        i = int(np.searchsorted(self.at, t))
        if i == len(self.at) or self.at[i] != t:
            return
        before = self.used[i - 1] if i else np.zeros(3, dtype=np.int64)
        if np.array_equal(self.used[i], before):
            self.at = np.delete(self.at, i)
            self.used = np.delete(self.used, i, axis=0)

    def change(self, span: Span, sign: int) -> None:
        """Add (sign 1) or take away (sign -1) one reservation's use over [start, end)."""
        start, end, cores, memory, storage = span
        if end <= start:
            return
        i = self._instant(start)
        j = self._instant(end)
        self.used[i:j] += np.array([cores, memory, storage], dtype=np.int64) * sign
        if sign < 0:
            self._drop_if_redundant(end)
            self._drop_if_redundant(start)

    def window(self, start: int, end: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The steps that hold some time of [start, end), the first clipped to begin at `start`."""
        lo = max(int(np.searchsorted(self.at, start, side="right")) - 1, 0)
        hi = int(np.searchsorted(self.at, end, side="left"))
        at, used = self.at[lo:hi].copy(), self.used[lo:hi]
        if len(at) and at[0] < start:
            at[0] = start
        return at, used


class Ledger:
    """The active reservations of one pool, indexed for "which overlap [start, end)?"."""

    def __init__(self, reservations: Iterable[Reservation] = ()) -> None:
        self._by_id: dict[str, Reservation] = {}
        self._classes: dict[int, _Class] = {}
        self._empty: set[str] = set()  # ids of zero-length reservations: they overlap nothing
        for r in reservations:
            self._index(r)
        self.profile = UsageProfile.of([sp for cls in self._classes.values() for sp in cls.spans])

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
        span = self._index(reservation)
        if span is not None:
            self.profile.change(span, 1)

    def _index(self, reservation: Reservation) -> Span | None:
        if reservation.id in self._by_id:
            raise ValueError(f"reservation {reservation.id!r} is already in the ledger")
        start, end = _micros(reservation.start), _micros(reservation.end)
        self._by_id[reservation.id] = reservation
        if end <= start:
            self._empty.add(reservation.id)
            return None
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
        span = (start, end, r.cores, r.memory_gib, r.storage_gib)
        cls.spans.insert(i, span)
        return span

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
        self.profile.change(cls.spans[i], -1)
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
        """`domain.plan` against the reservations of this ledger, on its usage profile: the same
        result as `domain.plan_spans` over every reservation, in time that barely grows with them."""
        window = plan_window_micros(pool_name, capacity, request, grid)
        if isinstance(window, PlanResult):
            return window
        at, used = self.profile.window(*window)
        return plan_on_usage(pool_name, capacity, at, used, request, grid=grid)
