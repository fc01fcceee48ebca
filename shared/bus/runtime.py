"""The imperative shell every service shares: connect, declare, consume exactly once, relay the outbox.

A handler is ``async def handle(tx, incoming)``: it reads the message, changes the service's tables
and queues outgoing messages with ``tx.publish``, all inside one SQLite transaction that also records
the message id in the inbox. Only after the commit are the queued messages published (with their
deterministic ``Nats-Msg-Id``) and the incoming message double-acked (``ack_sync``). A crash at any
point leaves either nothing done (redelivery redoes it) or the inbox row (redelivery is acked and
skipped) plus outbox rows that the relay resends; the stream's duplicate window drops the copies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider

from shared import subjects
from shared.bus.store import OutboxRow, Store, Transaction
from shared.bus.streams import ConsumerSpec, ensure_consumer, ensure_streams
from shared.messages import DeadLetter

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Incoming:
    subject: str
    body: bytes
    headers: Mapping[str, str]
    msg_id: str
    deliveries: int


class TransientError(Exception):
    """Worth retrying later (a platform or peer is briefly unavailable)."""


Handler = Callable[[Transaction, Incoming], Awaitable[None]]
DeadHandler = Callable[[Transaction, Incoming, str], Awaitable[None]]
Ticker = Callable[[Transaction], Awaitable[None]]


async def _raw_body(msg: NatsMessage) -> bytes:
    return bytes(msg.body or b"")


def retry_delay(deliveries: int) -> float:
    """Back off 1, 2, 4 … seconds, capped, so a struggling peer is not hammered."""
    return float(min(30, 2 ** max(0, deliveries - 1)))


class ServiceRuntime:
    def __init__(
        self,
        service: str,
        nats_url: str,
        store: Store,
        tracer_provider: TracerProvider,
        *,
        max_deliver: int = 5,
    ) -> None:
        self.service = service
        self.store = store
        self.max_deliver = max_deliver
        self.broker = NatsBroker(
            nats_url,
            middlewares=(NatsTelemetryMiddleware(tracer_provider=tracer_provider),),
            logger=logging.getLogger(f"eb.{service}.faststream"),
            log_level=logging.DEBUG,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            graceful_timeout=10.0,
            name=f"eb-{service}",
        )
        self._consumers: list[ConsumerSpec] = []
        self._tickers: list[tuple[float, Ticker, str]] = []
        self._preparations: list[Callable[[Store], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    # -- wiring (before start) -------------------------------------------------------------------

    def consume(self, spec: ConsumerSpec, handler: Handler, on_dead: DeadHandler | None = None) -> None:
        self._consumers.append(spec)
        stream = JStream(spec.stream, declare=False)

        @self.broker.subscriber(
            spec.filter_subject,
            stream=stream,
            durable=spec.durable,
            pull_sub=PullSub(batch_size=1, timeout=1.0),
            ack_policy=AckPolicy.MANUAL,
            config=spec.config(),
            # Handlers get the raw bytes: decoding is theirs, so any input gets a specific answer
            # (faststream's own JSON decoding would crash on, say, 10,000 nested brackets).
            decoder=_raw_body,
        )
        async def _consume(msg: NatsMessage) -> None:
            await self._process(msg, handler, on_dead, spec.ack_wait_s)

    def before_consuming(self, prepare: Callable[[Store], Awaitable[None]]) -> None:
        """Run ``prepare`` after the store opens and before any message is consumed."""
        self._preparations.append(prepare)

    def every(self, seconds: float, ticker: Ticker, name: str) -> None:
        self._tickers.append((seconds, ticker, name))

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        for prepare in self._preparations:
            await prepare(self.store)
        await self.broker.connect()
        js = self.jetstream
        await ensure_streams(js)
        for spec in self._consumers:
            await ensure_consumer(js, spec)
        await self.broker.start()
        # A core (not JetStream) health subject: answers only while this process is up and consuming.
        await self.broker.connection.subscribe(subjects.health(self.service), cb=self._health)
        self._tasks.append(asyncio.create_task(self._relay_loop(), name=f"{self.service}-relay"))
        for seconds, ticker, name in self._tickers:
            self._tasks.append(asyncio.create_task(self._tick_loop(seconds, ticker), name=name))

    async def _health(self, msg: Msg) -> None:
        await msg.respond(b"ok")

    @property
    def jetstream(self) -> JetStreamContext:
        return self.broker.connection.jetstream()

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.broker.stop()
        await self.store.close()

    # -- units of work ---------------------------------------------------------------------------

    async def unit_of_work(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction, then send what it queued."""
        async with self.store.transaction(datetime.now(UTC)) as tx:
            result = await work(tx)
        await self.flush(tx.outbox_ids)
        return result

    async def flush(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        rows = await self.store.unsent(ids)
        await self._send(rows)

    async def _send(self, rows: Sequence[OutboxRow]) -> None:
        sent: list[int] = []
        try:
            for row in rows:
                await self._publish(row)
                sent.append(row.id)
        except Exception as exc:  # the relay resends whatever is left
            log.warning("%s: outbox publish failed, will retry: %s", self.service, exc)
        finally:
            await self.store.mark_sent(sent, datetime.now(UTC))

    async def _publish(self, row: OutboxRow) -> None:
        # Publish under the trace context captured when the row was written, so a resend after a
        # crash still joins the request's trace.
        token = otel_context.attach(propagate.extract(row.headers))
        try:
            await self.broker.publish(
                row.payload,
                row.subject,
                stream=subjects.stream_for(row.subject),
                headers={"Nats-Msg-Id": row.msg_id},
                timeout=5.0,
            )
        finally:
            otel_context.detach(token)

    # -- consumption -----------------------------------------------------------------------------

    async def _process(
        self, msg: NatsMessage, handler: Handler, on_dead: DeadHandler | None, ack_wait_s: float
    ) -> None:
        raw = msg.raw_message
        metadata = raw.metadata
        headers = {str(k): str(v) for k, v in (msg.headers or {}).items()}
        incoming = Incoming(
            subject=raw.subject,
            body=bytes(msg.body or b""),
            headers=headers,
            msg_id=headers.get("Nats-Msg-Id") or f"{metadata.stream}:{metadata.sequence.stream}",
            deliveries=metadata.num_delivered or 1,
        )
        # A handler slower than ack_wait would be redelivered while still working: keep telling the
        # server it is in progress.
        heartbeat = asyncio.create_task(self._keep_alive(msg, ack_wait_s))
        try:
            async with self.store.transaction(datetime.now(UTC)) as tx:
                if not await tx.seen(incoming.msg_id):
                    await handler(tx, incoming)
                    await tx.remember(incoming.msg_id)
        except TransientError as exc:
            log.info("%s: transient failure on %s: %s", self.service, incoming.subject, exc)
            await self._retry_or_bury(msg, incoming, str(exc), on_dead)
            return
        except Exception as exc:
            log.exception("%s: handler failed on %s", self.service, incoming.subject)
            await self._retry_or_bury(msg, incoming, f"{type(exc).__name__}: {exc}", on_dead)
            return
        finally:
            heartbeat.cancel()
        await self.flush(tx.outbox_ids)
        await self._ack(msg)

    @staticmethod
    async def _keep_alive(msg: NatsMessage, ack_wait_s: float) -> None:
        interval = max(0.2, ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await msg.in_progress()
            except Exception as exc:  # the worst case is a redelivery, which the inbox absorbs
                log.debug("in-progress ack failed: %s", exc)

    async def _retry_or_bury(
        self, msg: NatsMessage, incoming: Incoming, reason: str, on_dead: DeadHandler | None
    ) -> None:
        if incoming.deliveries < self.max_deliver:
            await msg.nack(delay=retry_delay(incoming.deliveries))
            return

        # Never succeeded: record it on the dead-letter subject, answer the sender, stop redelivery.
        async def bury(tx: Transaction) -> None:
            if await tx.seen(incoming.msg_id):
                return
            letter = DeadLetter(
                service=self.service,
                subject=incoming.subject,
                reason=reason,
                deliveries=incoming.deliveries,
                payload_preview=incoming.body[:512].decode("utf-8", "replace"),
            )
            await tx.publish(subjects.dead_letter(self.service), letter.to_bytes(), f"dead:{incoming.msg_id}")
            if on_dead is not None:
                await on_dead(tx, incoming, reason)
            await tx.remember(incoming.msg_id)

        try:
            await self.unit_of_work(bury)
        except Exception:
            log.exception("%s: could not dead-letter %s", self.service, incoming.subject)
            await msg.nack(delay=retry_delay(incoming.deliveries))
            return
        await self._ack(msg)

    async def _ack(self, msg: NatsMessage) -> None:
        try:
            await msg.ack_sync()
        except Exception as exc:  # a lost ack means a redelivery, which the inbox absorbs
            log.warning("%s: ack failed: %s", self.service, exc)

    # -- background loops ------------------------------------------------------------------------

    async def _relay_loop(self) -> None:
        """Resend rows whose immediate publish failed or was cut short by a crash."""
        last_prune = datetime.now(UTC)
        while not self._stopping.is_set():
            await asyncio.sleep(1.0)
            try:
                now = datetime.now(UTC)
                # Rows younger than this are still being sent by the handler that wrote them.
                rows = await self.store.unsent(older_than=now - timedelta(seconds=2))
                if rows:
                    await self._send(rows)
                if now - last_prune > timedelta(hours=1):
                    await self.store.prune(now, keep=timedelta(days=1))
                    last_prune = now
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: relay pass failed", self.service)

    async def _tick_loop(self, seconds: float, ticker: Ticker) -> None:
        while not self._stopping.is_set():
            try:
                await self.unit_of_work(ticker)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: timer failed", self.service)
            await asyncio.sleep(seconds)
