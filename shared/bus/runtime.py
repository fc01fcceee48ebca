"""The imperative shell every service shares: connect, declare, consume exactly once, relay the outbox.

A handler is ``async def handle(tx, incoming)``: it reads the message, changes the service's tables
and queues outgoing messages with ``tx.publish``. Only after the commit are the queued messages
published (with their deterministic ``Nats-Msg-Id``) and the incoming messages double-acked
(``ack_sync``). A crash at any point leaves either nothing done (redelivery redoes it) or the inbox
row (redelivery is acked and skipped) plus outbox rows that the relay resends; the stream's
duplicate window drops the copies.

Consumption is batched, because per-message overhead, not the work itself, was what limited a
service (see docs/performance.md): each durable has one fetch loop that pulls up to ``batch_size``
messages, applies them one after another in stream order inside ONE SQLite transaction, each under
its own savepoint (a failing message undoes only its own effects), then publishes everything the
batch queued concurrently and double-acks the batch concurrently. Order within a durable is the
stream's order, as with one message at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Protocol, TypeVar

import nats
import stamina
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import BadSubjectError, MaxPayloadError
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from shared import subjects
from shared.bus.acks import DoubleAcks
from shared.bus.login import ServiceLogin, service_login
from shared.bus.permissions import api_prefix
from shared.bus.publishing import TRANSIENT, publish_once
from shared.bus.pulling import BatchPuller
from shared.bus.redact import excerpt
from shared.bus.replay import REPLAY_WINDOW_S, Position, position, recent, sequence, window_start
from shared.bus.servers import server_urls
from shared.bus.store import OutboxRow, Store, Transaction
from shared.bus.streams import ConsumerSpec, StreamLimits, check_streams, ensure_consumer, ensure_streams
from shared.bus.upkeep import (
    StreamUse,
    announce_filling,
    announces_filling,
    reconcile_outbox,
    upkeep_loop,
)
from shared.bus.wiring import Consumer, DeadHandler, Handler, Ticker, Wiring
from shared.messages import DeadLetter
from shared.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Big enough to amortise a transaction and a round of acks over many messages, small enough that a
# batch is applied in a few milliseconds and stays far below any consumer's max_ack_pending.
DEFAULT_BATCH_SIZE = 100
# How long a published message may wait for the stream's PubAck before the relay takes it over.
PUBLISH_TIMEOUT_S = 5.0
# How long the relay waits for the stream's answer to one row it probes on its own (`_relay`).
PROBE_TIMEOUT_S = 2.0
# How nats-py words a subject the server refused (it reports it to error_cb, lower-cased).
PERMISSIONS_VIOLATION = "permissions violation"
# How long a starting service keeps declaring its streams and durables through timeouts and 503s.
DECLARE_DEADLINE_S = 120.0
# A dead letter quotes at most this much of the message it records, and of the reason.
DEAD_LETTER_REASON_CHARS = 1000
#: How long inbox ids and sent outbox rows are kept: past the duplicate window, ``max_deliver`` times
#: the back-off, and far past the start-up checks' look-back (a message the inbox no longer knew
#: would be applied again by the replay).
KEEP_DELIVERED = timedelta(days=1)
assert KEEP_DELIVERED.total_seconds() > 10 * REPLAY_WINDOW_S


def refused_for_good(outcome: BaseException) -> bool:
    """Whether a publish failed in a way no resend can cure: the message is larger than the server's
    ``max_payload`` (nats-py refuses it before writing), its subject is malformed, or the stream
    answered 400 (a message larger than the stream's ``max_msg_size``, for one). Timeouts, no
    responders, 503s and disconnects are transient: the relay tries those again."""
    return isinstance(outcome, MaxPayloadError | BadSubjectError | BadRequestError)


def describe_refusal(outcome: BaseException) -> str:
    if isinstance(outcome, MaxPayloadError):
        return "the message is larger than the server's maximum payload"
    return f"{type(outcome).__name__}: {outcome}"


@dataclass(frozen=True)
class Incoming:
    subject: str
    body: bytes
    headers: Mapping[str, str]
    msg_id: str
    deliveries: int


class TransactionRunner(Protocol):
    """What long-running work beside the handlers (the launcher's drivers) needs of a runtime: its
    store, and transactions whose queued messages are sent after the commit."""

    @property
    def store(self) -> Store: ...

    async def unit_of_work(self, work: Callable[[Transaction], Awaitable[T]]) -> T: ...


class TransientError(Exception):
    """Worth retrying later (a platform or peer is briefly unavailable)."""


@dataclass(frozen=True)
class Subscription:
    """A declared consumer with the settings the runtime gives it."""

    consumer: Consumer
    spec: ConsumerSpec


@dataclass(frozen=True)
class Failure:
    msg: Msg
    incoming: Incoming
    reason: str


class Elsewhere(Enum):
    """A message that a process sharing the store (an offers replica) applied first: only ack it."""

    APPLIED = "applied elsewhere"


@dataclass(frozen=True)
class Applied:
    """A committed transaction that applied a list of messages: the messages that failed (their
    index in the list, and why), and those that ran their handler (the inbox did not know them)."""

    tx: Transaction
    failures: list[tuple[int, str]]
    applied: list[int]


@dataclass
class Replayed:
    """What the start-up replay read back, and applied again: ``restored`` had been acknowledged
    (their transactions were lost), ``unacknowledged`` were above the durable's ack floor."""

    read: int = 0
    restored: int = 0
    unacknowledged: int = 0


def retry_delay(deliveries: int) -> float:
    """Back off 1, 2, 4 … seconds, capped, so a struggling peer is not hammered."""
    return float(min(30, 2 ** max(0, deliveries - 1)))


def incoming_of(msg: Msg) -> Incoming:
    metadata = msg.metadata
    headers = {str(k): str(v) for k, v in (msg.headers or {}).items()}
    return Incoming(
        subject=msg.subject,
        body=bytes(msg.data or b""),
        headers=headers,
        msg_id=headers.get("Nats-Msg-Id") or f"{metadata.stream}:{metadata.sequence.stream}",
        deliveries=metadata.num_delivered or 1,
    )


class ServiceRuntime:
    """Runs one service's `Wiring`: every consumer, reply subject and timer it declares."""

    def __init__(
        self,
        wiring: Wiring,
        nats_url: str,
        store: Store,
        tracer_provider: TracerProvider,
        *,
        ack_wait_s: float = 30.0,
        max_deliver: int = 5,
        batch_size: int = DEFAULT_BATCH_SIZE,
        login: ServiceLogin | None = None,
        manage_streams: bool = True,
        stream_limits: StreamLimits | None = None,
        js_domain: str | None = None,
        upkeep_every: Mapping[str, float] | None = None,
    ) -> None:
        """``login``: the service's own NATS user (None: connect without credentials).
        ``manage_streams``: create and update the streams at start; False only checks them, for a
        service whose user may not (`shared.bus.permissions`). ``upkeep_every``: the upkeep's
        intervals in seconds, by name (`shared.bus.upkeep.upkeep_loop`; tests shorten them)."""
        self.wiring = wiring
        self.service = wiring.service
        self.store = store
        self.max_deliver = max_deliver
        self.batch_size = batch_size
        self.nats_url = nats_url
        self.login = login
        self.manage_streams = manage_streams
        self.stream_limits = stream_limits
        #: The JetStream domain of the streams (a service at a site uses the hub's; None: local).
        self.js_domain = js_domain
        self.upkeep_every = upkeep_every
        # This runtime is the service framework (docs/architecture.md says why not faststream): it
        # talks to nats-py directly and does its own W3C trace propagation, one span per message.
        self._nc: Client | None = None
        self.tracer: Tracer = tracer_provider.get_tracer("execution-broker.bus")
        self._subscriptions = [
            Subscription(
                consumer,
                ConsumerSpec(
                    consumer.stream,
                    consumer.durable,
                    consumer.filter_subjects,
                    ack_wait_s,
                    max_deliver,
                    consumer.max_ack_pending,
                ),
            )
            for consumer in wiring.consumers
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._pullers: list[BatchPuller] = []
        self._jetstream: JetStreamContext | None = None
        # Committed batches whose publishes and acks are still in flight, at most this many at once.
        self._completions = asyncio.Semaphore(8)
        self._completing: set[asyncio.Task[None]] = set()
        self._publish_order = asyncio.Lock()
        self._acks: DoubleAcks | None = None
        self._stopping = asyncio.Event()
        self._publishes_failing = False

    @classmethod
    def configured(
        cls, wiring: Wiring, store: Store, tracer_provider: TracerProvider, settings: Settings
    ) -> ServiceRuntime:
        """The runtime of a service as the broker's settings configure it (the composition roots)."""
        return cls(
            wiring,
            settings.nats_url,
            store,
            tracer_provider,
            ack_wait_s=settings.ack_wait_s,
            max_deliver=settings.max_deliver,
            login=service_login(settings, wiring.service),
            manage_streams=settings.manage_streams,
            stream_limits=StreamLimits.of(settings),
            js_domain=settings.js_domain,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        for prepare in self.wiring.on_start:
            await prepare(self.store)
        self._nc = await nats.connect(
            server_urls(self.nats_url),
            name=f"eb-{self.service}",
            max_reconnect_attempts=-1,  # a service rides out a server restart
            reconnect_time_wait=1,
            error_cb=self._connection_error,
            **(self.login.connect_options() if self.login is not None else {}),
        )
        self._acks = DoubleAcks(self.connection)
        await self._acks.start()
        js = self.jetstream
        # A service restarted while its cluster elects a leader (or while nats-server restarts)
        # meets timeouts and 503s here: each step is repeatable, so the lot is tried again.
        async for attempt in stamina.retry_context(
            on=TRANSIENT, attempts=None, timeout=DECLARE_DEADLINE_S, wait_max=2.0
        ):
            with attempt:
                await self._declare(js)
        for subscription in self._subscriptions:
            spec = subscription.spec
            # One fetch loop per durable: two pull requests waiting on one durable can stall.
            puller = BatchPuller(
                self.connection, spec.stream, spec.durable, self.batch_size, api_prefix(self.js_domain)
            )
            await puller.start()
            self._pullers.append(puller)
            self._tasks.append(
                asyncio.create_task(self._fetch_loop(subscription, puller), name=f"{spec.durable}-fetch")
            )
        for reply in self.wiring.replies:
            await self.connection.subscribe(reply.subject, cb=reply.responder)
        # A core (not JetStream) health subject: answers only while this process is up and consuming.
        await self.connection.subscribe(self.wiring.health, cb=self._health)
        self._tasks.append(asyncio.create_task(self._relay_loop(), name=f"{self.service}-relay"))
        self._tasks.append(
            asyncio.create_task(
                upkeep_loop(
                    self.service,
                    self.store,
                    js,
                    self._stopping,
                    every=self.upkeep_every,
                    announce=self._announce_filling if announces_filling(self.wiring) else None,
                ),
                name=f"{self.service}-upkeep",
            )
        )
        for timer in self.wiring.timers:
            self._tasks.append(
                asyncio.create_task(self._tick_loop(timer.every_s, timer.ticker), name=timer.name)
            )

    async def _announce_filling(self, full: Sequence[StreamUse]) -> None:
        await self.unit_of_work(lambda tx: announce_filling(tx, self.service, full))

    async def _declare(self, js: JetStreamContext) -> None:
        """Check (or create) the streams, restore the outbox, apply what the store forgot, reconcile
        every durable; each step can be repeated, so the lot is retried through an election."""
        await (ensure_streams(js, self.stream_limits) if self.manage_streams else check_streams(js))
        await reconcile_outbox(js, self.store, self.service)
        await self._replay_inbox()
        for subscription in self._subscriptions:
            await ensure_consumer(js, subscription.spec)

    @property
    def connection(self) -> Client:
        if self._nc is None:
            raise RuntimeError("the runtime is not started")
        return self._nc

    async def _connection_error(self, exc: Exception) -> None:
        # A refused subject is never expected: the service's permissions and its wiring disagree.
        if PERMISSIONS_VIOLATION in str(exc).lower():
            log.error("%s: the server refused: %s", self.service, exc)
            return
        # Disconnects and reconnects are expected (a server restart); the fetch loops retry.
        log.debug("%s: connection: %s", self.service, exc)

    async def _health(self, msg: Msg) -> None:
        await msg.respond(b"ok")

    @property
    def jetstream(self) -> JetStreamContext:
        # One context for the connection's life: building one per publish showed in the profile.
        if self._jetstream is None:
            self._jetstream = self.connection.jetstream(domain=self.js_domain)
        return self._jetstream

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Let committed batches finish sending and acking; anything cut short is redelivered (and
        # skipped by the inbox) or resent by the relay after the restart.
        if self._completing:
            await asyncio.wait(self._completing, timeout=5.0)
        # Unsubscribed first: draining the connection would otherwise wait out its timeout on them.
        for puller in self._pullers:
            with contextlib.suppress(Exception):
                await puller.stop()
        if self._acks is not None:
            with contextlib.suppress(Exception):
                await self._acks.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):  # flushes what is buffered, then closes
                await self._nc.drain()
        await self.store.close()

    # -- units of work ---------------------------------------------------------------------------

    async def unit_of_work(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction, then send what it queued."""
        async with self.store.transaction(datetime.now(UTC)) as tx:
            result = await work(tx)
        await self._send(tx.outbox)
        return result

    async def _send(self, rows: Sequence[OutboxRow]) -> list[tuple[OutboxRow, BaseException]]:
        """Publish and confirm; the rows that failed for now (left for the relay), with why."""
        return await self._confirm(rows, self._start_publishing(rows))

    async def _relay(self, rows: Sequence[OutboxRow]) -> None:
        """Resend rows; then probe, one at a time and with a plain request, each row whose publish
        got no PubAck at all. nats-py's asynchronous publish cannot report a stream's error answer
        (it raises in its reply callback, and the future is never resolved), so a row the stream
        refuses (400: larger than its ``max_msg_size``) would look like a timeout for ever: the
        probe sees the refusal and dead-letters the row. A probe rides out a leader election
        (`publish_once`); the first one that still fails after that ends the pass: the server is
        away, and the next pass tries again."""
        unanswered = [row for row, outcome in await self._send(rows) if isinstance(outcome, TimeoutError)]
        for row in unanswered:
            try:
                # Retried with the row's own id through a leader election (`shared.bus.publishing`).
                await publish_once(
                    self.jetstream,
                    row.subject,
                    row.payload,
                    row.msg_id,
                    headers=row.headers,
                    stream=subjects.stream_for(row.subject),
                    attempt_timeout_s=PROBE_TIMEOUT_S,
                )
            except Exception as exc:
                if not refused_for_good(exc):
                    return
                await self._refuse(row, describe_refusal(exc))
            else:
                await self.store.mark_sent([row.id], datetime.now(UTC))

    def _start_publishing(self, rows: Sequence[OutboxRow]) -> asyncio.Task[list[BaseException | None]]:
        """Start writing the rows, in order, and collecting their PubAcks (see `_publish_all`).
        Tasks first run in the order they are created, so batches leave in commit order."""
        return asyncio.create_task(self._publish_all(rows))

    async def _publish_all(self, rows: Sequence[OutboxRow]) -> list[BaseException | None]:
        """Each row's outcome: None once the stream confirmed it (a duplicate counts), else why not.

        ``publish_async`` writes a message and returns a future that one shared reply subscription
        resolves, instead of a request with its own inbox token and timer per message (the PubAck
        request/reply was a seventh of a service's CPU). The lock keeps a later batch's messages from
        slipping in between these if a full write buffer makes a write wait.
        """
        js = self.jetstream
        pending: list[asyncio.Future[Any] | BaseException] = []
        async with self._publish_order:
            for row in rows:
                try:
                    # The row's headers hold the trace context captured when it was written, so a
                    # resend after a crash still joins the request's trace.
                    pending.append(
                        await js.publish_async(
                            row.subject,
                            row.payload,
                            stream=subjects.stream_for(row.subject),
                            headers={**row.headers, "Nats-Msg-Id": row.msg_id},
                        )
                    )
                except Exception as exc:  # not even written: left for the relay
                    pending.append(exc)
        futures = [item for item in pending if isinstance(item, asyncio.Future)]
        if futures:
            await asyncio.wait(futures, timeout=PUBLISH_TIMEOUT_S)
        outcomes: list[BaseException | None] = []
        for item in pending:
            if isinstance(item, BaseException):
                outcomes.append(item)
            elif not item.done() or item.cancelled():
                item.cancel()
                outcomes.append(TimeoutError(f"no PubAck within {PUBLISH_TIMEOUT_S:.0f} s"))
            else:
                outcomes.append(item.exception())
        return outcomes

    async def _confirm(
        self, rows: Sequence[OutboxRow], publishing: asyncio.Task[list[BaseException | None]]
    ) -> list[tuple[OutboxRow, BaseException]]:
        """Wait for the stream's PubAcks, then mark what it confirmed; a row the server refused for
        good is dead-lettered (`_refuse`); whatever failed otherwise stays unsent for the relay."""
        outcomes = await publishing
        if not rows:
            return []
        sent = [row.id for row, outcome in zip(rows, outcomes, strict=True) if outcome is None]
        refused = [
            (row, outcome)
            for row, outcome in zip(rows, outcomes, strict=True)
            if outcome is not None and refused_for_good(outcome)
        ]
        failed = [
            (row, outcome)
            for row, outcome in zip(rows, outcomes, strict=True)
            if outcome is not None and not refused_for_good(outcome)
        ]
        await self.store.mark_sent(sent, datetime.now(UTC))
        # One at a time and each in its own transaction: one row that cannot be dead-lettered does
        # not keep the others in the outbox.
        for row, outcome in refused:
            try:
                await self._refuse(row, describe_refusal(outcome))
            except Exception:
                log.exception("%s: could not dead-letter refused outbox row %s", self.service, row.msg_id)
        if failed:
            # Once per outage, not once a second for as long as the bus is away (a site's cut link).
            report = log.debug if self._publishes_failing else log.warning
            report(
                "%s: %d of %d outbox publishes failed, the relay will retry: %s",
                self.service,
                len(failed),
                len(rows),
                failed[0][1],
            )
        elif sent and self._publishes_failing:
            log.warning("%s: outbox publishes are confirmed again", self.service)
        self._publishes_failing = bool(failed) or (self._publishes_failing and not sent)
        return failed

    async def _refuse(self, row: OutboxRow, reason: str) -> None:
        """Take a row the server will never accept out of the outbox, record it on the dead-letter
        subject and let the service answer its addressee another way (`Wiring.on_refused`), all in
        one transaction: retrying it would only fail again, for ever."""
        log.error("%s: the server refused %s (%s): dead-lettered", self.service, row.subject, reason)
        dead_subject = subjects.dead_letter(self.service)

        async def bury(tx: Transaction) -> None:
            if not await tx.execute("DELETE FROM outbox WHERE id = ? AND sent_at IS NULL", (row.id,)):
                return  # another pass took care of it
            if row.subject == dead_subject:
                return  # a dead letter is small by construction; never one of a dead letter
            letter = DeadLetter(
                service=self.service,
                subject=row.subject,
                reason=f"refused by the server: {reason}"[:DEAD_LETTER_REASON_CHARS],
                deliveries=0,
                payload_preview=excerpt(row.payload),
            )
            await tx.publish(dead_subject, letter.to_bytes(), f"dead:{row.msg_id}", trace_headers=row.headers)
            if self.wiring.on_refused is not None:
                try:
                    async with tx.savepoint():  # the answer is a courtesy: the dead letter stands without it
                        await self.wiring.on_refused(tx, row, reason)
                except Exception:
                    log.exception("%s: no other answer for refused %s", self.service, row.subject)

        await self.unit_of_work(bury)

    # -- start-up replay --------------------------------------------------------------------------

    async def _replay_inbox(self) -> int:
        """Apply again what each durable delivered in the last minutes and this store has forgotten.

        A machine crash can take the last committed transactions of a ``fast`` store with it
        (`shared.bus.replay`); the messages that caused them were acknowledged, so no durable
        brings them back. Each is read again from the stream and goes through the durables' own
        path (`_apply_all`): one the inbox remembers is skipped (the normal case: nothing happens),
        one whose transaction was lost is applied again, and what it publishes carries the message
        ids of the first time, which the stream drops as duplicates. Runs before the durables and
        timers start, so the state they see includes what was restored. How many were applied."""
        began = asyncio.get_running_loop().time()
        counts = Replayed()
        for subscription in self._subscriptions:
            consumer = subscription.consumer
            try:
                await self._replay(consumer, counts)
            except Exception:
                # The check is a safety net: a service that cannot run it still serves (said loudly).
                log.exception(
                    "%s: could not read back the recent messages of %s at start",
                    self.service,
                    consumer.durable,
                    extra={"event": "inbox_replay_failed", "durable": consumer.durable},
                )
        log.info(
            "%s: read back %d recent messages at start in %.2f s; %d delivered but not acknowledged "
            "before the stop were applied now, ahead of their redelivery",
            self.service,
            counts.read,
            asyncio.get_running_loop().time() - began,
            counts.unacknowledged,
        )
        if counts.restored:
            log.warning(
                "%s: %d acknowledged messages of the last %.0f s had been forgotten (a crash of its "
                "machine lost their transactions?); they were applied again",
                self.service,
                counts.restored,
                REPLAY_WINDOW_S,
                extra={"event": "inbox_restored", "restored": counts.restored},
            )
        return counts.restored

    async def _replay(self, consumer: Consumer, counts: Replayed) -> None:
        where = await position(self.jetstream, consumer)
        if where is None or where.delivered == 0:
            return
        since = window_start(datetime.now(UTC))
        chunks = recent(self.connection, consumer, since, where.delivered, self.batch_size, self.js_domain)
        async with aclosing(chunks):
            async for msgs in chunks:
                counts.read += len(msgs)
                await self._replay_chunk(consumer, where, msgs, counts)

    async def _replay_chunk(
        self, consumer: Consumer, where: Position, msgs: list[Msg], counts: Replayed
    ) -> None:
        incomings = [incoming_of(msg) for msg in msgs]
        try:
            applied = await self._apply_all(consumer, incomings)
        except Exception as exc:  # the commit failed: each message on its own, as `_batch_failed`
            if len(msgs) > 1:
                for msg in msgs:
                    await self._replay_chunk(consumer, where, [msg], counts)
                return
            reason = f"{type(exc).__name__}: {exc}"[:DEAD_LETTER_REASON_CHARS]
            await self._replay_failed(consumer, where, msgs[0], incomings[0], reason)
            return
        # Confirmed before the durables start; what fails now stays in the outbox for the relay.
        await self._send(applied.tx.outbox)
        for index in applied.applied:
            # At or below the ack floor it was acknowledged, so its transaction had committed and was
            # lost; above it, it may as well have been in flight when the service stopped (a killed
            # process), and the durable would have delivered it again.
            if sequence(msgs[index]) <= where.acked:
                counts.restored += 1
            else:
                counts.unacknowledged += 1
        for index, reason in applied.failures:
            await self._replay_failed(consumer, where, msgs[index], incomings[index], reason)

    async def _replay_failed(
        self, consumer: Consumer, where: Position, msg: Msg, incoming: Incoming, reason: str
    ) -> None:
        """A message that failed when applied again. Not remembered, so the inbox stays truthful.

        Above the durable's ack floor the message may still be the durable's (delivered, not yet
        acknowledged, or nak'ed for a retry): it will deliver it again with its real delivery count
        and retry or dead-letter it as `_retry_or_bury` does. Burying it here would dead-letter, and
        answer the sender with a failure, a message that may yet succeed; so it is left alone (one
        acknowledged in the moment before the crash and failing now is then lost: logged).

        At or below the ack floor the durable is done with it: nothing will ever bring it back.
        It is dead-lettered and its sender answered at once, as after its last delivery: waiting
        is not possible, and silence would be worse. The dead letter's id is that of a first
        burial, so a letter the stream holds already is not stored twice."""
        if sequence(msg) > where.acked:
            log.warning(
                "%s: %s failed when applied again at start (%s); left to %s, which may deliver it again",
                self.service,
                incoming.subject,
                reason,
                consumer.durable,
            )
            return
        why = f"applied again at start after a lost transaction: {reason}"[:DEAD_LETTER_REASON_CHARS]
        await self._bury(incoming, why, consumer.on_dead)

    # -- consumption -----------------------------------------------------------------------------

    async def _fetch_loop(self, subscription: Subscription, puller: BatchPuller) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await puller.next_batch(wait=5.0)
                if not msgs:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # disconnected or the server is restarting: try again shortly
                log.debug("%s: fetch on %s failed: %s", self.service, subscription.spec.durable, exc)
                await asyncio.sleep(0.5)
                continue
            try:
                await self._process_batch(subscription, msgs)
            except asyncio.CancelledError:
                raise
            except Exception:  # nothing was acked: every message comes back after ack_wait
                log.exception("%s: batch on %s failed", self.service, subscription.spec.durable)

    async def _process_batch(self, subscription: Subscription, msgs: list[Msg]) -> None:
        incomings = [incoming_of(msg) for msg in msgs]
        # A batch slower than ack_wait would be redelivered while still being applied: keep telling
        # the server it is in progress.
        heartbeat = asyncio.create_task(self._keep_alive(msgs, subscription.spec.ack_wait_s))
        applied: Applied | None = None
        failed: Exception | None = None
        try:
            applied = await self._apply_all(subscription.consumer, incomings)
        except Exception as exc:
            log.exception("%s: could not commit a batch of %d", self.service, len(msgs))
            failed = exc
        finally:
            heartbeat.cancel()
        if applied is None:
            assert failed is not None
            await self._batch_failed(subscription, msgs, incomings, failed)
            return
        failures = [Failure(msgs[i], incomings[i], reason) for i, reason in applied.failures]
        tx = applied.tx
        # Committed: what is left is round trips. They run in the background so this loop can fetch
        # and apply the next batch meanwhile (bounded, so a slow server applies back-pressure).
        await self._completions.acquire()
        publishing = self._start_publishing(tx.outbox)
        task = asyncio.create_task(self._complete(subscription, msgs, tx.outbox, publishing, failures))
        self._completing.add(task)
        task.add_done_callback(self._completing.discard)

    async def _apply_all(self, consumer: Consumer, incomings: Sequence[Incoming]) -> Applied:
        """Apply messages in order in ONE transaction, each under its own savepoint; those the inbox
        remembers are skipped. The same path for the durables and the start-up replay."""
        failures: list[tuple[int, str]] = []
        ran: list[int] = []
        async with self.store.transaction(datetime.now(UTC)) as tx:
            done = await tx.seen_among([incoming.msg_id for incoming in incomings])
            for index, incoming in enumerate(incomings):
                if incoming.msg_id in done:
                    continue  # applied before (or earlier in this batch): only ack it
                handler = consumer.route(incoming.subject)
                if handler is None:  # not a subject this consumer acts on: ack it
                    done.add(incoming.msg_id)
                    continue
                reason = await self._apply(tx, handler, incoming)
                if reason is None:
                    done.add(incoming.msg_id)
                    ran.append(index)
                elif reason is Elsewhere.APPLIED:
                    done.add(incoming.msg_id)
                else:
                    failures.append((index, reason))
        return Applied(tx, failures, ran)

    async def _batch_failed(
        self, subscription: Subscription, msgs: list[Msg], incomings: list[Incoming], exc: Exception
    ) -> None:
        """The batch's transaction failed as a whole (its commit, say), so nothing of it was applied.
        Each message is tried again in a transaction of its own: the good ones are applied now, and
        only the one at fault goes the way of any failing message (retried, then dead-lettered),
        instead of the whole batch coming back until ``max_deliver`` silently drops it."""
        if len(msgs) > 1:
            for msg in msgs:
                await self._process_batch(subscription, [msg])
            return
        reason = f"{type(exc).__name__}: {exc}"[:DEAD_LETTER_REASON_CHARS]
        await self._retry_or_bury(Failure(msgs[0], incomings[0], reason), subscription.consumer.on_dead)

    async def _complete(
        self,
        subscription: Subscription,
        msgs: Sequence[Msg],
        outbox: Sequence[OutboxRow],
        publishing: asyncio.Task[list[BaseException | None]],
        failures: Sequence[Failure],
    ) -> None:
        """Confirm what a committed batch published, double-ack what it applied, retry what failed."""
        try:
            failed = {id(failure.msg) for failure in failures}
            await asyncio.gather(
                self._confirm(outbox, publishing),
                self._ack_all([msg for msg in msgs if id(msg) not in failed]),
            )
            for failure in failures:
                await self._retry_or_bury(failure, subscription.consumer.on_dead)
        except Exception:  # whatever was not sent stays in the outbox for the relay
            log.exception("%s: completing a batch on %s failed", self.service, subscription.spec.durable)
        finally:
            self._completions.release()

    async def _apply(
        self, tx: Transaction, handler: Handler, incoming: Incoming
    ) -> str | Elsewhere | None:
        """Apply one message under its own savepoint and span: None, the reason it failed, or
        `Elsewhere.APPLIED` when a process sharing the store claimed it first."""
        with self.tracer.start_as_current_span(
            f"{incoming.subject} process",
            context=propagate.extract(incoming.headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": incoming.subject,
                "messaging.message.id": incoming.msg_id,
                "messaging.message.body.size": len(incoming.body),
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                async with tx.savepoint():
                    if not await tx.claim(incoming.msg_id):
                        span.set_attribute("messaging.eb.already_applied", True)
                        return Elsewhere.APPLIED  # another process sharing the store applied it
                    await handler(tx, incoming)
            except TransientError as exc:
                log.info("%s: transient failure on %s: %s", self.service, incoming.subject, exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                return str(exc)[:DEAD_LETTER_REASON_CHARS]
            except Exception as exc:
                log.exception("%s: handler failed on %s", self.service, incoming.subject)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                # Bounded: the reason travels in the dead letter and in the answer to the sender.
                return f"{type(exc).__name__}: {exc}"[:DEAD_LETTER_REASON_CHARS]
        return None

    @staticmethod
    async def _keep_alive(msgs: Sequence[Msg], ack_wait_s: float) -> None:
        interval = max(0.2, ack_wait_s / 3)
        while True:
            await asyncio.sleep(interval)
            for msg in msgs:
                try:
                    await msg.in_progress()
                except Exception as exc:  # the worst case is a redelivery, which the inbox absorbs
                    log.debug("in-progress ack failed: %s", exc)

    async def _retry_or_bury(self, failure: Failure, on_dead: DeadHandler | None) -> None:
        incoming = failure.incoming
        if incoming.deliveries < self.max_deliver:
            await self._nak(failure.msg, retry_delay(incoming.deliveries))
            return
        if not await self._bury(incoming, failure.reason, on_dead):
            await self._nak(failure.msg, retry_delay(incoming.deliveries))
            return
        await self._ack_all([failure.msg])

    async def _bury(self, incoming: Incoming, reason: str, on_dead: DeadHandler | None) -> bool:
        """Never succeeded: record it on the dead-letter subject (with a message id of its own, so a
        second burial is dropped by the stream), answer the sender and remember it. False if that
        could not be committed."""

        async def bury(tx: Transaction) -> None:
            if not await tx.claim(incoming.msg_id):
                return
            letter = DeadLetter(
                service=self.service,
                subject=incoming.subject,
                reason=reason,
                deliveries=incoming.deliveries,
                payload_preview=excerpt(incoming.body),
            )
            await tx.publish(subjects.dead_letter(self.service), letter.to_bytes(), f"dead:{incoming.msg_id}")
            if on_dead is not None:
                await on_dead(tx, incoming, reason)

        # Under the message's own trace, so the dead letter and the answer join the request's trace.
        token = otel_context.attach(propagate.extract(incoming.headers))
        try:
            await self.unit_of_work(bury)
        except Exception:
            log.exception("%s: could not dead-letter %s", self.service, incoming.subject)
            return False
        finally:
            otel_context.detach(token)
        return True

    async def _ack_all(self, msgs: Sequence[Msg]) -> None:
        if self._acks is None:
            raise RuntimeError("the runtime is not started")
        unconfirmed = await self._acks.ack(msgs, timeout=PUBLISH_TIMEOUT_S)
        if unconfirmed:  # a lost ack means a redelivery, which the inbox absorbs
            log.warning("%s: %d of %d acks not confirmed", self.service, unconfirmed, len(msgs))

    async def _nak(self, msg: Msg, delay: float) -> None:
        try:
            await msg.nak(delay=delay)
        except Exception as exc:  # no nak: the message comes back after ack_wait instead
            log.warning("%s: nak failed: %s", self.service, exc)

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
                    await self._relay(rows)
                await self.store.checkpoint()
                if now - last_prune > timedelta(hours=1):
                    await self.store.prune(now, keep=KEEP_DELIVERED)
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
