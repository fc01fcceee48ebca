"""Composition root of the launcher: loads the platform plugins and resumes unfinished runs."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider

from services.launcher.driver import Drivers
from services.launcher.handlers import SERVICE, LauncherHandlers, wiring
from services.launcher.pruning import launcher_pruner
from services.launcher.store import SCHEMA
from shared.bus.retention import Retention, with_pruning
from shared.bus.runtime import ServiceRuntime
from shared.bus.store import Store
from shared.platforms.registry import load_platform
from shared.pools import load_pools
from shared.service import ServiceEntry
from shared.settings import Settings
from shared.telemetry import setup_tracing, tracer_provider


def build(settings: Settings, tracing: TracerProvider | None = None) -> tuple[ServiceRuntime, Drivers]:
    """The service ready to start; nothing connects, opens a file or starts a thread before it does.

    ``tracing`` receives its spans (by default a provider that exports nothing).
    """
    tracer = tracing or tracer_provider(settings.otel_service_prefix + SERVICE)
    service_dir = settings.service_dir(SERVICE).resolve()
    store = Store(service_dir / "launcher.sqlite", SCHEMA, synchronous=settings.sqlite_synchronous)
    config = load_pools(settings)
    # One plugin instance per platform that some configured pool runs on, one consumer per pool.
    platforms = {name: load_platform(name) for name in config.platforms()}
    drivers = Drivers(None, platforms, service_dir / "sessions")
    handlers = [LauncherHandlers(drivers, pool.name, pool.platform) for pool in config.pools]
    wired = with_pruning(
        wiring(handlers), launcher_pruner(drivers.work_root), Retention(settings.retention_days)
    )
    runtime = ServiceRuntime.configured(wired, store, tracer, settings)
    drivers.bind(runtime)
    return runtime, drivers


async def run(settings: Settings, stop: asyncio.Event) -> None:
    runtime, drivers = build(settings, setup_tracing(settings.otel_service_prefix + SERVICE))
    await runtime.start()
    await drivers.resume_all()
    try:
        await stop.wait()
    finally:
        await drivers.stop()
        await runtime.stop()


#: The `execution_broker.services` entry point (pyproject.toml).
entry = ServiceEntry(SERVICE, run, lambda settings: build(settings)[0].wiring)
