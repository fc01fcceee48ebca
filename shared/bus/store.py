"""The store port: the half of exactly-once that lives in a database. A service changes its state,
records the message's id in its inbox and queues what it will say in its outbox, all in one
transaction (`Transaction`); the relay sends the outbox and marks what the stream confirmed.

Two implementations keep the same contract (tests/store/test_contract.py): SQLite, one file per
service and the embedded default (`shared.bus.sqlite`), and PostgreSQL, one schema per service in a
database the operator runs (`shared.bus.postgres`), chosen by ``EB_DATABASE_URL``
(`shared.bus.backends`). The SQL the services write is the part of the language both speak (``?``
placeholders, ``INSERT … ON CONFLICT``); `Schema` carries the few statements that must differ.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol

from opentelemetry import propagate

from shared.bus.lease import LeaseLost


class Row(Protocol):
    """A result row, read by column name (``row["owner"]``) or position (``row[0]``)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


@dataclass(frozen=True)
class Schema:
    """A service's tables in each dialect; a plain string is a schema both dialects accept."""

    sqlite: str
    postgres: str


def schema_for(schema: Schema | str, dialect: str) -> str:
    if isinstance(schema, str):
        return schema
    return schema.postgres if dialect == "postgres" else schema.sqlite


@dataclass(frozen=True)
class OutboxRow:
    id: int
    subject: str
    payload: bytes
    msg_id: str
    headers: dict[str, str]


@dataclass
class Transaction(ABC):
    """One unit of work: reads and writes of the service's tables plus the messages it will send."""

    #: Whether ``FOR UPDATE`` locks what a read returns until the transaction ends (`row_lock`).
    LOCKS_ROWS: ClassVar[bool] = False

    now: datetime
    outbox: list[OutboxRow] = field(default_factory=list)
    committed: list[Callable[[], object]] = field(default_factory=list)
    undo: list[Callable[[], object]] = field(default_factory=list)

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once the transaction has committed (never if it, or the savepoint that
        queued it, rolls back): for in-memory indexes that mirror the tables, and tasks that must
        only start once their row is visible."""
        self.committed.append(callback)

    def on_rollback(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` if the transaction (or the savepoint that queued it) rolls back: to undo an
        in-memory change made at once because later messages of the same batch must see it, such as
        a new hold in the scheduler's ledger."""
        self.undo.append(callback)

    def rolled_back(self, mark: int = 0) -> None:
        """Undo, newest first, what was queued since ``mark``."""
        while len(self.undo) > mark:
            self.undo.pop()()

    def marks(self) -> tuple[int, int, int]:
        """Where the outbox and the callbacks stand, for a savepoint to cut back to."""
        return len(self.outbox), len(self.committed), len(self.undo)

    def cut_back(self, marks: tuple[int, int, int]) -> None:
        """Forget what was queued since ``marks``: its savepoint rolled back."""
        outbox_mark, committed_mark, undo_mark = marks
        del self.outbox[outbox_mark:]
        del self.committed[committed_mark:]
        self.rolled_back(undo_mark)

    @abstractmethod
    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """Undo just this part of the transaction if it raises: one message's effects in a batch."""

    @abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    @abstractmethod
    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    @abstractmethod
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    @abstractmethod
    async def insert_returning_id(self, sql: str, params: Sequence[Any]) -> int:
        """Run an INSERT into a table with an ``id`` the database numbers; that id."""

    async def seen(self, msg_id: str) -> bool:
        return await self.fetchone("SELECT 1 FROM inbox WHERE msg_id = ?", (msg_id,)) is not None

    async def seen_among(self, msg_ids: Sequence[str]) -> set[str]:
        """Which of a batch's message ids the inbox already holds: one query for the batch."""
        if not msg_ids:
            return set()
        marks = ",".join("?" * len(msg_ids))
        rows = await self.fetchall(f"SELECT msg_id FROM inbox WHERE msg_id IN ({marks})", list(msg_ids))
        return {row[0] for row in rows}

    def row_lock(self, *, skip_locked: bool = False) -> str:
        """The clause that makes a SELECT lock its rows against processes sharing the store (offers
        replicas on PostgreSQL): " FOR UPDATE", or "" where one writer has the store to itself
        (SQLite writes one transaction at a time anyway). ``skip_locked``: leave out rows another
        transaction holds (for timers that several replicas run at once)."""
        if not self.LOCKS_ROWS:
            return ""
        return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"

    async def claim(self, msg_id: str) -> bool:
        """Record ``msg_id`` in the inbox before applying it; False if it is there already.

        Claimed first, not remembered last, so that processes sharing one store (offers replicas on
        PostgreSQL) never both apply a message: the second insert of an id waits for the first
        transaction, and finds the id once it commits (or claims it, if it rolled back)."""
        inserted = await self.execute(
            "INSERT INTO inbox(msg_id, seen_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (msg_id, self.now.isoformat()),
        )
        return inserted == 1

    async def publish(
        self, subject: str, payload: bytes, msg_id: str, *, trace_headers: dict[str, str] | None = None
    ) -> None:
        """Queue a message; it is sent after commit, and resent after a crash until acknowledged."""
        headers = dict(trace_headers) if trace_headers is not None else current_trace_headers()
        row_id = await self.insert_returning_id(
            "INSERT INTO outbox(subject, payload, msg_id, headers, created_at) VALUES (?, ?, ?, ?, ?)",
            (subject, payload, msg_id, json.dumps(headers), self.now.isoformat()),
        )
        self.outbox.append(OutboxRow(row_id, subject, payload, msg_id, headers))


