"""``broker bench``: throughput and latency of a fresh embedded broker, with exactly-once checks.

Scenarios:
* ``offers``: N requests with C in flight; offer sets per second and request → offer-set latency.
* ``lifecycle``: submit, accept and run a zero-time local command to COMPLETED; sessions per second
  and the latency of each phase after the accept.
Both report ``overbooked`` (capacity the scheduler's bookings exceed at their busiest instant, from
its SQLite file and from the accepted offers) and ``lost`` (requests or sessions never answered).
``--baseline`` also measures the plain nats-py chain of the same shape (``shared.ops.bench_floor``);
``--floor-transport faststream`` runs that chain's relays as faststream applications instead.
``--sweep`` repeats the offers scenario once per concurrency (``shared.ops.bench_plot`` draws it), and
``--profile`` records the offers and scheduler processes with py-spy during the load
(``shared.ops.bench_profile``). ``live_sessions`` is how many sessions the offers service holds that have
not ended, counted when the RSS figures are read: the memory is "RSS at that many live sessions".
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from collections import Counter, defaultdict
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared import iso8601
from shared.client import BrokerClient, BrokerTimeout, wait_for_services
from shared.lifecycle import TERMINAL, Phase
from shared.models import OfferSetResponse
from shared.ops import bench_floor
from shared.ops.bench_floor import FloorTransport
from shared.ops.bench_plot import SweepPoint
from shared.ops.bench_profile import FunctionShare, ProfileError, ServiceProfiler
from shared.ops.embedded import SERVICES, EmbeddedBroker, NatsServer
from shared.ops.faults import audit_events, one_fact, zero_time_request

POOL_CORES = 64
# The local user the benchmarks submit as; the built-in pool runs code on this host only for it.
BENCH_USER = "bench"
# The services whose Python is the hot path of a request (the launcher idles in the offers scenario).
PROFILED_SERVICES = ("offers", "scheduler")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 2)}


@dataclass
class BenchReport:
    scenario: str
    requests: int
    concurrency: int
    seconds: float
    per_s: float
    latency_ms: dict[str, float]
    answered: int
    lost: int
    overbooked: int
    overbooked_offers: int
    phases_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    live_sessions: int | None = None
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    ratio: float | None = None
    profile: dict[str, list[FunctionShare]] | None = None
    profile_dir: str | None = None
    profile_error: str | None = None
    #: nats-server nodes (1: the single server) and where the services kept their state.
    nats_nodes: int = 1
    store: str = "sqlite"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def live_sessions(data_dir: Path) -> int | None:
    """Sessions in the offers service's SQLite file that are in no terminal phase (None: unreadable)."""
    path = data_dir / "offers" / "offers.sqlite"
    terminal = sorted(phase.value for phase in TERMINAL)
    try:
        # Read-only, so the count can never take a write lock from the running service.
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            row = db.execute(
                f"SELECT COUNT(*) FROM sessions WHERE phase NOT IN ({', '.join('?' * len(terminal))})",
                terminal,
            ).fetchone()
    except sqlite3.Error:
        return None
    return int(row[0])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ms_per_request(pids: dict[str, int], before: dict[str, float], requests: int) -> dict[str, float]:
    """CPU each process used since ``before`` (from `cpu_s`), in milliseconds per request."""
    return {name: round((cpu_s(pid) - before[name]) * 1000 / requests, 2) for name, pid in pids.items()}


def _slot(offer: Any) -> tuple[datetime, datetime, int, int]:
    available = offer.schedule.available
    start = iso8601.parse_instant(available.start.split("/")[0])
    end = start + iso8601.parse_duration(available.duration)
    return start, end, offer.compute.cores.min, offer.compute.memory.min


def peak(intervals: list[tuple[datetime, datetime, int, int]]) -> tuple[int, int]:
    """Busiest instant of [start, end) intervals: (cores, memory)."""
    events: list[tuple[datetime, int, int]] = []
    for start, end, cores, memory in intervals:
        events += [(start, cores, memory), (end, -cores, -memory)]
    events.sort(key=lambda e: (e[0], e[1]))
    cores = memory = best_cores = best_memory = 0
    for _, dc, dm in events:
        cores += dc
        memory += dm
        best_cores, best_memory = max(best_cores, cores), max(best_memory, memory)
    return best_cores, best_memory


