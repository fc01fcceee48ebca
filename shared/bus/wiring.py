"""What a service hears and says on the bus, declared in one table beside its handlers.

Everything else about the bus is derived from a service's `Wiring`: the durable consumers and their
filter subjects (`ServiceRuntime`), the health subject, the AsyncAPI document (`shared.asyncapi`)
and the service's NATS permissions. A reader finds all of a service's traffic in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel

from shared import subjects
from shared.subjects import Pattern

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from shared.bus.runtime import Incoming
    from shared.bus.store import OutboxRow, Store, Transaction

Handler = Callable[["Transaction", "Incoming"], Awaitable[None]]
DeadHandler = Callable[["Transaction", "Incoming", str], Awaitable[None]]
Ticker = Callable[["Transaction"], Awaitable[None]]
#: Told of an outbox row the server refused for good (too large, say) after it was dead-lettered, in
#: the same transaction: to send its addressee a small answer instead (`ServiceRuntime._refuse`).
RefusedHandler = Callable[["Transaction", "OutboxRow", str], Awaitable[None]]
Responder = Callable[["Msg"], Awaitable[None]]
#: Every message has a model, the users' IVOA documents too (`ExecutionRequest`, `EnumValueUpdate`):
#: the AsyncAPI document takes its payload schemas from these.
Payload = type[BaseModel]


class _OnPattern:
    """A subject pattern with some parameters fixed: the subject it stands for has the rest wild."""

    pattern: Pattern
    fixed: Mapping[str, str]

    @property
    def subject(self) -> str:
        return self.pattern.filter(**self.fixed)


@dataclass(frozen=True)
class Route(_OnPattern):
    """Messages on the subject go to ``handler``."""

    pattern: Pattern
    handler: Handler
    payload: Payload
    fixed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Consumer:
    """One durable pull consumer: its stream is that of its routes, its filter their subjects.

    One consumer for several routes keeps their messages in the order they were sent (a pool's book
    and cancel, for example); ``on_dead`` answers the sender of a message that never succeeded.
    """

    durable: str
    routes: tuple[Route, ...]
    on_dead: DeadHandler | None = None
    max_ack_pending: int = 1000
    _exact: Mapping[str, Handler] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        streams = {route.pattern.stream for route in self.routes}
        if len(streams) != 1 or None in streams:
            raise ValueError(f"{self.durable}: every route of a consumer must be stored in one stream")
        # Most routes name whole subjects: those are found with one look-up per message.
        exact = {r.subject: r.handler for r in self.routes if "*" not in r.subject and ">" not in r.subject}
        object.__setattr__(self, "_exact", exact)

    @property
    def stream(self) -> str:
        stream = self.routes[0].pattern.stream
        assert stream is not None  # checked in __post_init__
        return stream

    @property
    def filter_subjects(self) -> tuple[str, ...]:
        return tuple(route.subject for route in self.routes)

    @property
    def replay_readers(self) -> tuple[tuple[str, str], ...]:
        """The ephemeral consumers (name, filter subject) the runtime reads this durable's recent
        messages through at start (`shared.bus.replay`). One per filter subject: a create request
        names its filter in its subject only when it has one, and that is what lets a service's
        permissions allow it only its own filters. The names are fixed, so the permissions (and the
        users' denials) can name them exactly."""
        return tuple((f"{self.durable}-replay{i}", subject) for i, subject in enumerate(self.filter_subjects))

    def route(self, subject: str) -> Handler | None:
        """The handler of a delivered subject (None: not one of ours, acked and ignored)."""
        if len(self.routes) == 1:
            return self.routes[0].handler  # the server delivers only what the filter matches
        handler: Handler | None = self._exact.get(subject)
        if handler is not None:
            return handler
        for route in self.routes:
            if _matches(route.subject, subject):
                return route.handler
        return None


@dataclass(frozen=True)
class Publication(_OnPattern):
    """A subject the service publishes, and its payload."""

    pattern: Pattern
    payload: Payload
    fixed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply(_OnPattern):
    """A core request/reply subject the service answers (not stored, no exactly-once)."""

    pattern: Pattern
    responder: Responder
    fixed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Timer:
    name: str
    every_s: float
    ticker: Ticker


@dataclass(frozen=True)
class Wiring:
    service: str
    consumers: tuple[Consumer, ...] = ()
    publishes: tuple[Publication, ...] = ()
    replies: tuple[Reply, ...] = ()
    timers: tuple[Timer, ...] = ()
    #: Run after the store opens and before any message is consumed (load in-memory indexes).
    on_start: tuple[Callable[[Store], Awaitable[None]], ...] = ()
    #: Called for an outbox row the server refuses for good (see `RefusedHandler`).
    on_refused: RefusedHandler | None = None

    def __post_init__(self) -> None:
        durables = [c.durable for c in self.consumers]
        if len(durables) != len(set(durables)):
            raise ValueError(f"{self.service}: a durable name is declared twice")

    @property
    def health(self) -> str:
        return subjects.health(self.service)


def _matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching for the filter subjects above (``*`` one token, ``>`` the rest)."""
    want = pattern.split(".")
    got = subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(got) == len(want)
