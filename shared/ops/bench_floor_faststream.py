"""The floor's relay as a faststream application: faststream used for what it is for (issue 11).

One ``NatsBroker`` per relay process declares a batch pull subscriber on the stage's durable and a
publisher to the next stage, and a ``FastStream`` app runs it. Per message, the handler does what
the nats-py relay in ``shared.ops.bench_floor`` does: publish the next stage with a dedup id (here
through the declared publisher, so faststream encodes the body and adds its headers), then
double-ack (``Msg.ack_sync``: faststream's batch message acks without waiting for the server, so
with ``AckPolicy.MANUAL`` the handler acks the raw messages itself). The body is decoded by
faststream and validated against the handler's annotation, as a service's handler would have it.

faststream's batch subscriber collects a batch until it holds ``RELAY_BATCH`` messages or
``BATCH_WINDOW_S`` has passed since the batch began (it keeps fetching until then); the nats-py
relay and the broker's runtime take whatever is waiting at once. That window is the one setting
that trades this relay's latency against its batch size: a batch that does not fill (fewer than
``RELAY_BATCH`` messages reach the stage meanwhile) waits it out.

faststream 0.7.8 with nats-py 2.16 drops batches: the loop that fills a batch catches
``nats.errors.TimeoutError`` only, but nats-py's ``fetch`` raises the builtin ``TimeoutError`` when
its no-wait probe finds nothing and the window has run out by the time it is answered. The consuming
task then dies with the messages it already fetched and faststream's supervisor starts a new one;
those messages are never acked and come back only after the consumer's ack_wait (30 s).
``patched=True`` (``broker bench --floor-transport faststream-patched``) turns that exception into
nats-py's own, so the figure shows what faststream costs once that is fixed; ``faststream``
measures the release as it is.
"""

import asyncio
import logging
from typing import Annotated, Any

import nats.errors
from faststream import AckPolicy, Context, FastStream
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared.ops.bench_floor import RELAY_BATCH, STREAM, consumer_config, durable, stage_subject

# How long a batch may wait to fill (faststream takes a positive window, or None: wait until full).
# 10 ms adds at most 30 ms over the three hops, against the floor's p50 of ~30 ms at 50 in flight
# (docs/performance.md), while still gathering what arrives in a burst.
BATCH_WINDOW_S = 0.01
# As the nats-py relay's: faststream's 0.5 s publish default (and nats-py's 1 s for ack_sync) expire
# on a saturated machine.
TIMEOUT_S = 5.0

# faststream logs every batch at INFO to stdout by default, where `broker bench --json` prints its
# report: this logger has no handler, so only warnings and errors reach stderr.
log = logging.getLogger(__name__)


def raise_nats_timeouts(subscription: JetStreamContext.PullSubscription) -> None:
    """Make ``subscription.fetch`` raise nats-py's ``TimeoutError`` for the builtin one, which
    faststream 0.7.8's batch loop does not catch (see the module's docstring)."""
    fetch = subscription.fetch

    async def fetch_or_nats_timeout(batch: int = 1, timeout: float | None = 5) -> list[Msg]:
        try:
            return await fetch(batch, timeout)
        except nats.errors.TimeoutError:
            raise
        except TimeoutError as exc:
            raise nats.errors.TimeoutError from exc

    # An instance attribute shadows the method: faststream looks it up on every fetch.
    setattr(subscription, "fetch", fetch_or_nats_timeout)  # noqa: B010 - mypy forbids assigning a method


def build_app(url: str, stage: int, *, patched: bool = False) -> FastStream:
    """The relay of ``stage``: consume it, publish ``stage + 1``; ``patched``: with the fix above."""
    broker = NatsBroker(url, logger=log)
    # Declared afresh by the driver before the relays start; faststream binds to it and the durable.
    stream = JStream(STREAM, declare=False)
    publisher = broker.publisher(stage_subject(stage + 1), stream=stream, timeout=TIMEOUT_S)

    subscriber = broker.subscriber(
        stage_subject(stage),
        stream=stream,
        durable=durable(stage),
        config=consumer_config(stage),
        pull_sub=PullSub(batch_size=RELAY_BATCH, timeout=BATCH_WINDOW_S, batch=True),
        ack_policy=AckPolicy.MANUAL,
    )

    @subscriber
    async def relay(
        bodies: list[dict[str, Any]], batch: Annotated[NatsBatchMessage, Context("message")]
    ) -> None:
        async def forward(msg: Msg, body: dict[str, Any]) -> None:
            request_id = msg.subject.rsplit(".", 1)[-1]
            body["hops"] = body.get("hops", 0) + 1
            try:
                await publisher.publish(
                    body,
                    subject=stage_subject(stage + 1, request_id),
                    headers={"Nats-Msg-Id": f"{stage + 1}:{request_id}"},
                    timeout=TIMEOUT_S,
                )
            except Exception:  # a PubAck lost under load: redeliver soon, the dedup id drops a copy
                await msg.nak(delay=0.1)
                return
            await msg.ack_sync(timeout=TIMEOUT_S)

        # Concurrently, as the nats-py relay does; one failure must not fail the others.
        await asyncio.gather(
            *(forward(msg, body) for msg, body in zip(batch.raw_message, bodies, strict=True)),
            return_exceptions=True,
        )

    async def patch() -> None:
        # After the broker's start, which created the subscription (and began fetching with it).
        if subscriber.subscription is None:
            raise RuntimeError("faststream started no pull subscription")
        raise_nats_timeouts(subscriber.subscription)

    return FastStream(broker, logger=log, after_startup=[patch] if patched else [])


def run_relay(url: str, stage: int, *, patched: bool = False) -> None:
    """Run until SIGTERM (FastStream's own handler stops the app, then the process ends)."""
    asyncio.run(build_app(url, stage, patched=patched).run())
