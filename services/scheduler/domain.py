"""The scheduler's planner: which slots of a resource pool can be offered for a request.

Pure code: no I/O, no clock (every time comes in as an argument), deterministic. The scheduler
service is the single writer of its pool, so if this planner never over-books, nothing does.

Three resources are booked: cores, memory and storage. Each must stay within the pool's capacity at
every instant. Usage is a step function of time: it changes only where a reservation starts or ends.
The planner therefore works on those event points instead of scanning minute by minute (Calycopis
generated one SQL row per minute of its look-ahead window).

Internally every instant is an integer number of microseconds since the Unix epoch (the resolution of
`datetime`), so the sweep sorts plain integers; all datetimes must be timezone-aware.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import accumulate
from typing import NamedTuple
from uuid import UUID, uuid5

import numpy as np
import numpy.typing as npt

# Grid points are whole multiples of the grid since the Unix epoch, whatever the request's zone.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
#: Hold (session) ids are derived from the quote they answer (`hold_session_id`).
_HOLD_NAMESPACE = UUID("0b6f1d7e-3c52-4e8a-a1f4-5d2c9e7b8a61")


@dataclass(frozen=True, slots=True)
class Capacity:
    cores: int
    memory_gib: int
    storage_gib: int = 0


@dataclass(frozen=True, slots=True)
class Reservation:
    """Capacity held over the half-open interval [start, end): an offered hold or a booking."""

    id: str
    start: datetime
    end: datetime
    cores: int
    memory_gib: int
    storage_gib: int = 0


@dataclass(frozen=True, slots=True)
class SlotRequest:
    """What one request needs. Storage is not scaled: an offer holds exactly `storage_min` GiB."""

    cores_min: int
    cores_max: int
    memory_min: int
    memory_max: int
    duration: timedelta
    earliest_start: datetime
    latest_start: datetime
    max_offers: int = 4
    storage_min: int = 0


@dataclass(frozen=True, slots=True)
class Slot:
    start: datetime
    end: datetime
    cores: int
    memory_gib: int
    storage_gib: int = 0


@dataclass(frozen=True, slots=True)
class PlanResult:
    """The offers, earliest first; when there are none, `reasons` says why in words for a human."""

    slots: tuple[Slot, ...]
    reasons: tuple[str, ...]


class Usage(NamedTuple):
    """Simultaneous use of each resource (a plain `(cores, memory, storage)` tuple as well)."""

    cores: int
    memory_gib: int
    storage_gib: int


# --- usage as a step function ---------------------------------------------------------------------


def _micros(t: datetime) -> int:
    """Microseconds since the epoch; exact (a float timestamp is not, at this magnitude)."""
    return (t - _EPOCH) // _US


def _datetime(micros: int, zone: tzinfo | None) -> datetime:
    t = _EPOCH + timedelta(microseconds=micros)
    return t.astimezone(zone) if zone is not None else t


@dataclass(frozen=True, slots=True)
class _Steps:
    """Usage is `cores[i]` / `memory[i]` / `storage[i]` from `at[i]` and zero before `at[0]`.

    `at` may repeat an instant: all the events at one instant are listed ends first, so the values
    at a repeated instant only fall and then rise to the value after it. Every partial value is
    therefore at most the larger of the usage just before and just after that instant, and the
    maximum over any index range [lo, hi] is the true maximum over the time it covers provided
    `lo` is the last index of its instant (which `bisect_right(at, t) - 1` is).
    """

    at: list[int]
    cores: list[int]
    memory: list[int]
    storage: list[int]


def _sweep(
    starts: list[int],
    ends: list[int],
    cores: list[int],
    memory: list[int],
    storage: list[int] | None,
) -> _Steps:
    """Sweep line over the start/end events of non-empty intervals: one sort of 2n integers.

    Each event is encoded in one integer, `((time * 2 + is_start) * 2n + index)`, so the sort
    compares integers only, puts ends before starts at the same instant, and is deterministic.
    """
    n = len(starts)
    if n == 0:
        return _Steps([], [], [], [])
    m = 2 * n
    keys = [(s * 2 + 1) * m + i for i, s in enumerate(starts)]
    keys += [(e * 2) * m + n + i for i, e in enumerate(ends)]
    keys.sort()
    order = [k % m for k in keys]
    at = [k // m >> 1 for k in keys]

    def running(amounts: list[int]) -> list[int]:
        deltas = amounts + [-a for a in amounts]
        return list(accumulate([deltas[j] for j in order]))

    return _Steps(at, running(cores), running(memory), running(storage) if storage is not None else [])


def _steps(reservations: Sequence[Reservation]) -> _Steps:
    """The usage of all of `reservations` (empty intervals hold nothing at any instant): O(n log n)."""
    kept = [(s, e, r) for r in reservations if (s := _micros(r.start)) < (e := _micros(r.end))]
    return _sweep(
        [s for s, _, _ in kept],
        [e for _, e, _ in kept],
        [r.cores for _, _, r in kept],
        [r.memory_gib for _, _, r in kept],
        [r.storage_gib for _, _, r in kept],
    )


def peak_resources(reservations: Sequence[Reservation]) -> Usage:
    """The highest simultaneous cores, memory and storage (each over all time).

    The three peaks may occur at different instants; each must stay within its own capacity.
    """
    s = _steps(reservations)
    return Usage(max(s.cores, default=0), max(s.memory, default=0), max(s.storage, default=0))


def peak_usage(reservations: Sequence[Reservation]) -> tuple[int, int]:
    """The highest simultaneous cores and the highest simultaneous memory (each over all time).

    Kept for callers that book compute only; `peak_resources` includes storage.
    """
    peak = peak_resources(reservations)
    return peak.cores, peak.memory_gib


def fits(capacity: Capacity, reservations: Sequence[Reservation], candidate: Reservation) -> bool:
    """Whether every instant stays within capacity once `candidate` is added to `reservations`.

    Judged over all time, not only the candidate's interval: if the pool were somehow already
    over-booked elsewhere, saying "fits" would endorse a state that must never exist.
    """
    cores, memory, storage = peak_resources([*reservations, candidate])
    return cores <= capacity.cores and memory <= capacity.memory_gib and storage <= capacity.storage_gib


# --- planning ----------------------------------------------------------------------------------


def _ceil_to_grid(t: datetime, grid: timedelta) -> datetime:
    rest = (t - _EPOCH) % grid
    return t if not rest else t + (grid - rest)


def _iso_duration(d: timedelta) -> str:
    """ISO-8601 duration as used by the IVOA schema (PT2H, P1DT30M, PT1.5S)."""
    sign = "-" if d < timedelta(0) else ""
    d = abs(d)
    micros = d.microseconds
    hours, rest = divmod(d.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    time = ""
    if hours:
        time += f"{hours}H"
    if minutes:
        time += f"{minutes}M"
    if seconds or micros:
        time += f"{seconds}.{micros:06d}".rstrip("0").rstrip(".") + "S"
    date = f"{d.days}D" if d.days else ""
    if not date and not time:
        time = "0S"
    return f"{sign}P{date}" + (f"T{time}" if time else "")


def _validate(pool_name: str, capacity: Capacity, request: SlotRequest) -> list[str]:
    r = request
    reasons: list[str] = []
    if r.cores_min < 1:
        reasons.append(f"requested minimum cores must be at least 1, got {r.cores_min}")
    elif r.cores_min > capacity.cores:
        reasons.append(
            f"requested {r.cores_min} cores (minimum) but pool '{pool_name}' "
            f"has {capacity.cores} cores in total"
        )
    if r.cores_max < r.cores_min:
        reasons.append(f"requested maximum cores ({r.cores_max}) is below the minimum ({r.cores_min})")
    if r.memory_min < 1:
        reasons.append(f"requested minimum memory must be at least 1 GiB, got {r.memory_min}")
    elif r.memory_min > capacity.memory_gib:
        reasons.append(
            f"requested {r.memory_min} GiB of memory (minimum) but pool '{pool_name}' "
            f"has {capacity.memory_gib} GiB in total"
        )
    if r.memory_max < r.memory_min:
        reasons.append(
            f"requested maximum memory ({r.memory_max} GiB) is below the minimum ({r.memory_min} GiB)"
        )
    if r.storage_min < 0:
        reasons.append(f"requested storage must not be negative, got {r.storage_min} GiB")
    elif r.storage_min > capacity.storage_gib:
        reasons.append(
            f"requested {r.storage_min} GiB of storage but pool '{pool_name}' "
            f"has {capacity.storage_gib} GiB in total"
        )
    if r.duration <= timedelta(0):
        reasons.append(f"requested duration must be positive, got {_iso_duration(r.duration)}")
    if r.latest_start < r.earliest_start:
        reasons.append(
            f"start window ends ({r.latest_start.isoformat()}) "
            f"before it begins ({r.earliest_start.isoformat()})"
        )
    if r.max_offers < 1:
        reasons.append(f"at least one offer must be allowed, got max_offers={r.max_offers}")
    return reasons


def plan_window(
    request: SlotRequest, *, grid: timedelta = timedelta(seconds=60)
) -> tuple[datetime, datetime]:
    """The interval [start, end) that every slot `plan` could offer for `request` lies in.

    Only reservations overlapping it affect the plan, so a caller with an index of its bookings (see
    `ledger.Ledger.overlapping`) passes just those.
    """
    return _ceil_to_grid(request.earliest_start, grid), request.latest_start + request.duration


#: A reservation as the planner sees it: (start, end, cores, memory_gib, storage_gib) with start and
#: end in microseconds since the Unix epoch. `ledger.Ledger` keeps its reservations in this form so
#: that planning does not convert datetimes on every request.
Span = tuple[int, int, int, int, int]


def span(reservation: Reservation) -> Span:
    r = reservation
    return _micros(r.start), _micros(r.end), r.cores, r.memory_gib, r.storage_gib


def plan(
    pool_name: str,
    capacity: Capacity,
    reservations: Sequence[Reservation],
    request: SlotRequest,
    *,
    grid: timedelta = timedelta(seconds=60),
) -> PlanResult:
    """Up to `request.max_offers` slots, earliest first, that can all be held at once.

    See `plan_spans`, which this calls after converting `reservations`.
    """
    epoch, us = _EPOCH, _US
    spans = [
        ((r.start - epoch) // us, (r.end - epoch) // us, r.cores, r.memory_gib, r.storage_gib)
        for r in reservations
    ]
    return plan_spans(pool_name, capacity, spans, request, grid=grid)


def plan_spans(
    pool_name: str,
    capacity: Capacity,
    spans: Sequence[Span],
    request: SlotRequest,
    *,
    grid: timedelta = timedelta(seconds=60),
) -> PlanResult:
    """Up to `request.max_offers` slots, earliest first, that can all be held at once.

    Builds the usage step function of the spans that overlap `plan_window` (one sort of integers)
    and plans on it with `plan_on_usage`. Cost: O(n) to filter the n given spans to the k that
    overlap, O(k log k) for the sweep, then what `plan_on_usage` costs.
    """
    window = _window(pool_name, capacity, request, grid)
    if isinstance(window, PlanResult):
        return window
    first, _, horizon_end = window
    # Only reservations that overlap some possible slot matter; this keeps the sweep to O(k log k)
    # in the k overlapping reservations rather than the pool's whole history.
    relevant = [sp for sp in spans if sp[0] < horizon_end and sp[1] > first]
    at, used = usage_steps(relevant)
    return plan_on_usage(pool_name, capacity, at, used, request, grid=grid)


def usage_steps(spans: Sequence[Span]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The usage step function of `spans` as arrays: `used[i]` (cores, memory, storage) holds from
    `at[i]`; an instant may repeat, as `_Steps` describes. Empty spans hold nothing."""
    kept = [sp for sp in spans if sp[1] > sp[0]]
    columns: list[list[int]] = [list(c) for c in zip(*kept, strict=True)] if kept else [[]] * 5
    starts, ends, cores, memory, storage = columns
    steps = _sweep(starts, ends, cores, memory, storage)
    used = np.array([steps.cores, steps.memory, steps.storage], dtype=np.int64).reshape(3, -1).T
    return np.array(steps.at, dtype=np.int64), used


