"""Benchmark: planning time per request against a pool with many existing bookings.

    python -m services.scheduler.bench_planner --bookings 100000 [--requests 1000] [--json]

Builds one pool (512 cores, 2048 GiB memory, 100 TiB storage by default) holding N bookings, then
for R random requests times what the scheduler does per quote, `Ledger.plan` on the pool's usage
profile, and for comparison `Ledger.overlapping` over the request's `plan_window` followed by `plan`
over the bookings it returns. Prints the median / p95 / max time per request and the median number
of bookings each query returned. Requests are planned against the same bookings (the
offers are not held), so every request sees the same pool.

Bookings arrive at random instants (exponential gaps) whose mean rate would spread N of them over
`--days`; each is kept only if it fits. Processing them in start order makes that check exact and
cheap: usage only rises where a booking starts, so a booking fits if usage at its start plus its
own amounts stays within capacity. A busy pool rejects some arrivals and the horizon then stretches
beyond `--days`; the figures report the real horizon, acceptance and utilisation. The result is
checked once more with `peak_resources` over all bookings.

Not a unit test: timings depend on the machine. Deterministic for a given --seed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import heapq
import json
import pstats
import random
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.scheduler.domain import Capacity, Reservation, SlotRequest, peak_resources, plan, plan_window
from services.scheduler.ledger import Ledger

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Shape:
    """Ranges the bookings and requests are drawn from (uniform, inclusive)."""

    booking_minutes: tuple[int, int] = (10, 480)
    booking_cores: tuple[int, int] = (1, 16)
    memory_per_core: tuple[int, int] = (1, 4)
    booking_storage: tuple[int, int] = (0, 1024)
    request_minutes: tuple[int, int] = (10, 240)
    request_window_minutes: tuple[int, int] = (0, 240)
    request_cores: tuple[int, int] = (1, 16)
    request_memory: tuple[int, int] = (1, 32)
    request_storage: tuple[int, int] = (1, 1024)  # half of the requests ask for no storage


def build_bookings(
    capacity: Capacity, count: int, days: float, shape: Shape, rnd: random.Random
) -> tuple[list[Reservation], int]:
    """`count` bookings that fit `capacity` at every instant, and how many arrivals were refused."""
    mean_gap = days * 86400 / count  # seconds between arrivals
    active: list[tuple[datetime, int, int, int]] = []  # heap of (end, cores, memory, storage)
    cores = memory = storage = 0
    bookings: list[Reservation] = []
    refused = 0
    t = T0
    while len(bookings) < count:
        t += timedelta(seconds=round(rnd.expovariate(1 / mean_gap)))
        while active and active[0][0] <= t:
            _, c, m, s = heapq.heappop(active)
            cores, memory, storage = cores - c, memory - m, storage - s
        c = rnd.randint(*shape.booking_cores)
        m = c * rnd.randint(*shape.memory_per_core)
        s = rnd.randint(*shape.booking_storage)
        if (
            cores + c > capacity.cores
            or memory + m > capacity.memory_gib
            or storage + s > capacity.storage_gib
        ):
            refused += 1
            continue
        end = t + timedelta(minutes=rnd.randint(*shape.booking_minutes))
        heapq.heappush(active, (end, c, m, s))
        cores, memory, storage = cores + c, memory + m, storage + s
        bookings.append(Reservation(f"b{len(bookings):07d}", t, end, c, m, s))
    return bookings, refused


def random_request(start: datetime, end: datetime, shape: Shape, rnd: random.Random) -> SlotRequest:
    """A request whose whole window (start window plus duration) lies in [start, end)."""
    duration = timedelta(minutes=rnd.randint(*shape.request_minutes))
    window = timedelta(minutes=rnd.randint(*shape.request_window_minutes))
    room = (end - start - duration - window).total_seconds()
    earliest = start + timedelta(seconds=rnd.uniform(0, max(room, 0)))
    cores = rnd.randint(*shape.request_cores)
    memory = rnd.randint(*shape.request_memory)
    return SlotRequest(
        cores_min=cores,
        cores_max=2 * cores,
        memory_min=memory,
        memory_max=2 * memory,
        duration=duration,
        earliest_start=earliest,
        latest_start=earliest + window,
        max_offers=4,
        storage_min=rnd.randint(*shape.request_storage) if rnd.random() < 0.5 else 0,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.scheduler.bench_planner", description=__doc__)
    parser.add_argument("--bookings", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--days", type=float, default=60.0, help="arrival horizon of the bookings")
    parser.add_argument("--cores", type=int, default=512)
    parser.add_argument("--memory-gib", type=int, default=2048)
    parser.add_argument("--storage-gib", type=int, default=100 * 1024)
    parser.add_argument(
        "--booking-cores", type=int, default=16, help="bookings hold 1..this many cores (default 16)"
    )
    parser.add_argument("--grid-s", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter; cpu: this process's CPU time, which leaves out time spent descheduled "
        "on a busy machine",
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the timed loop")
    args = parser.parse_args(argv)

    rnd = random.Random(args.seed)
    capacity = Capacity(args.cores, args.memory_gib, args.storage_gib)
    shape = Shape(booking_cores=(1, args.booking_cores))
    grid = timedelta(seconds=args.grid_s)

    t_build = time.perf_counter()
    bookings, refused = build_bookings(capacity, args.bookings, args.days, shape, rnd)
    ledger = Ledger(bookings)
    build_s = time.perf_counter() - t_build
    peak = peak_resources(bookings)
    assert peak.cores <= capacity.cores and peak.memory_gib <= capacity.memory_gib
    assert peak.storage_gib <= capacity.storage_gib, "the built pool must fit"
    horizon_start = bookings[0].start if bookings else T0
    horizon_end = max((b.end for b in bookings), default=T0 + timedelta(days=args.days))
    horizon_h = (horizon_end - horizon_start).total_seconds() / 3600
    core_hours = sum(b.cores * (b.end - b.start).total_seconds() / 3600 for b in bookings)

    # The pool is long-lived: move it out of the collector's generations, as a running service's
    # old objects effectively are, so a full collection of 10**5 bookings does not land in one sample.
    gc.collect()
    gc.freeze()

    requests = [random_request(horizon_start, horizon_end, shape, rnd) for _ in range(args.requests)]
    via_reservations: list[float] = []  # Ledger.overlapping + plan
    ledger_only: list[float] = []  # Ledger.overlapping alone
    via_profile: list[float] = []  # Ledger.plan: the window of its usage profile + plan_on_usage
    overlapping: list[int] = []
    with_offers = 0
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    clock = time.perf_counter_ns if args.clock == "wall" else time.process_time_ns
    for req in requests:
        t0 = clock()
        start, end = plan_window(req, grid=grid)
        existing = ledger.overlapping(start, end)
        t1 = clock()
        result = plan("bench", capacity, existing, req, grid=grid)
        t2 = clock()
        again = ledger.plan("bench", capacity, req, grid=grid)
        t3 = clock()
        assert again == result, "the two paths must agree"
        via_reservations.append((t2 - t0) / 1e6)
        ledger_only.append((t1 - t0) / 1e6)
        via_profile.append((t3 - t2) / 1e6)
        overlapping.append(len(existing))
        with_offers += bool(result.slots)
    if profiler:
        profiler.disable()

    def summary(ms: list[float]) -> dict[str, float]:
        return {
            "median": round(statistics.median(ms), 3),
            "p95": round(percentile(ms, 0.95), 3),
            "max": round(max(ms), 3),
        }

    figures: dict[str, object] = {
        "bookings": len(bookings),
        "refused_arrivals": refused,
        "horizon_days": round(horizon_h / 24, 1),
        "mean_core_utilisation": round(core_hours / (capacity.cores * horizon_h), 3) if horizon_h else 0.0,
        "peak": {"cores": peak.cores, "memory_gib": peak.memory_gib, "storage_gib": peak.storage_gib},
        "build_s": round(build_s, 2),
        "requests": len(requests),
        "requests_with_offers": with_offers,
        "clock": args.clock,
        "ms_overlapping_plus_plan": summary(via_reservations),
        "ms_ledger_plan": summary(via_profile),
        "ms_overlapping_alone": summary(ledger_only),
        "overlapping_median": statistics.median(overlapping),
        "overlapping_max": max(overlapping),
    }
    if args.json:
        print(json.dumps(figures))
    else:

        def line(ms: list[float]) -> str:
            return (
                f"median {statistics.median(ms):.3f} ms, p95 {percentile(ms, 0.95):.3f} ms, "
                f"max {max(ms):.3f} ms"
            )

        print(
            f"pool {capacity.cores} cores / {capacity.memory_gib} GiB / {capacity.storage_gib} GiB storage: "
            f"{len(bookings)} bookings over {horizon_h / 24:.1f} days ({refused} arrivals refused, "
            f"mean core utilisation {core_hours / (capacity.cores * horizon_h):.0%}, "
            f"peak {peak.cores} cores), built in {build_s:.1f} s"
        )
        print(f"{len(requests)} requests, {with_offers} with offers; {args.clock} time per request:")
        print(f"  Ledger.overlapping + plan   {line(via_reservations)}")
        print(f"  Ledger.plan (usage profile) {line(via_profile)}")
        print(f"  Ledger.overlapping alone    {line(ledger_only)}")
        print(f"  bookings per query: median {statistics.median(overlapping)}, max {max(overlapping)}")
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