def booked_peak(data_dir: Path) -> tuple[int, int]:
    """From the scheduler's own file: every hold and booking still counted, at its busiest instant."""
    with sqlite3.connect(data_dir / "scheduler" / "scheduler.sqlite") as db:
        # A booking that ended early freed its capacity when it ended (`updated`), not at its slot's end.
        rows = db.execute(
            "SELECT start, CASE WHEN state = 'ended' THEN MIN(end, MAX(start, updated)) ELSE end END, "
            "cores, memory_gib FROM reservations WHERE state IN ('held', 'booked', 'launched', 'ended')"
        ).fetchall()
    return peak(
        [(datetime.fromtimestamp(s, UTC), datetime.fromtimestamp(e, UTC), c, m) for s, e, c, m in rows]
    )


def booked_peak_in(database_url: str) -> tuple[int, int]:
    """`booked_peak`, read from the scheduler's schema in PostgreSQL."""
    import psycopg  # only a PostgreSQL run needs the driver

    with psycopg.connect(database_url) as db:
        rows = db.execute(
            "SELECT start, CASE WHEN state = 'ended' THEN LEAST(\"end\", GREATEST(start, updated)) "
            "ELSE \"end\" END, cores, memory_gib FROM scheduler.reservations "
            "WHERE state IN ('held', 'booked', 'launched', 'ended')"
        ).fetchall()
    return peak(
        [(datetime.fromtimestamp(s, UTC), datetime.fromtimestamp(e, UTC), c, m) for s, e, c, m in rows]
    )


async def _offers(
    client: BrokerClient, requests: int, concurrency: int, accept: bool
) -> tuple[list[float], list[OfferSetResponse], dict[str, float], int]:
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    answered: list[OfferSetResponse] = []
    accepted_at: dict[str, float] = {}
    lost = 0

    async def one() -> None:
        nonlocal lost
        async with limit:
            began = time.perf_counter()
            try:
                offerset = await client.submit(zero_time_request(), request_id=str(uuid.uuid4()), timeout=120)
            except BrokerTimeout:
                lost += 1
                return
            latencies.append((time.perf_counter() - began) * 1000)
            answered.append(offerset)
            if accept and offerset.result == "YES" and offerset.offers and offerset.offers[0].meta:
                session_id = offerset.offers[0].meta.uuid
                assert session_id is not None
                accepted_at[session_id] = time.time()
                result = await client.accept(session_id)
                if not result.applied:
                    accepted_at.pop(session_id, None)

    await asyncio.gather(*(one() for _ in range(requests)))
    return latencies, answered, accepted_at, lost


async def _accept_everything(
    client: BrokerClient, requests: int, concurrency: int
) -> tuple[list[OfferSetResponse], list[Any], int]:
    """Submit, then race to accept EVERY offer of every offer set at once; count what was applied."""
    limit = asyncio.Semaphore(concurrency)
    answered: list[OfferSetResponse] = []
    lost = 0

    async def submit() -> None:
        nonlocal lost
        async with limit:
            try:
                answered.append(await client.submit(zero_time_request(), timeout=120))
            except BrokerTimeout:
                lost += 1

    await asyncio.gather(*(submit() for _ in range(requests)))
    offers = [o for s in answered for o in (s.offers or []) if o.meta and o.meta.uuid]

    async def accept(offer: Any) -> Any:
        async with limit:
            result = await client.accept(offer.meta.uuid)
            return offer if result.applied else None

    accepted = [o for o in await asyncio.gather(*(accept(o) for o in offers)) if o is not None]
    return answered, accepted, lost


#: One bench owner stands for many users: the per-owner limits (`services.offers.limits`) would
#: otherwise measure themselves.
UNLIMITED_OWNER = {"EB_MAX_HOLDS_PER_OWNER": "1000000", "EB_MAX_LIVE_SESSIONS_PER_OWNER": "1000000"}


