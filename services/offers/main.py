"""Composition root of the offers service: nothing connects until ``run`` is called."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from opentelemetry.sdk.trace import TracerProvider

from services.offers import reconcile
from services.offers.domain import OfferPolicy
from services.offers.handlers import SERVICE, OffersHandlers, wiring
from services.offers.http.settings import HttpSettings
from services.offers.limits import OwnerLimits
from services.offers.platforms import pool_choices
from services.offers.store import SCHEMA, prune_finished
from shared.bus.backends import service_store
from shared.bus.retention import Retention, with_pruning
from shared.bus.runtime import ServiceRuntime
from shared.bus.sqlite import SqliteStore
from shared.pools import load_pools
from shared.service import ServiceEntry
from shared.settings import Settings
from shared.telemetry import setup_tracing, tracer_provider


def build(
    settings: Settings, http: HttpSettings | None = None, tracing: TracerProvider | None = None
) -> ServiceRuntime:
    """The service ready to start; nothing connects, opens a file or starts a thread before it does.

    ``tracing`` receives its spans (by default a provider that exports nothing).
    """
    http = http or HttpSettings()
    tracer = tracing or tracer_provider(settings.otel_service_prefix + SERVICE)
    store = service_store(settings, SERVICE, SCHEMA)
    pools = load_pools(settings)
    first = pools.pools[0]
    policy = OfferPolicy(
        pool=first.name,
        platform=first.platform,
        prepare_s=first.prepare_s,
        max_offers=settings.max_offers,
        offer_expiry_s=settings.offer_expiry_s,
        default_duration_s=settings.default_duration_s,
        default_window_s=settings.default_window_s,
        public_url=http.base_url(),
        pools=pool_choices(pools.pools),
    )
    limits = OwnerLimits(settings.max_holds_per_owner, settings.max_live_sessions_per_owner)
    handlers = OffersHandlers(policy, limits, quote_timeout_s=settings.quote_timeout_s)
    wired = with_pruning(
        wiring(handlers, [pool.name for pool in pools.pools]),
        prune_finished,
        Retention(settings.retention_days),
    )
    wired = replace(wired, on_start=(*wired.on_start, reconcile.at_start(policy)))
    runtime = ServiceRuntime.configured(wired, store, tracer, settings)
    return runtime


async def run(settings: Settings, stop: asyncio.Event) -> None:
    http = HttpSettings()
    runtime = build(settings, http, setup_tracing(settings.otel_service_prefix + SERVICE))
    await runtime.start()
    server = None
    try:
        if http.http_port is not None:
            # Imported here: a service without HTTP does not load FastAPI and uvicorn.
            from services.offers.http.server import HttpServer

            # Its reads on a connection of their own: the SQLite file, or a second PostgreSQL store.
            store = runtime.store
            database = (
                store.path if isinstance(store, SqliteStore) else service_store(settings, SERVICE, SCHEMA)
            )
            server = HttpServer(http, settings.nats_url, database, settings.data_dir)
            await server.start()
        await stop.wait()
    finally:
        if server is not None:
            await server.stop()
        await runtime.stop()


#: The `execution_broker.services` entry point (pyproject.toml).
entry = ServiceEntry(SERVICE, run, lambda settings: build(settings).wiring)
