"""Composition root of the scheduler: one process, one single-writer set of handlers per pool."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from opentelemetry.sdk.trace import TracerProvider

from services.scheduler import store as tables
from services.scheduler.domain import peak_usage
from services.scheduler.handlers import SERVICE, SchedulerHandlers, wiring
from services.scheduler.ledger import Ledger
from services.scheduler.rucio import RucioClient
from services.scheduler.states import ReservationState
from services.scheduler.store import SCHEMA
from shared.bus.backends import service_store
from shared.bus.lease import served, started
from shared.bus.retention import Retention, with_pruning
from shared.bus.runtime import ServiceRuntime
from shared.bus.store import Store
from shared.pools import PoolsConfig, served_pools
from shared.service import ServiceEntry
from shared.settings import Settings
from shared.telemetry import setup_tracing, tracer_provider


def build(
    settings: Settings, tracing: TracerProvider | None = None
) -> tuple[ServiceRuntime, PoolsConfig, dict[str, SchedulerHandlers]]:
    """The service ready to start; nothing connects, opens a file or starts a thread before it does.

    ``tracing`` receives its spans (by default a provider that exports nothing).
    """
    tracer = tracing or tracer_provider(settings.otel_service_prefix + SERVICE)
    # One writer: the ledger in memory mirrors the holds and bookings (active/standby on PostgreSQL).
    store = service_store(settings, SERVICE, SCHEMA, single_writer=True)
    config = served_pools(settings)
    rucio_url = settings.rucio_url or config.rucio_url
    replicas = RucioClient(rucio_url, settings.rucio_token) if rucio_url else None
    ledgers: dict[str, Ledger] = {}
    pools = {
        pool.name: SchedulerHandlers(pool, settings.hold_grace_s, replicas, ledgers) for pool in config.pools
    }

    async def answer_pools(msg: Msg) -> None:
        await msg.respond(json.dumps(await pools_report(store, config)).encode())

    wired = with_pruning(
        wiring(pools, answer_pools, settings.site), tables.prune_finished, Retention(settings.retention_days)
    )
    runtime = ServiceRuntime.configured(wired, store, tracer, settings)
    return runtime, config, pools


async def pools_report(store: Store, config: PoolsConfig) -> list[dict[str, Any]]:
    """Each pool's configuration with what is held and booked in it now and at its busiest."""
    now = datetime.now(UTC)
    report = []
    for pool in config.pools:
        active = await tables.usage(store, pool.name)
        current = [r for _, r in active if r.start <= now < r.end]
        peak_cores, peak_memory = peak_usage([r for _, r in active])
        report.append(
            {
                **pool.model_dump(mode="json"),
                "use": {
                    "holds": sum(1 for state, _ in active if state is ReservationState.HELD),
                    "bookings": sum(1 for state, _ in active if state is not ReservationState.HELD),
                    "cores_now": sum(r.cores for r in current),
                    "memory_gib_now": sum(r.memory_gib for r in current),
                    "peak_cores": peak_cores,
                    "peak_memory_gib": peak_memory,
                },
            }
        )
    return report


async def run(settings: Settings, stop: asyncio.Event) -> None:
    runtime, _, _ = build(settings, setup_tracing(settings.otel_service_prefix + SERVICE))
    try:
        # A standby waits for the lease inside start; it raises LeaseLost if the lease goes later.
        if await started(runtime.start(), stop):
            await served(stop, runtime.store)
    finally:
        await runtime.stop()


#: The `execution_broker.services` entry point (pyproject.toml).
entry = ServiceEntry(SERVICE, run, lambda settings: build(settings)[0].wiring)
