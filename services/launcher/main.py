"""Composition root of the launcher: loads the platform plugins and resumes unfinished runs."""

from __future__ import annotations

import asyncio

from services.launcher.driver import Drivers
from services.launcher.handlers import SERVICE, LauncherHandlers, wiring
from services.launcher.store import SCHEMA
from shared.bus.runtime import ServiceRuntime
from shared.bus.store import Store
from shared.platforms.registry import load_platform
from shared.pools import load_pools
from shared.settings import Settings
from shared.telemetry import setup_tracing


def build(settings: Settings) -> tuple[ServiceRuntime, Drivers]:
    tracer = setup_tracing(settings.otel_service_prefix + SERVICE)
    service_dir = settings.service_dir(SERVICE).resolve()
    store = Store(service_dir / "launcher.sqlite", SCHEMA)
    config = load_pools(settings)
    # One plugin instance per platform that some configured pool runs on, one consumer per pool.
    platforms = {name: load_platform(name) for name in config.platforms()}
    drivers = Drivers(None, platforms, service_dir / "sessions")
    handlers = [LauncherHandlers(drivers, pool.name, pool.platform) for pool in config.pools]
    runtime = ServiceRuntime(
        wiring(handlers),
        settings.nats_url,
        store,
        tracer,
        ack_wait_s=settings.ack_wait_s,
        max_deliver=settings.max_deliver,
    )
    drivers.bind(runtime)
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
