"""Composition root of the scheduler: one process is the single writer of its pool."""

from __future__ import annotations

import asyncio

from services.scheduler.domain import Capacity
from services.scheduler.handlers import SchedulerHandlers
from services.scheduler.store import SCHEMA
from shared import subjects
from shared.bus.runtime import Incoming, ServiceRuntime
from shared.bus.store import Store, Transaction
from shared.bus.streams import ConsumerSpec
from shared.settings import Settings
from shared.telemetry import setup_tracing

SERVICE = "scheduler"


def build(settings: Settings) -> ServiceRuntime:
    tracer = setup_tracing(settings.otel_service_prefix + SERVICE)
    store = Store(settings.service_dir(SERVICE) / "scheduler.sqlite", SCHEMA)
    runtime = ServiceRuntime(SERVICE, settings.nats_url, store, tracer, max_deliver=settings.max_deliver)
    pool = settings.pool_name
    handlers = SchedulerHandlers(
        pool,
        settings.pool_platform,
        Capacity(settings.pool_cores, settings.pool_memory_gib),
        settings.pool_grid_s,
        settings.hold_grace_s,
    )

    def spec(durable: str, stream: str, filter_subject: str) -> ConsumerSpec:
        return ConsumerSpec(stream, durable, filter_subject, settings.ack_wait_s, settings.max_deliver)

    # One consumer for all of the pool's commands keeps book → cancel in the order they were sent.
    commands = {
        "quote": handlers.quote,
        "book": handlers.book,
        "release": handlers.release,
        "cancel": handlers.cancel,
        "measured": handlers.measured,
    }

    async def dispatch(tx: Transaction, msg: Incoming) -> None:
        verb = subjects.token_at(msg.subject, 4)
        handler = commands.get(verb)
        if handler is not None:
            await handler(tx, msg)

    runtime.consume(
        spec(f"scheduler-{pool}", subjects.COMMANDS_STREAM, f"eb.scheduler.{pool}.cmd.*"), dispatch
    )
    runtime.consume(
        spec(f"scheduler-{pool}-events", subjects.EVENTS_STREAM, "eb.sessions.*.events.*"),
        handlers.session_event,
    )
    runtime.every(0.2, handlers.tick, "scheduler-timers")
    return runtime


async def run(settings: Settings, stop: asyncio.Event) -> None:
    runtime = build(settings)
    await runtime.start()
    try:
        await stop.wait()
    finally:
        await runtime.stop()
