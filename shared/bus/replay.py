"""Read again what a durable delivered in the last minutes, for the start-up inbox replay.

With ``EB_DURABILITY=fast`` a service's SQLite commits without waiting for the disk
(``synchronous=NORMAL``): a crash of the machine can take the last transactions with it although
the messages that caused them were acknowledged, so the durable will never deliver them again. At
start the runtime (`ServiceRuntime._replay_inbox`) reads those messages once more from the stream
and applies them through the durable's own path, where the inbox skips every one it remembers.

The messages are read through one ephemeral pull consumer per filter subject
(`Consumer.replay_readers`): it starts at a time (`REPLAY_WINDOW_S` ago), acknowledges nothing and
vanishes `READER_IDLE_S` after its last pull. The readers' messages are merged in stream order and
end at the last message the durable had delivered; later ones are the durable's to deliver.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime, timedelta

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from shared.bus.permissions import api_prefix
from shared.bus.pulling import BatchPuller
from shared.bus.streams import DUPLICATE_WINDOW_S
from shared.bus.upkeep import RECONCILE_LOOK_BACK_S
from shared.bus.wiring import Consumer

#: How far back the replay reads: the outbox check's look-back (what ``fast`` can lose, with a
#: margin). It must stay well inside the streams' duplicate window: a message re-applied re-produces
#: its outputs with their deterministic ``Nats-Msg-Id``, and only inside the window does the stream
#: recognise the ones it holds already as duplicates.
REPLAY_WINDOW_S = RECONCILE_LOOK_BACK_S
assert REPLAY_WINDOW_S <= DUPLICATE_WINDOW_S / 2, "the replay must stay well inside the duplicate window"
#: A reader the replay no longer pulls from is removed by the server after this long (a service
#: may not delete consumers). A service restarted sooner waits for it (`READER_CREATE_PATIENCE_S`):
#: a reader's start time cannot be changed, and its name is fixed.
READER_IDLE_S = 2.0
READER_CREATE_PATIENCE_S = 3 * READER_IDLE_S + 2.0
#: How long to wait for more messages once none are waiting (the stream holds them already).
_LAST_PULL_S = 0.05


@dataclass(frozen=True)
class Position:
    """How far a durable got: the last stream sequence it delivered, and the one below which it has
    every message acknowledged (its ack floor)."""

    delivered: int
    acked: int


async def position(js: JetStreamContext, consumer: Consumer) -> Position | None:
    """Where the durable stands (``CONSUMER.INFO``); None if it does not exist yet (nothing delivered)."""
    try:
        info = await js.consumer_info(consumer.stream, consumer.durable)
    except NotFoundError:
        return None
    return Position(int(info.delivered.stream_seq or 0), int(info.ack_floor.stream_seq or 0))


def sequence(msg: Msg) -> int:
    return int(msg.metadata.sequence.stream)


class _Reader:
    """One filter subject's messages from ``since`` up to ``up_to``, in stream order."""

    def __init__(
        self, nc: Client, stream: str, name: str, subject: str, batch: int, domain: str | None = None
    ) -> None:
        self._nc = nc
        #: The streams' JetStream domain (a service at a site reads the hub's).
        self._domain = domain
        self._stream = stream
        self._name = name
        self._subject = subject
        self._batch = batch
        self._buffer: deque[Msg] = deque()
        self._done = False
        self._puller: BatchPuller | None = None

    async def open(self, since: datetime) -> None:
        config = ConsumerConfig(
            name=self._name,
            filter_subject=self._subject,  # named in the create subject, as the permissions require
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=since,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=READER_IDLE_S,
            mem_storage=True,
        )
        js = self._nc.jetstream(domain=self._domain)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READER_CREATE_PATIENCE_S
        while True:
            try:
                info = await js.add_consumer(self._stream, config)
                break
            except APIError:
                # The reader of a start a moment ago, still there with another start time: the
                # server removes it READER_IDLE_S after its last pull.
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(READER_IDLE_S / 4)
        if not info.num_pending:
            self._done = True
            return
        self._puller = BatchPuller(self._nc, self._stream, self._name, self._batch, api_prefix(self._domain))
        await self._puller.start()

    async def head(self, up_to: int) -> Msg | None:
        """The next message not beyond ``up_to``, left in place; None when there is none."""
        if not self._buffer and not self._done and self._puller is not None:
            self._buffer.extend(await self._puller.next_batch(wait=_LAST_PULL_S))
            if not self._buffer:
                self._done = True
        if self._buffer and sequence(self._buffer[0]) > up_to:
            self._buffer.clear()
            self._done = True
        return self._buffer[0] if self._buffer else None

    def take(self) -> Msg:
        return self._buffer.popleft()

    async def close(self) -> None:
        if self._puller is not None:
            await self._puller.stop()


async def recent(
    nc: Client, consumer: Consumer, since: datetime, up_to: int, batch: int, domain: str | None = None
) -> AsyncGenerator[list[Msg], None]:
    """The messages on ``consumer``'s filter subjects from ``since`` to stream sequence ``up_to``,
    in stream order, in lists of at most ``batch``."""
    readers = [
        _Reader(nc, consumer.stream, name, subject, batch, domain)
        for name, subject in consumer.replay_readers
    ]
    try:
        for reader in readers:
            await reader.open(since)
        chunk: list[Msg] = []
        while True:
            heads = [(msg, reader) for reader in readers if (msg := await reader.head(up_to)) is not None]
            if not heads:
                break
            _, first = min(heads, key=lambda head: sequence(head[0]))
            chunk.append(first.take())
            if len(chunk) >= batch:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    finally:
        for reader in readers:
            await reader.close()


def window_start(now: datetime) -> datetime:
    return now - timedelta(seconds=REPLAY_WINDOW_S)