async def run_overbooking(
    data_dir: Path,
    requests: int,
    concurrency: int,
    cores: int = 4,
    *,
    database_url: str | None = None,
    offers_replicas: int = 1,
) -> dict[str, Any]:
    """A small pool, many overlapping requests, every offer accepted concurrently: never over-booked.

    ``database_url``: the services keep their state in that PostgreSQL database, where
    ``offers_replicas`` offers processes compete on its durables. What the events stream stored is
    audited: an offer set, an update's result or a session's phase stored twice is counted."""
    env = {
        "EB_POOL_CORES": str(cores),
        "EB_POOL_MEMORY_GIB": str(cores * 4),
        "EB_MAX_OFFERS": "4",
        **UNLIMITED_OWNER,
        "EB_POOL_ALLOWED_OWNERS": f"local:{BENCH_USER}",
    }
    if database_url is not None:
        env["EB_DATABASE_URL"] = database_url
    broker = EmbeddedBroker(data_dir=data_dir / "broker", env=env, replicas={"offers": offers_replicas})
    await asyncio.to_thread(broker.start)
    began = time.perf_counter()
    try:
        await wait_for_services(broker.url, SERVICES, timeout=60, credentials=broker.operator())
        # Each offers process's CPU time under the load: that every replica did its share.
        offers = [broker.services["offers"], *(p for p in broker.others if p.name == "offers")]
        offers_pids = [p.proc.pid for p in offers if p.proc is not None]
        cpu_before = {pid: cpu_s(pid) for pid in offers_pids}
        async with BrokerClient(broker.url, broker.login(BENCH_USER), reconnect=True) as client:
            answered, accepted, lost = await _accept_everything(client, requests, concurrency)
        seconds = time.perf_counter() - began
        counts, _ = await audit_events(broker.url, broker.operator())
        dead = sorted(broker.dead_services())
        offers_cpu = [round(cpu_s(pid) - cpu_before[pid], 2) for pid in offers_pids]
    finally:
        await asyncio.to_thread(broker.stop)
    per_request: dict[str, int] = defaultdict(int)
    for offerset in answered:
        for offer in offerset.offers or []:
            if offer in accepted:
                per_request[(offerset.meta.uuid if offerset.meta else None) or ""] += 1
    accepted_cores, _ = peak([_slot(o) for o in accepted])
    booked_cores, _ = booked_peak(broker.data_dir) if database_url is None else booked_peak_in(database_url)
    twice = Counter(subject.split(".")[1] for subject, n in counts.items() if one_fact(subject) and n > 1)
    return {
        "requests": requests,
        "store": "postgresql" if database_url else "sqlite",
        "offers_replicas": offers_replicas,
        "pool_cores": cores,
        "answered": len(answered),
        "yes": sum(1 for s in answered if s.result == "YES"),
        "offers": sum(len(s.offers or []) for s in answered),
        "accepted": len(accepted),
        "accepted_twice_in_one_offer_set": sum(1 for n in per_request.values() if n > 1),
        "peak_cores_accepted": accepted_cores,
        "peak_cores_booked": booked_cores,
        "overbooked": max(0, accepted_cores - cores, booked_cores - cores),
        "lost": lost,
        # Facts the events stream stored twice, by kind (offerset, update result, session phase).
        "stored_twice": dict(sorted(twice.items())),
        "services_exited": dead,
        "offers_cpu_s": offers_cpu,
        "seconds": round(seconds, 1),
    }


async def _follow(
    client: BrokerClient, sessions: dict[str, float], timeout: float
) -> dict[str, dict[str, float]]:
    """Each accepted session's phases, as seconds after its accept."""
    seen: dict[str, dict[str, float]] = defaultdict(dict)
    done: set[str] = set()
    deadline = time.monotonic() + timeout
    async for event in client.events(None, replay=True, idle_timeout=max(1.0, deadline - time.monotonic())):
        if event.session_id in sessions:
            seen[event.session_id][event.phase] = event.at.timestamp() - sessions[event.session_id]
            if Phase(event.phase) in TERMINAL:
                done.add(event.session_id)
        if done >= set(sessions) or time.monotonic() > deadline:
            break
    return seen


