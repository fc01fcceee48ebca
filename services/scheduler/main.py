"""Composition root of the scheduler: one process, one single-writer set of handlers per pool."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from services.scheduler import store as tables
from services.scheduler.domain import peak_usage
from services.scheduler.handlers import SchedulerHandlers
from services.scheduler.ledger import Ledger
from services.scheduler.rucio import RucioClient
from services.scheduler.store import SCHEMA
from shared import subjects
from shared.bus.runtime import Handler, Incoming, ServiceRuntime
from shared.bus.store import Store, Transaction
from shared.bus.streams import ConsumerSpec
from shared.lifecycle import TERMINAL
from shared.pools import PoolsConfig, load_pools
from shared.settings import Settings
from shared.telemetry import setup_tracing

SERVICE = "scheduler"


def build(settings: Settings) -> tuple[ServiceRuntime, PoolsConfig, dict[str, SchedulerHandlers]]:
    tracer = setup_tracing(settings.otel_service_prefix + SERVICE)
    store = Store(settings.service_dir(SERVICE) / "scheduler.sqlite", SCHEMA)
    runtime = ServiceRuntime(SERVICE, settings.nats_url, store, tracer, max_deliver=settings.max_deliver)
    config = load_pools(settings)
    rucio_url = settings.rucio_url or config.rucio_url
    replicas = RucioClient(rucio_url, settings.rucio_token) if rucio_url else None
    ledgers: dict[str, Ledger] = {}
    pools = {
        pool.name: SchedulerHandlers(pool, settings.hold_grace_s, replicas, ledgers) for pool in config.pools
    }
    for handlers in pools.values():
        runtime.before_consuming(handlers.load)

    def spec(durable: str, stream: str, filter_subject: str | tuple[str, ...]) -> ConsumerSpec:
        return ConsumerSpec(stream, durable, filter_subject, settings.ack_wait_s, settings.max_deliver)

    for name, handlers in pools.items():
        # One consumer for all of a pool's commands keeps book → cancel in the order they were sent.
        commands: dict[str, Handler] = {
            "quote": handlers.quote,
            "book": handlers.book,
            "release": handlers.release,
            "cancel": handlers.cancel,
            "measured": handlers.measured,
        }

        async def dispatch(tx: Transaction, msg: Incoming, commands: dict[str, Handler] = commands) -> None:
            handler = commands.get(subjects.token_at(msg.subject, 4))
            if handler is not None:
                await handler(tx, msg)

        runtime.consume(
            spec(f"scheduler-{name}", subjects.COMMANDS_STREAM, f"eb.scheduler.{name}.cmd.*"), dispatch
        )
        runtime.every(0.2, handlers.tick, f"scheduler-{name}-timers")

    # Session ids are unique across pools, so any pool's handler can end any booking. Only the
    # terminal phases free capacity, so only they are delivered: a session has seven phase events and
    # receiving the other five cost the scheduler as much as a quote each.
    first = next(iter(pools.values()))
    terminal = tuple(sorted(subjects.session_event("*", phase.value) for phase in TERMINAL))
    runtime.consume(spec("scheduler-events", subjects.EVENTS_STREAM, terminal), first.session_event)
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
                    "holds": sum(1 for state, _ in active if state == "held"),
                    "bookings": sum(1 for state, _ in active if state != "held"),
                    "cores_now": sum(r.cores for r in current),
                    "memory_gib_now": sum(r.memory_gib for r in current),
                    "peak_cores": peak_cores,
                    "peak_memory_gib": peak_memory,
                },
            }
        )
    return report


async def run(settings: Settings, stop: asyncio.Event) -> None:
    runtime, config, _ = build(settings)
    await runtime.start()

    async def answer_pools(msg: Msg) -> None:
        await msg.respond(json.dumps(await pools_report(runtime.store, config)).encode())

    await runtime.broker.connection.subscribe(subjects.pools_info(), cb=answer_pools)
    try:
        await stop.wait()
    finally:
        await runtime.stop()