def _window(
    pool_name: str, capacity: Capacity, request: SlotRequest, grid: timedelta
) -> tuple[int, int, int] | PlanResult:
    """(first grid start, last start, end of the last possible slot) in microseconds, or the reasons
    why nothing can be planned."""
    if grid <= timedelta(0):
        raise ValueError(f"grid must be positive, got {grid!r}")
    reasons = _validate(pool_name, capacity, request)
    if reasons:
        return PlanResult((), tuple(reasons))
    g = grid // _US
    first = -(-_micros(request.earliest_start) // g) * g
    last = _micros(request.latest_start)
    if first > last:
        return PlanResult(
            (),
            (
                f"no start time on the {_iso_duration(grid)} grid lies between "
                f"{request.earliest_start.isoformat()} and {request.latest_start.isoformat()}",
            ),
        )
    return first, last, last + request.duration // _US


def plan_window_micros(
    pool_name: str, capacity: Capacity, request: SlotRequest, grid: timedelta
) -> tuple[int, int] | PlanResult:
    """`plan_window` in microseconds, or the reasons why nothing can be planned (for a caller that
    keeps its own usage profile, see `ledger.UsageProfile`)."""
    window = _window(pool_name, capacity, request, grid)
    if isinstance(window, PlanResult):
        return window
    return window[0], window[2]


def plan_on_usage(
    pool_name: str,
    capacity: Capacity,
    at: npt.NDArray[np.int64],
    used: npt.NDArray[np.int64],
    request: SlotRequest,
    *,
    grid: timedelta = timedelta(seconds=60),
) -> PlanResult:
    """Up to `request.max_offers` slots, earliest first, that can all be held at once, given the
    pool's usage: `used[i]` (cores, memory, storage) holds from `at[i]` to `at[i + 1]`, nothing is
    used before `at[0]`, and the last row holds to the end of the window. `at` may repeat an
    instant as `_Steps` describes.

    A start s is feasible when no instant of [s, s + duration) is *blocked*, i.e. has less free
    capacity than the request's minimum of some resource. The blocked steps turn into maximal free
    runs [a, b); the earliest feasible start in a run is the first grid point at or after
    max(a, lower bound), and it is feasible iff the slot ends by b. Everything over the k steps is
    vectorised (numpy), so a pool with tens of thousands of holds plans in well under a millisecond;
    only the offers themselves are found one by one.
    """
    window = _window(pool_name, capacity, request, grid)
    if isinstance(window, PlanResult):
        return window
    first, last, horizon_end = window
    zone = request.earliest_start.tzinfo
    g = grid // _US
    duration = request.duration // _US
    cores_min, memory_min, storage_min = request.cores_min, request.memory_min, request.storage_min

    # Blocked where some resource has less free than the request's minimum. Storage only constrains
    # a request that holds some: a slot without storage cannot over-book it.
    blocked = (used[:, 0] > capacity.cores - cores_min) | (used[:, 1] > capacity.memory_gib - memory_min)
    if storage_min:
        blocked |= used[:, 2] > capacity.storage_gib - storage_min
    # Free runs [a, b) from the instants where blocked changes. Zero-length segments at a repeated
    # instant do no harm: a partial value is never blocked unless a neighbouring segment is (see
    # _Steps), so they neither split a free run nor make blocked time look free.
    changes = np.flatnonzero(blocked != np.concatenate(([False], blocked[:-1])))
    becomes_blocked = blocked[changes]
    run_starts = np.concatenate(([first], at[changes[~becomes_blocked]]))
    run_ends = at[changes[becomes_blocked]]
    if len(run_ends) < len(run_starts):  # free at the end: the last run lasts to the horizon
        run_ends = np.concatenate((run_ends, [horizon_end]))

    found: list[int] = []
    start = first  # on the grid, and every later lower bound is too
    while len(found) < request.max_offers and start <= last:
        # In each run the earliest start at or after the lower bound; the first run where it fits.
        candidates = np.maximum(-(-run_starts // g) * g, start)
        fitting = np.flatnonzero((candidates <= last) & (candidates + duration <= run_ends))
        if not len(fitting):
            break
        start = int(candidates[fitting[0]])
        found.append(start)
        # The offers of one request are all held at once, so the next one may not overlap this one:
        # it starts when this ends (on the grid). Because they never overlap in time, a held offer
        # adds nothing to any later window, and each offer fitting alongside the existing
        # reservations means all of them together fit.
        start = -(-(start + duration) // g) * g

    if not found:
        amounts = (
            f", {memory_min} GiB and {storage_min} GiB of storage"
            if storage_min
            else f" and {memory_min} GiB"
        )
        return PlanResult(
            (),
            (
                f"no free slot of {_iso_duration(request.duration)} with {cores_min} cores{amounts} starts "
                f"between {request.earliest_start.isoformat()} and {request.latest_start.isoformat()} "
                f"in pool '{pool_name}'",
            ),
        )
    slots = []
    for s in found:
        # Usage over [s, s + duration) is at the last event not after s up to the last event before
        # the end (nothing is used before at[0]; usage is never negative).
        lo = max(int(np.searchsorted(at, s, side="right")) - 1, 0)
        hi = max(int(np.searchsorted(at, s + duration, side="left")), lo)
        peak = used[lo:hi].max(axis=0) if hi > lo else np.zeros(3, dtype=np.int64)
        slots.append(
            Slot(
                start=_datetime(s, zone),
                end=_datetime(s + duration, zone),
                cores=min(2 * cores_min, request.cores_max, capacity.cores - int(peak[0])),
                memory_gib=min(2 * memory_min, request.memory_max, capacity.memory_gib - int(peak[1])),
                storage_gib=storage_min,
            )
        )
    return PlanResult(tuple(slots), ())


def hold_session_id(pool: str, request_id: str, requested_at: datetime, index: int) -> str:
    """The session id of the ``index``-th slot held on a pool for the request sent at
    ``requested_at``: derived from the quote, not drawn at random, so that a quote applied again
    (the start-up replay, after a crash of the machine lost the transaction that held it) holds its
    slots under the ids the offer set already announced. The quoted answer it re-produces is a
    duplicate the stream drops, so random ids would leave the client's offers naming holds the
    scheduler no longer has. Offers accepts a request id once; the time tells apart a request id
    used again after its first request was pruned."""
    return str(uuid5(_HOLD_NAMESPACE, f"{pool}\n{request_id}\n{requested_at.isoformat()}\n{index}"))
