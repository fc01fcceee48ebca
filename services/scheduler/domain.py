"""The scheduler's planner: which slots of a resource pool can be offered for a request.

Pure code: no I/O, no clock (every time comes in as an argument), deterministic. The scheduler
service is the single writer of its pool, so if this planner never over-books, nothing does.

Capacity is a step function of time: usage changes only where a reservation starts or ends. The
planner therefore works on those event points instead of scanning minute by minute (Calycopis
generated one SQL row per minute of its look-ahead window).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Grid points are whole multiples of the grid since the Unix epoch, whatever the request's zone.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Capacity:
    cores: int
    memory_gib: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """Capacity held over the half-open interval [start, end): an offered hold or a booking."""

    id: str
    start: datetime
    end: datetime
    cores: int
    memory_gib: int


@dataclass(frozen=True, slots=True)
class SlotRequest:
    cores_min: int
    cores_max: int
    memory_min: int
    memory_max: int
    duration: timedelta
    earliest_start: datetime
    latest_start: datetime
    max_offers: int = 4


@dataclass(frozen=True, slots=True)
class Slot:
    start: datetime
    end: datetime
    cores: int
    memory_gib: int


@dataclass(frozen=True, slots=True)
class PlanResult:
    """The offers, earliest first; when there are none, `reasons` says why in words for a human."""

    slots: tuple[Slot, ...]
    reasons: tuple[str, ...]


# --- usage as a step function ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Steps:
    """Usage is `cores[i]` / `memory[i]` on [at[i], at[i+1]) and zero before `at[0]`."""

    at: list[datetime]
    cores: list[int]
    memory: list[int]


def _steps(reservations: Sequence[Reservation]) -> _Steps:
    """Sweep line over start/end events: O(n log n)."""
    deltas: dict[datetime, tuple[int, int]] = {}
    for r in reservations:
        if r.end <= r.start:
            continue  # an empty interval holds nothing at any instant
        c, m = deltas.get(r.start, (0, 0))
        deltas[r.start] = (c + r.cores, m + r.memory_gib)
        c, m = deltas.get(r.end, (0, 0))
        deltas[r.end] = (c - r.cores, m - r.memory_gib)
    # All deltas at one instant are summed before usage is read there: with half-open intervals a
    # reservation ending at t and another starting at t never overlap.
    at: list[datetime] = []
    cores: list[int] = []
    memory: list[int] = []
    c_now = m_now = 0
    for t in sorted(deltas):
        dc, dm = deltas[t]
        c_now += dc
        m_now += dm
        at.append(t)
        cores.append(c_now)
        memory.append(m_now)
    return _Steps(at, cores, memory)


def peak_usage(reservations: Sequence[Reservation]) -> tuple[int, int]:
    """The highest simultaneous cores and the highest simultaneous memory (each over all time).

    The two peaks may occur at different instants; each must stay within its own capacity.
    """
    s = _steps(reservations)
    return max(s.cores, default=0), max(s.memory, default=0)


def fits(capacity: Capacity, reservations: Sequence[Reservation], candidate: Reservation) -> bool:
    """Whether every instant stays within capacity once `candidate` is added to `reservations`.

    Judged over all time, not only the candidate's interval: if the pool were somehow already
    over-booked elsewhere, saying "fits" would endorse a state that must never exist.
    """
    cores, memory = peak_usage([*reservations, candidate])
    return cores <= capacity.cores and memory <= capacity.memory_gib


class _SlidingMax:
    """Maximum of `values[lo..hi]` for windows whose `lo` and `hi` never move backwards.

    A monotonic deque makes a whole pass over the candidates O(n) after the O(n log n) sweep.
    """

    def __init__(self, values: list[int]) -> None:
        self._values = values
        self._window: deque[int] = deque()
        self._next = 0

    def query(self, lo: int, hi: int) -> int:
        while self._next <= hi:
            v = self._values[self._next]
            while self._window and self._values[self._window[-1]] <= v:
                self._window.pop()
            self._window.append(self._next)
            self._next += 1
        while self._window[0] < lo:
            self._window.popleft()
        return self._values[self._window[0]]


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


def plan(
    pool_name: str,
    capacity: Capacity,
    reservations: Sequence[Reservation],
    request: SlotRequest,
    *,
    grid: timedelta = timedelta(seconds=60),
) -> PlanResult:
    """Up to `request.max_offers` slots, earliest first, that can all be held at once.

    Why only event points are tried as starts: if a grid time t (later than the lower bound) is
    feasible but is not a reservation end rounded up to the grid, then every reservation active
    during [t - grid, t) is still active at t, so t - grid is feasible too. The earliest feasible
    start is therefore the lower bound itself or some rounded-up reservation end.
    """
    if grid <= timedelta(0):
        raise ValueError(f"grid must be positive, got {grid!r}")
    reasons = _validate(pool_name, capacity, request)
    if reasons:
        return PlanResult((), tuple(reasons))

    zone = request.earliest_start.tzinfo
    duration = request.duration
    first = _ceil_to_grid(request.earliest_start, grid)
    last = request.latest_start
    if first > last:
        return PlanResult(
            (),
            (
                f"no start time on the {_iso_duration(grid)} grid lies between "
                f"{request.earliest_start.isoformat()} and {last.isoformat()}",
            ),
        )

    horizon_end = last + duration
    # Only reservations that overlap some possible slot matter; this keeps the sweep to O(k log k)
    # in the k overlapping reservations rather than the pool's whole history.
    relevant = [r for r in reservations if r.start < horizon_end and r.end > first and r.end > r.start]
    steps = _steps(relevant)
    at, used_cores, used_memory = steps.at, steps.cores, steps.memory
    if not at or at[0] > first:
        # Usage before the first event is zero; give the window query a segment that covers `first`.
        at, used_cores, used_memory = [first, *at], [0, *used_cores], [0, *used_memory]
    max_cores = _SlidingMax(used_cores)
    max_memory = _SlidingMax(used_memory)

    ends = sorted({e for r in relevant if first < (e := _ceil_to_grid(r.end, grid).astimezone(zone)) <= last})

    slots: list[Slot] = []
    start = first
    next_end = 0  # index into `ends` of the next event point after `start`
    while start <= last and len(slots) < request.max_offers:
        lo = bisect_right(at, start) - 1
        hi = bisect_left(at, start + duration) - 1
        free_cores = capacity.cores - max_cores.query(lo, hi)
        free_memory = capacity.memory_gib - max_memory.query(lo, hi)
        if free_cores >= request.cores_min and free_memory >= request.memory_min:
            slots.append(
                Slot(
                    start=start,
                    end=start + duration,
                    cores=min(2 * request.cores_min, request.cores_max, free_cores),
                    memory_gib=min(2 * request.memory_min, request.memory_max, free_memory),
                )
            )
            # The offers of one request are all held at once, so the next one may not overlap this
            # one: it starts when this ends (on the grid). Because they never overlap in time, a held
            # offer adds nothing to any later window, and each offer fitting alongside the existing
            # reservations means all of them together fit.
            start = _ceil_to_grid(start + duration, grid)
        else:
            while next_end < len(ends) and ends[next_end] <= start:
                next_end += 1
            if next_end == len(ends):
                break
            start = ends[next_end]
        while next_end < len(ends) and ends[next_end] <= start:
            next_end += 1

    if slots:
        return PlanResult(tuple(slots), ())
    return PlanResult(
        (),
        (
            f"no free slot of {_iso_duration(duration)} with {request.cores_min} cores and "
            f"{request.memory_min} GiB starts between {request.earliest_start.isoformat()} and "
            f"{last.isoformat()} in pool '{pool_name}'",
        ),
    )
