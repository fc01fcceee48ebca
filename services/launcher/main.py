"""Composition root of the launcher: loads the platform plugin and resumes unfinished runs."""

from __future__ import annotations

import asyncio

from services.launcher.driver import Drivers
from services.launcher.handlers import LauncherHandlers
from services.launcher.store import SCHEMA
from shared import subjects
from shared.bus.runtime import Handler, Incoming, ServiceRuntime
from shared.bus.store import Store, Transaction
from shared.bus.streams import ConsumerSpec
from shared.platforms.registry import load_platform
from shared.pools import load_pools
from shared.settings import Settings
from shared.telemetry import setup_tracing

SERVICE = "launcher"


def build(settings: Settings) -> tuple[ServiceRuntime, Drivers]:
    tracer = setup_tracing(settings.otel_service_prefix + SERVICE)
    service_dir = settings.service_dir(SERVICE).resolve()
    store = Store(service_dir / "launcher.sqlite", SCHEMA)
    runtime = ServiceRuntime(SERVICE, settings.nats_url, store, tracer, max_deliver=settings.max_deliver)
    # One plugin and one consumer per platform that some configured pool runs on.
    names = load_pools(settings).platforms()
    platforms = {name: load_platform(name) for name in names}
    drivers = Drivers(runtime, platforms, service_dir / "sessions")
    for name in names:
        handlers = LauncherHandlers(drivers, name)
        verbs: dict[str, Handler] = {"launch": handlers.launch, "stop": handlers.stop}

        async def dispatch(tx: Transaction, msg: Incoming, verbs: dict[str, Handler] = verbs) -> None:
            handler = verbs.get(subjects.token_at(msg.subject, 3))
            if handler is not None:
                await handler(tx, msg)

        runtime.consume(
            ConsumerSpec(
                subjects.COMMANDS_STREAM,
                f"launcher-{name}",
                f"eb.launcher.{name}.*",
                settings.ack_wait_s,
                settings.max_deliver,
            ),
            dispatch,
        )
    return runtime, drivers


async def run(settings: Settings, stop: asyncio.Event) -> None:
    runtime, drivers = build(settings)
    await runtime.start()
    await drivers.resume_all()
    try:
        await stop.wait()
    finally:
        await drivers.stop()
        await runtime.stop()