async def run_bench(
    data_dir: Path,
    scenario: str,
    requests: int,
    concurrency: int,
    baseline: bool,
    profile_dir: Path | None = None,
    pool_cores: int | None = None,
    floor_transport: FloorTransport = FloorTransport.NATS_PY,
    *,
    cluster: int = 1,
    database_url: str | None = None,
) -> BenchReport:
    """``pool_cores`` sizes the pool (4 GiB per core). By default the offers scenario uses 64 cores,
    so that overlapping requests compete for it (and later ones get NO); the lifecycle scenario
    measures throughput, not queueing for capacity, so every session can start at once."""
    lifecycle = scenario == "lifecycle"
    cores = pool_cores or (max(POOL_CORES, requests) if lifecycle else POOL_CORES)
    env = {
        "EB_POOL_CORES": str(cores),
        "EB_POOL_MEMORY_GIB": str(cores * 4),
        "EB_MAX_OFFERS": "1",
        "EB_OFFER_EXPIRY_S": "300",
        **UNLIMITED_OWNER,
        # The built-in pool runs code on this host only for the owners it allows.
        "EB_POOL_ALLOWED_OWNERS": f"local:{BENCH_USER}",
    }
    if database_url is not None:
        env["EB_DATABASE_URL"] = database_url
    broker = EmbeddedBroker(data_dir=data_dir / "broker", env=env, cluster=cluster)
    profiler = ServiceProfiler(profile_dir, f"{scenario}-c{concurrency}") if profile_dir else None
    profile: dict[str, list[FunctionShare]] | None = None
    profile_error: str | None = None
    await asyncio.to_thread(broker.start)
    try:
        await wait_for_services(broker.url, SERVICES, timeout=60, credentials=broker.operator())
        pids = {name: service.proc.pid for name, service in broker.services.items() if service.proc}
        for number, node in enumerate(broker.nats_nodes, start=1):
            if node.proc is not None:
                pids["nats-server" if cluster == 1 else f"nats-server-{number}"] = node.proc.pid
        # The load generator shares the two cores too: its cost per request is part of the picture.
        pids["bench-client"] = os.getpid()
        if profiler is not None:
            try:
                await asyncio.to_thread(profiler.start, {n: pids[n] for n in PROFILED_SERVICES if n in pids})
            except (ProfileError, OSError) as error:
                profiler.abort()
                profiler, profile_error = None, str(error)
        cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
        async with BrokerClient(broker.url, broker.login(BENCH_USER), reconnect=True) as client:
            began = time.perf_counter()
            latencies, answered, accepted, lost = await _offers(client, requests, concurrency, lifecycle)
            phases: dict[str, dict[str, float]] = {}
            if lifecycle:
                phases = await _follow(client, accepted, timeout=max(60.0, requests / 10))
                lost += sum(1 for s in accepted if not (set(phases.get(s, {})) & {p.value for p in TERMINAL}))
            elapsed = time.perf_counter() - began
        cpu = cpu_ms_per_request(pids, cpu_before, requests)
        # Stop sampling before reading memory and before teardown: the profile covers the load only.
        if profiler is not None:
            try:
                profile = await asyncio.to_thread(profiler.stop)
            except (ProfileError, OSError) as error:
                profile_error = str(error)
        memory = {name: rss_mb(service.proc.pid) for name, service in broker.services.items() if service.proc}
        sessions = live_sessions(broker.data_dir) if database_url is None else None
    finally:
        if profiler is not None:
            profiler.abort()
        await asyncio.to_thread(broker.stop)

    offered = [_slot(o) for s in answered for o in (s.offers or []) if s.result == "YES"]
    held_cores, _ = peak(offered)
    booked_cores, _ = booked_peak(broker.data_dir) if database_url is None else booked_peak_in(database_url)
    by_phase: dict[str, list[float]] = defaultdict(list)
    for seen in phases.values():
        for phase, seconds in seen.items():
            by_phase[phase].append(seconds * 1000)
    report = BenchReport(
        scenario=scenario,
        requests=requests,
        concurrency=concurrency,
        seconds=round(elapsed, 2),
        per_s=round((len(accepted) if lifecycle else len(answered)) / elapsed, 1),
        latency_ms=percentiles(latencies),
        answered=len(answered),
        lost=lost + (requests - len(answered) - lost),
        overbooked=max(0, booked_cores - cores),
        overbooked_offers=max(0, held_cores - cores) if not lifecycle else 0,
        phases_ms={phase: percentiles(values) for phase, values in by_phase.items()},
        rss_mb=memory,
        live_sessions=sessions,
        cpu_ms_per_request=cpu,
        profile=profile,
        profile_dir=str(profile_dir) if profile_dir else None,
        profile_error=profile_error,
        nats_nodes=cluster,
        store="postgresql" if database_url else "sqlite",
    )
    if baseline:
        floor = await measure_floor(data_dir / "floor", requests, concurrency, floor_transport)
        report.baseline = floor
        report.ratio = round(report.per_s / floor["per_s"], 3) if floor["per_s"] else None
    return report