def current_trace_headers() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class Store(ABC):
    """A service's tables, inbox and outbox: every write goes through `transaction`, one at a time
    (the service is the single writer of its own state, so decisions such as "is there capacity
    for this hold" never race with each other)."""

    #: "sqlite" or "postgres": for the few statements a caller must write per dialect.
    dialect: str

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    @abstractmethod
    async def open(self) -> None:
        """Connect, and create the tables that are missing."""

    @abstractmethod
    async def apply_schema(self) -> None:
        """Create the tables, indexes and triggers that are missing: done at `open`, harmless again."""

    @abstractmethod
    async def close(self) -> None: ...

    async def lease_lost(self) -> LeaseLost:
        """Wait until the store loses the lease that makes its process the single writer of its
        state (`shared.bus.lease`), and say why. A store without a lease (SQLite: one file per
        process; a PostgreSQL store of a service that runs as replicas) never loses one: this waits
        for ever."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable: the event is never set")

    @asynccontextmanager
    async def transaction(self, now: datetime | None = None) -> AsyncIterator[Transaction]:
        """One unit of work, committed when the block ends, rolled back (with its in-memory undo
        callbacks) when it raises; the next one starts when it has ended."""
        async with self._lock:
            tx = await self._begin(now or datetime.now(UTC))
            try:
                yield tx
                # A COMMIT that fails (a deferred constraint, a full disk, a lost connection) is
                # handled as a failure of the block: the transaction is ended and undone.
                await self._end("COMMIT")
            except BaseException:
                await self._abort()
                tx.outbox.clear()
                tx.rolled_back()
                raise
            for callback in tx.committed:
                callback()

    @abstractmethod
    async def _begin(self, now: datetime) -> Transaction:
        """Begin a transaction on the writing connection; it, to work in."""

    @abstractmethod
    async def _end(self, statement: str) -> None:
        """Send COMMIT or ROLLBACK on the writing connection."""

    @abstractmethod
    async def _abort(self) -> None:
        """Roll back whatever is still open after a failure (nothing, if the failure ended it)."""

    @abstractmethod
    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """A read outside any transaction: it sees what is committed."""

    @abstractmethod
    async def mark_sent(self, ids: Sequence[int], now: datetime) -> None: ...

    async def checkpoint(self, *, truncate: bool = False) -> tuple[int, int, int] | None:
        """Housekeeping of the database's own log, if it needs the service's help (SQLite's WAL)."""
        return None

    async def unsent(self, *, older_than: datetime | None = None, limit: int = 500) -> list[OutboxRow]:
        """Rows not yet confirmed by the stream, oldest first (the relay's work)."""
        where, params = "sent_at IS NULL", []
        if older_than is not None:
            where += " AND created_at < ?"
            params.append(older_than.isoformat())
        rows = await self.read(f"SELECT * FROM outbox WHERE {where} ORDER BY id LIMIT ?", (*params, limit))
        return [outbox_row(r) for r in rows]

    async def sent_since(self, since: datetime, *, limit: int = 20_000) -> list[OutboxRow]:
        """Rows the stream confirmed after ``since``, oldest first: what a crash of the stream's
        machine could have lost (see `shared.bus.upkeep.reconcile_outbox`)."""
        rows = await self.read(
            "SELECT * FROM outbox WHERE sent_at IS NOT NULL AND sent_at >= ? ORDER BY id LIMIT ?",
            (since.isoformat(), limit),
        )
        return [outbox_row(r) for r in rows]

    async def prune(self, now: datetime, keep: timedelta) -> None:
        """Inbox ids only need to outlive redeliveries; sent outbox rows only need to outlive audits."""
        cutoff = (now - keep).isoformat()
        async with self.transaction(now) as tx:
            await tx.execute("DELETE FROM inbox WHERE seen_at < ?", (cutoff,))
            await tx.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (cutoff,))


def outbox_row(r: Row) -> OutboxRow:
    return OutboxRow(r["id"], r["subject"], bytes(r["payload"]), r["msg_id"], json.loads(r["headers"]))
