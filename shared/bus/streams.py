"""Declare the two streams and reconcile durable consumers to their declared settings.

The server silently keeps an existing durable's old settings when a client binds to it, so every
service start calls ``add_consumer`` (create-or-update) with the settings in the code.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from shared import subjects
from shared.settings import Settings

# Longer than the worst outbox resend we expect (a service down for minutes), so a resent phase
# event is still recognised as a duplicate by the stream.
DUPLICATE_WINDOW_S = 600.0


# Commands are acted on once and kept a week for inspection; events are history users replay.
MAX_AGE_S = {subjects.COMMANDS_STREAM: 7 * 24 * 3600.0, subjects.EVENTS_STREAM: 30 * 24 * 3600.0}


@dataclass(frozen=True)
class StreamLimits:
    """Each stream's byte limit (``EB_COMMANDS_MAX_BYTES``, ``EB_EVENTS_MAX_BYTES``): a full stream
    drops its oldest messages (``DiscardPolicy.OLD``), so a warning comes first (`shared.bus.upkeep`).
    ``replicas`` (``EB_STREAM_REPLICAS``): the copies a JetStream cluster keeps of each stream; the
    services' durable consumers leave ``num_replicas`` unset and so follow their stream's."""

    commands_max_bytes: int = 1 * 2**30
    events_max_bytes: int = 4 * 2**30
    replicas: int = 1

    @classmethod
    def of(cls, settings: Settings) -> StreamLimits:
        return cls(settings.commands_max_bytes, settings.events_max_bytes, settings.stream_replicas)

    def max_bytes(self, stream: str) -> int:
        return self.commands_max_bytes if stream == subjects.COMMANDS_STREAM else self.events_max_bytes


def stream_configs(limits: StreamLimits | None = None) -> list[StreamConfig]:
    """Each stream stores the subjects the grammar assigns it (`subjects.stream_subjects`)."""
    limits = limits or StreamLimits()
    return [
        StreamConfig(
            name=name,
            subjects=list(subjects.stream_subjects(name)),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=max_age,
            max_bytes=limits.max_bytes(name),
            duplicate_window=DUPLICATE_WINDOW_S,
            discard=DiscardPolicy.OLD,
            num_replicas=limits.replicas,
        )
        for name, max_age in MAX_AGE_S.items()
    ]


async def ensure_streams(js: JetStreamContext, limits: StreamLimits | None = None) -> None:
    """Create or update the streams: the operator's (or bootstrap's) job on a secured bus. An update
    applies changed limits to a stream that exists."""
    for config in stream_configs(limits):
        assert config.name is not None
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)


class StreamsNotReady(RuntimeError):
    """A stream a service needs is missing or does not store every subject of the grammar."""


async def check_streams(js: JetStreamContext) -> None:
    """Only read the streams (``STREAM.INFO``), for a service not allowed to create or update them.

    A missing subject would make every publish on it wait for a PubAck that never comes, so it is
    refused at start with what the operator must do. Limits (``max_bytes``, ``max_age``) are the
    operator's to choose and are not compared: a service works with any.
    """
    for config in stream_configs():
        assert config.name is not None
        try:
            info = await js.stream_info(config.name)
        except NotFoundError:
            raise StreamsNotReady(
                f"stream {config.name} does not exist: the operator creates the streams before the "
                "services start"
            ) from None
        missing = sorted(set(config.subjects or ()) - set(info.config.subjects or ()))
        if missing:
            raise StreamsNotReady(
                f"stream {config.name} does not store {', '.join(missing)}: the operator updates the "
                "streams before the services start"
            )


@dataclass(frozen=True)
class ConsumerSpec:
    """``filter_subject`` may be several subjects: the server then delivers only those, which is
    far cheaper than delivering everything for the handler to ignore."""

    stream: str
    durable: str
    filter_subject: str | tuple[str, ...]
    ack_wait_s: float
    max_deliver: int
    max_ack_pending: int = 1000

    def config(self) -> ConsumerConfig:
        several = isinstance(self.filter_subject, tuple)
        return ConsumerConfig(
            durable_name=self.durable,
            filter_subject=None if several else str(self.filter_subject),
            filter_subjects=list(self.filter_subject) if several else None,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
        )


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    await js.add_consumer(spec.stream, spec.config())