async def measure_floor(
    data_dir: Path, requests: int, concurrency: int, transport: FloorTransport = FloorTransport.NATS_PY
) -> dict[str, Any]:
    server = NatsServer(data_dir / "jetstream")
    await asyncio.to_thread(server.start)
    relays = []
    try:
        await bench_floor.declare(server.url)
        relays = bench_floor.start_relays(server.url, transport)
        await bench_floor.wait_ready(server.url, relays)
        pids = {f"relay-{stage}": proc.pid for stage, proc in enumerate(relays)}
        if server.proc is not None:
            pids["nats-server"] = server.proc.pid
        pids["bench-client"] = os.getpid()
        cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
        result = await bench_floor.drive(server.url, requests, concurrency)
        cpu = cpu_ms_per_request(pids, cpu_before, requests)
    finally:
        for proc in relays:
            proc.terminate()
        for proc in relays:
            proc.wait(10)
        await asyncio.to_thread(server.stop)
    return {
        "transport": transport.value,
        "per_s": round(result.per_s, 1),
        "latency_ms": percentiles(result.latencies_ms),
        "lost": result.lost,
        "cpu_ms_per_request": cpu,
    }


def parse_concurrencies(text: str) -> list[int]:
    """``"10,50,200"`` → ``[10, 50, 200]``; every value a positive integer, each once."""
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise ValueError(f"expected distinct positive integers separated by commas, got {text!r}")
    return values


async def run_sweep(
    data_dir: Path,
    requests: int,
    concurrencies: list[int],
    baseline: bool,
    profile_dir: Path | None = None,
    pool_cores: int | None = None,
    floor_transport: FloorTransport = FloorTransport.NATS_PY,
) -> list[BenchReport]:
    """The offers scenario once per concurrency, each on a fresh embedded broker of its own."""
    return [
        await run_bench(
            data_dir / f"c{concurrency}",
            "offers",
            requests,
            concurrency,
            baseline,
            profile_dir,
            pool_cores,
            floor_transport,
        )
        for concurrency in concurrencies
    ]


def sweep_point(report: BenchReport) -> SweepPoint:
    floor = report.baseline
    return SweepPoint(
        concurrency=report.concurrency,
        per_s=report.per_s,
        p99_ms=report.latency_ms["p99"],
        floor_per_s=floor["per_s"] if floor else None,
        floor_p99_ms=floor["latency_ms"]["p99"] if floor else None,
        ratio=report.ratio,
    )


SWEEP_COLUMNS = ("in flight", "sets/s", "p99 ms", "floor/s", "floor p99", "ratio", "lost", "overbooked")


def sweep_rows(reports: list[BenchReport]) -> list[tuple[str, ...]]:
    """One row of SWEEP_COLUMNS per concurrency."""

    def shown(value: float | None) -> str:
        return "—" if value is None else str(value)

    rows: list[tuple[str, ...]] = []
    for report in reports:
        point = sweep_point(report)
        rows.append(
            (
                str(point.concurrency),
                str(point.per_s),
                str(point.p99_ms),
                shown(point.floor_per_s),
                shown(point.floor_p99_ms),
                shown(point.ratio),
                str(report.lost),
                f"{report.overbooked} / {report.overbooked_offers}",
            )
        )
    return rows


def summary_rows(report: BenchReport) -> list[tuple[str, str]]:
    rows = [
        ("scenario", report.scenario),
        ("nats-server nodes / store", f"{report.nats_nodes} / {report.store}"),
        ("requests / in flight", f"{report.requests} / {report.concurrency}"),
        ("per second", f"{report.per_s}"),
        ("latency ms p50/p95/p99/max", "/".join(str(v) for v in report.latency_ms.values())),
        ("answered / lost", f"{report.answered} / {report.lost}"),
        ("overbooked (bookings / offers)", f"{report.overbooked} / {report.overbooked_offers}"),
        ("RSS MB", ", ".join(f"{k} {v}" for k, v in report.rss_mb.items())),
        ("live sessions (at the RSS reading)", str(report.live_sessions)),
        ("CPU ms per request", ", ".join(f"{k} {v}" for k, v in report.cpu_ms_per_request.items())),
    ]
    for phase, values in report.phases_ms.items():
        rows.append((f"{phase} after accept, ms p50/p99", f"{values['p50']}/{values['p99']}"))
    if report.baseline:
        rows.append(("floor relays", str(report.baseline["transport"])))
        rows.append(("floor per second", str(report.baseline["per_s"])))
        rows.append(
            (
                "floor latency ms p50/p99",
                f"{report.baseline['latency_ms']['p50']}/{report.baseline['latency_ms']['p99']}",
            )
        )
        rows.append(("ratio broker / floor", str(report.ratio)))
    if report.profile_dir:
        rows.append(("profiles (py-spy)", report.profile_dir))
    if report.profile_error:
        rows.append(("profile error", report.profile_error))
    return rows
