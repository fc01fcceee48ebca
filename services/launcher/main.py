"""Composition root of the launcher: loads the platform plugin and resumes unfinished runs."""

from __future__ import annotations

import asyncio

from services.launcher.driver import Drivers
from services.launcher.handlers import LauncherHandlers
from services.launcher.platforms.registry import load_platform
from services.launcher.store import SCHEMA
from shared import subjects
from shared.bus.runtime import Incoming, ServiceRuntime
from shared.bus.store import Store, Transaction
from shared.bus.streams import ConsumerSpec
from shared.settings import Settings
from shared.telemetry import setup_tracing

SERVICE = "launcher"


def build(settings: Settings) -> tuple[ServiceRuntime, Drivers]:
    tracer = setup_tracing(settings.otel_service_prefix + SERVICE)
    service_dir = settings.service_dir(SERVICE).resolve()
    store = Store(service_dir / "launcher.sqlite", SCHEMA)
    runtime = ServiceRuntime(SERVICE, settings.nats_url, store, tracer, max_deliver=settings.max_deliver)
    platform_name = settings.pool_platform
    platform = load_platform(platform_name)
    drivers = Drivers(runtime, {platform_name: platform}, service_dir / "sessions")
    handlers = LauncherHandlers(drivers, platform_name)
    verbs = {"launch": handlers.launch, "stop": handlers.stop}

    async def dispatch(tx: Transaction, msg: Incoming) -> None:
        handler = verbs.get(subjects.token_at(msg.subject, 3))
        if handler is not None:
            await handler(tx, msg)

    runtime.consume(
        ConsumerSpec(
            subjects.COMMANDS_STREAM,
            f"launcher-{platform_name}",
            f"eb.launcher.{platform_name}.*",
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
