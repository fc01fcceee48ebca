"""One pydantic model per message on the bus.

Commands are imperative (``QuoteSlots``), events past tense (``SlotsQuoted``). The client's
``ExecutionRequest`` travels as the raw JSON or YAML document the user wrote, so that the offers
service, not the transport, decides what is wrong with bad input and answers it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.models import MessageItem


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class QuoteSlots(Message):
    """offers → scheduler: find and hold up to ``max_offers`` slots for one request."""

    request_id: str
    owner: str
    cores_min: int
    cores_max: int
    memory_min: int
    memory_max: int
    duration_s: int
    earliest_start: datetime
    latest_start: datetime
    prepare_s: int
    max_offers: int
    expires_at: datetime
    requested_at: datetime
    storage_min: int = 0
    data: list[dict[str, Any]] = Field(default_factory=list)


class Hold(Message):
    session_id: str
    pool: str
    start: datetime
    end: datetime
    cores: int
    memory_gib: int
    prepare_s: int
    # Estimated seconds per preparation step, e.g. {"data:input": 110.0}, for component schedules.
    steps: dict[str, float] = Field(default_factory=dict)


class SlotsQuoted(Message):
    """scheduler → offers: the holds made for a request, or why there are none."""

    request_id: str
    pool: str
    holds: list[Hold] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)


class BookSession(Message):
    """offers → scheduler: turn the accepted hold into a booking and free its siblings."""

    session_id: str
    owner: str
    siblings: list[str] = Field(default_factory=list)
    executable: dict[str, Any]
    storage: list[dict[str, Any]] = Field(default_factory=list)
    data: list[dict[str, Any]] = Field(default_factory=list)
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    platform: str


class ReleaseHolds(Message):
    """offers → scheduler: the offers were rejected or expired; free their capacity."""

    session_ids: list[str]
    reason: str


class CancelSession(Message):
    """offers → scheduler: the owner cancelled an accepted session."""

    session_id: str
    reason: str


class LaunchSession(Message):
    """scheduler → launcher: prepare and run a booked session now."""

    session_id: str
    owner: str
    executable: dict[str, Any]
    storage: list[dict[str, Any]] = Field(default_factory=list)
    data: list[dict[str, Any]] = Field(default_factory=list)
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    pool: str = "local"
    cores: int
    memory_gib: int
    start: datetime
    end: datetime


class PreparationMeasured(Message):
    """launcher → scheduler: how long a session's preparation really took, in total and per step."""

    session_id: str
    seconds: float
    steps: dict[str, float] = Field(default_factory=dict)


class StopSession(Message):
    """scheduler → launcher: the owner cancelled the session; stop its run, or end it CANCELLED
    before launch if it has none."""

    session_id: str
    owner: str
    reason: str


class FailSession(Message):
    """scheduler → launcher: a booking that could not be made; the session ends FAILED with these
    messages (the launcher owns FAILED). A session already launched ends by its own run instead."""

    session_id: str
    owner: str
    messages: list[MessageItem] = Field(default_factory=list)


class SessionEvent(Message):
    """A session entered ``phase``; published once per (session, phase) by the service owning it."""

    session_id: str
    phase: str
    at: datetime
    messages: list[MessageItem] = Field(default_factory=list)
    outputs: dict[str, str] = Field(default_factory=dict)
    connectors: list[dict[str, str]] = Field(default_factory=list)
    trace_id: str | None = None


class UpdateResult(Message):
    """offers → client: the answer to one session update."""

    session_id: str
    update_id: str
    applied: bool
    phase: str | None = None
    messages: list[MessageItem] = Field(default_factory=list)


class DeadLetter(Message):
    service: str
    subject: str
    reason: str
    deliveries: int
    payload_preview: str


class StreamFilling(Message):
    """any service → operators (``eb.ops.<service>.stream_filling``): a stream has passed
    ``threshold`` of its byte limit; when full it drops its oldest messages."""

    stream: str
    bytes: int
    max_bytes: int
    #: ``bytes / max_bytes``, rounded to three places.
    fraction: float
    messages: int
    #: The step passed: 0.8, 0.9 or 1.0 (one event per stream, step and hour).
    threshold: float
    noticed_at: datetime
