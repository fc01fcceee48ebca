"""Composition root of the offers service: nothing connects until ``run`` is called."""

from __future__ import annotations

import asyncio

from services.offers.domain import OfferPolicy
from services.offers.handlers import OffersHandlers
from services.offers.http.settings import HttpSettings
from services.offers.platforms import pool_choices
from services.offers.store import SCHEMA
from shared import subjects
from shared.bus.runtime import ServiceRuntime
from shared.bus.store import Store
from shared.bus.streams import ConsumerSpec
from shared.lifecycle import Phase
from shared.pools import load_pools
from shared.settings import Settings
from shared.telemetry import setup_tracing

SERVICE = "offers"
#: Phases only the offers service decides (OFFERED is carried by the offer set, never as an event).
OWN_PHASES = frozenset({Phase.OFFERED, Phase.ACCEPTED, Phase.REJECTED, Phase.EXPIRED})


def build(settings: Settings, http: HttpSettings | None = None) -> ServiceRuntime:
    http = http or HttpSettings()
    tracer = setup_tracing(settings.otel_service_prefix + SERVICE)
    store = Store(settings.service_dir(SERVICE) / "offers.sqlite", SCHEMA)
    runtime = ServiceRuntime(SERVICE, settings.nats_url, store, tracer, max_deliver=settings.max_deliver)
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
    handlers = OffersHandlers(policy)

    def spec(durable: str, stream: str, filter_subject: str | tuple[str, ...]) -> ConsumerSpec:
        return ConsumerSpec(stream, durable, filter_subject, settings.ack_wait_s, settings.max_deliver)

    runtime.consume(
        spec("offers-requests", subjects.COMMANDS_STREAM, "eb.requests.*.*"),
        handlers.submit_request,
        handlers.request_dead,
    )
    runtime.consume(
        spec("offers-quotes", subjects.COMMANDS_STREAM, "eb.scheduler.*.evt.quoted"), handlers.slots_quoted
    )
    runtime.consume(
        spec("offers-updates", subjects.COMMANDS_STREAM, "eb.sessions.*.update.*"),
        handlers.update_session,
        handlers.update_dead,
    )
    # The read model follows the phases the scheduler and the launcher report. The ones offers
    # decides itself (accept, reject, expiry) are already in its tables when it publishes them, so
    # the server is asked not to deliver them back.
    reported = tuple(
        subjects.session_event("*", phase.value) for phase in Phase if phase not in OWN_PHASES
    )
    runtime.consume(spec("offers-events", subjects.EVENTS_STREAM, reported), handlers.session_event)
    runtime.every(1.0, handlers.expire_offers, "offers-expiry")
    return runtime


async def run(settings: Settings, stop: asyncio.Event) -> None:
    http = HttpSettings()
    runtime = build(settings, http)
    await runtime.start()
    server = None
    try:
        if http.http_port is not None:
            # Imported here: a service without HTTP does not load FastAPI and uvicorn.
            from services.offers.http.server import HttpServer

            server = HttpServer(http, settings.nats_url, runtime.store.path)
            await server.start()
        await stop.wait()
    finally:
        if server is not None:
            await server.stop()
        await runtime.stop()
