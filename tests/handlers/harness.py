"""A service's handlers as a unit of work, with no bus: messages in, tables and an outbox out.

`Service` opens the service's tables in a store (by default SQLite's in memory; with a
`StoreMaker`, another: the handler tests run on PostgreSQL too, see tests/handlers/conftest.py) and
delivers a message the way the runtime does: to the handler its `Wiring` routes the subject to,
inside one transaction at a given ``now``.
What the handler queued comes back as `Sent`: each outbox row decoded into the model the wiring
declares for its subject, so a test also learns that the service says nothing it does not declare.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel

from shared import subjects
from shared.bus.runtime import Incoming
from shared.bus.sqlite import MEMORY, SqliteStore
from shared.bus.store import OutboxRow, Row, Schema, Store, Transaction
from shared.bus.wiring import Consumer, Handler, Route, Wiring
from shared.lifecycle import Phase
from shared.messages import Message, SessionEvent
from shared.subjects import Pattern

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

#: A service's store: from its name and its tables' schema, a store not yet opened.
StoreMaker = Callable[[str, Schema | str], Store]


def in_memory(service: str, schema: Schema | str) -> Store:
    return SqliteStore(MEMORY, schema)


OWNER = "alice"

H = TypeVar("H")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Sent:
    """One message a handler queued: its subject, its deterministic id and its decoded payload."""

    subject: str
    msg_id: str
    message: BaseModel

    def as_(self, model: type[M]) -> M:
        assert isinstance(self.message, model), f"{self.subject} carries {type(self.message).__name__}"
        return self.message


def subjects_of(sent: Sequence[Sent]) -> list[str]:
    return [s.subject for s in sent]


def only(sent: Sequence[Sent], model: type[M]) -> M:
    """The payload of the one message sent (failing if there were more, or another kind)."""
    assert len(sent) == 1, f"expected one message, got {subjects_of(sent)}"
    return sent[0].as_(model)


def _fits(pattern: Pattern, fixed: Mapping[str, str], subject: str) -> bool:
    """Whether ``subject`` has the pattern's shape and the fixed parameters' values."""
    try:
        values = pattern.parse(subject)
    except subjects.SubjectError:
        return False
    return all(values[name] == value for name, value in fixed.items())


@dataclass(repr=False)  # a failing test prints the service's name, not its whole wiring
class Service(Generic[H]):
    """One service's handlers on a store of their own."""

    store: Store
    handlers: H
    wiring: Wiring
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    async def open(
        cls, schema: Schema | str, handlers: H, wiring: Wiring, stores: StoreMaker | None = None
    ) -> Self:
        store = (stores or in_memory)(wiring.service, schema)
        await store.open()
        for start in wiring.on_start:
            await start(store)
        return cls(store, handlers, wiring)

    def __repr__(self) -> str:
        return f"<{self.wiring.service} handlers on {self.store.dialect}>"

    async def close(self) -> None:
        await self.store.close()

    # -- messages in ------------------------------------------------------------------------------

    def consumer(self, subject: str) -> tuple[Consumer, Route] | None:
        """The consumer and route the wiring delivers ``subject`` to (None: the service never hears it)."""
        found = [
            (c, r) for c in self.wiring.consumers for r in c.routes if _fits(r.pattern, r.fixed, subject)
        ]
        assert len(found) <= 1, f"{subject} is routed twice: {[c.durable for c, _ in found]}"
        return found[0] if found else None

    def handler(self, subject: str) -> Handler:
        found = self.consumer(subject)
        assert found is not None, f"{self.wiring.service} does not consume {subject}"
        return found[1].handler

    def incoming(self, subject: str, body: Message | bytes, msg_id: str | None = None) -> Incoming:
        """The message as the runtime hands it over: the sender's ``Nats-Msg-Id`` is its id."""
        msg_id = msg_id or f"test-{next(self._ids)}"
        raw = body.to_bytes() if isinstance(body, Message) else body
        return Incoming(subject, raw, {"Nats-Msg-Id": msg_id}, msg_id, 1)

    async def deliver(
        self, subject: str, body: Message | bytes, *, at: datetime = NOW, msg_id: str | None = None
    ) -> list[Sent]:
        """Apply one message on ``subject`` with the handler the wiring names, in one transaction."""
        handler = self.handler(subject)
        msg = self.incoming(subject, body, msg_id)
        return await self.run(lambda tx: handler(tx, msg), at)

    async def dead(
        self,
        subject: str,
        body: Message | bytes,
        reason: str,
        *,
        at: datetime = NOW,
        msg_id: str | None = None,
    ) -> list[Sent]:
        """What the consumer's ``on_dead`` answers for a message that never succeeded."""
        found = self.consumer(subject)
        assert found is not None and found[0].on_dead is not None, f"nothing answers a dead {subject}"
        on_dead = found[0].on_dead
        msg = self.incoming(subject, body, msg_id)
        return await self.run(lambda tx: on_dead(tx, msg, reason), at)

    async def report(
        self, session_id: str, phase: Phase, *, owner: str = OWNER, at: datetime = NOW, **fields: Any
    ) -> list[Sent]:
        """Deliver the event of a session entering ``phase``, as its owning service publishes it."""
        event = SessionEvent(session_id=session_id, phase=phase.value, at=at, **fields)
        return await self.deliver(subjects.session_event(owner, session_id, phase.value), event, at=at)

    async def tick(self, at: datetime) -> list[Sent]:
        """Every timer of the service once, each in a transaction of its own, at ``at``."""
        sent: list[Sent] = []
        for timer in self.wiring.timers:
            sent += await self.run(timer.ticker, at)
        return sent

    # -- the unit of work -------------------------------------------------------------------------

    async def run(self, work: Callable[[Transaction], Awaitable[object]], at: datetime = NOW) -> list[Sent]:
        """``work`` in one transaction at ``at``; what it queued, decoded."""
        async with self.store.transaction(at) as tx:
            await work(tx)
        return [self.decode(row) for row in tx.outbox]

    def decode(self, row: OutboxRow) -> Sent:
        models = {p.payload for p in self.wiring.publishes if _fits(p.pattern, p.fixed, row.subject)}
        assert len(models) == 1, f"{self.wiring.service} declares {len(models)} payloads for {row.subject}"
        return Sent(row.subject, row.msg_id, models.pop().model_validate_json(row.payload))

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """A plain read of the service's tables, as the test's own SELECT."""
        return await self.store.read(sql, params)
