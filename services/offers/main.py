"""Composition root of the offers service: nothing connects until ``run`` is called."""

from __future__ import annotations

import asyncio
import os

from services.offers.domain import OfferPolicy
from services.offers.handlers import OffersHandlers
from services.offers.store import SCHEMA
from shared import subjects
from shared.bus.runtime import ServiceRuntime
from shared.bus.store import Store
from shared.bus.streams import ConsumerSpec
from shared.settings import Settings
from shared.telemetry import setup_tracing

SERVICE = "offers"


def build(settings: Settings) -> ServiceRuntime:
    tracer = setup_tracing(settings.otel_service_prefix + SERVICE)
    store = Store(settings.service_dir(SERVICE) / "offers.sqlite", SCHEMA)
    runtime = ServiceRuntime(SERVICE, settings.nats_url, store, tracer, max_deliver=settings.max_deliver)
    policy = OfferPolicy(
        pool=settings.pool_name,
        platform=settings.pool_platform,
        prepare_s=settings.pool_prepare_s,
        max_offers=settings.max_offers,
        offer_expiry_s=settings.offer_expiry_s,
        default_duration_s=settings.default_duration_s,
        default_window_s=settings.default_window_s,
        public_url=os.environ.get("EB_PUBLIC_URL", "http://127.0.0.1:8082"),
    )
    handlers = OffersHandlers(policy)

    def spec(durable: str, stream: str, filter_subject: str) -> ConsumerSpec:
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
    runtime.consume(
        spec("offers-events", subjects.EVENTS_STREAM, "eb.sessions.*.events.*"), handlers.session_event
    )
    runtime.every(1.0, handlers.expire_offers, "offers-expiry")
    return runtime


async def run(settings: Settings, stop: asyncio.Event) -> None:
    runtime = build(settings)
    await runtime.start()
    try:
        await stop.wait()
    finally:
        await runtime.stop()
