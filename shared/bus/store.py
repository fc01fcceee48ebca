"""The SQLite half of exactly-once: state change, inbox row and outbox rows in one transaction.

Each service owns one SQLite file (WAL). All writes go through ``Store.transaction()``, which
serialises them with a lock: a service is the single writer of its own state, so decisions such as
"is there capacity for this hold" can never race with each other.

The connection is the standard library's, used on the event loop's thread. A statement on a local
WAL file takes microseconds and a commit with ``synchronous=NORMAL`` does not wait for the disk, so
handing each one to a worker thread (what aiosqlite does) cost more in thread wake-ups than the
statement itself: measured, it was the largest single cost per message. The methods stay ``async``
so handlers do not change if a store ever has to do real I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry import propagate

_BASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    msg_id TEXT PRIMARY KEY,
    seen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    msg_id TEXT NOT NULL,
    headers TEXT NOT NULL,
    created_at TEXT NOT NULL,
    sent_at TEXT
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(id) WHERE sent_at IS NULL;
"""

Row = sqlite3.Row

#: The path of a store that lives in memory only, SQLite's own name for it: each `Store` opened with
#: it has a database of its own, gone when closed (for tests of the handlers, with no files).
MEMORY = ":memory:"


@dataclass(frozen=True)
class OutboxRow:
    id: int
    subject: str
    payload: bytes
    msg_id: str
    headers: dict[str, str]


@dataclass
class Transaction:
    """One unit of work: reads and writes of the service's tables plus the messages it will send."""

    conn: sqlite3.Connection
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

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Undo just this part of the transaction if it raises: one message's effects in a batch."""
        outbox_mark, committed_mark, undo_mark = len(self.outbox), len(self.committed), len(self.undo)
        self.conn.execute("SAVEPOINT part")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK TO part")
            self.conn.execute("RELEASE part")
            del self.outbox[outbox_mark:]
            del self.committed[committed_mark:]
            self.rolled_back(undo_mark)
            raise
        else:
            self.conn.execute("RELEASE part")

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.conn.execute(sql, params).fetchone()
        return row

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self.conn.execute(sql, params).fetchall())

    async def seen(self, msg_id: str) -> bool:
        return await self.fetchone("SELECT 1 FROM inbox WHERE msg_id = ?", (msg_id,)) is not None

    def seen_among(self, msg_ids: Sequence[str]) -> set[str]:
        """Which of a batch's message ids the inbox already holds: one query for the batch."""
        if not msg_ids:
            return set()
        marks = ",".join("?" * len(msg_ids))
        rows = self.conn.execute(f"SELECT msg_id FROM inbox WHERE msg_id IN ({marks})", list(msg_ids))
        return {row[0] for row in rows}

    async def remember(self, msg_id: str) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO inbox(msg_id, seen_at) VALUES (?, ?)", (msg_id, self.now.isoformat())
        )

    async def publish(
        self, subject: str, payload: bytes, msg_id: str, *, trace_headers: dict[str, str] | None = None
    ) -> None:
        """Queue a message; it is sent after commit, and resent after a crash until acknowledged."""
        headers = dict(trace_headers) if trace_headers is not None else current_trace_headers()
        cursor = self.conn.execute(
            "INSERT INTO outbox(subject, payload, msg_id, headers, created_at) VALUES (?, ?, ?, ?, ?)",
            (subject, payload, msg_id, json.dumps(headers), self.now.isoformat()),
        )
        assert cursor.lastrowid is not None
        self.outbox.append(OutboxRow(cursor.lastrowid, subject, payload, msg_id, headers))


def current_trace_headers() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


#: SQLite's ``synchronous`` settings a store may run with (`Settings.sqlite_synchronous`).
SYNCHRONOUS = frozenset({"NORMAL", "FULL"})


class Store:
    def __init__(self, path: Path | str, schema: str, *, synchronous: str = "NORMAL") -> None:
        """``synchronous``: NORMAL survives a killed process; FULL also a machine crash, at the cost
        of an fsync per commit (``EB_DURABILITY=safe``)."""
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS)}, not {synchronous!r}")
        self._memory = str(path) == MEMORY
        self._path = Path(path)
        self._schema = schema
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        return self._path

    async def open(self) -> None:
        if not self._memory:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are begun and ended explicitly below.
        conn = sqlite3.connect(
            MEMORY if self._memory else self._path, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        # WAL + NORMAL survives a killed process (not power loss), which is the failure we test;
        # FULL (durability "safe") also syncs the WAL at every commit.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        # Checkpoints copy the WAL into the database and fsync it: tens of milliseconds with the
        # event loop blocked, measured as the offers service stalling in disk wait under load. They
        # run on a worker thread instead (see `checkpoint`), which the runtime calls every second.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.executescript(_BASE_SCHEMA + self._schema)
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def checkpoint(self, *, truncate: bool = False) -> tuple[int, int, int] | None:
        """Move the WAL into the database from a worker thread with its own connection. PASSIVE
        never blocks the writer; what it cannot copy yet waits for the next call. ``truncate`` also
        empties the WAL file (otherwise it keeps the size of its busiest moment); it waits up to a
        second for readers and writers, so it runs rarely (`shared.bus.upkeep`).

        SQLite's answer (busy, WAL pages, pages copied); None for a store in memory."""
        if self._memory:
            return None  # no WAL, and another connection would open a database of its own
        mode = "TRUNCATE" if truncate else "PASSIVE"

        def run() -> tuple[int, int, int]:
            with contextlib.closing(sqlite3.connect(self._path, timeout=1.0)) as conn:
                busy, pages, copied = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                return int(busy), int(pages), int(copied)

        return await asyncio.to_thread(run)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    @asynccontextmanager
    async def transaction(self, now: datetime | None = None) -> AsyncIterator[Transaction]:
        async with self._lock:
            tx = Transaction(self.conn, now or datetime.now(UTC))
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                self.conn.execute("ROLLBACK")
                tx.outbox.clear()
                tx.rolled_back()
                raise
            else:
                try:
                    self.conn.execute("COMMIT")
                except BaseException:
                    # A failed COMMIT (a deferred constraint, a full disk) leaves the transaction
                    # open: end it, or the next BEGIN would fail too.
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    tx.outbox.clear()
                    tx.rolled_back()
                    raise
                for callback in tx.committed:
                    callback()

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """A read outside any transaction (WAL readers never block the writer)."""
        return list(self.conn.execute(sql, params).fetchall())

    async def unsent(self, *, older_than: datetime | None = None, limit: int = 500) -> list[OutboxRow]:
        """Rows not yet confirmed by the stream, oldest first (the relay's work)."""
        cutoff = (older_than or datetime.max.replace(tzinfo=UTC)).isoformat()
        rows = await self.read(
            "SELECT * FROM outbox WHERE sent_at IS NULL AND created_at < ? ORDER BY id LIMIT ?",
            (cutoff, limit),
        )
        return [
            OutboxRow(r["id"], r["subject"], bytes(r["payload"]), r["msg_id"], json.loads(r["headers"]))
            for r in rows
        ]

    async def sent_since(self, since: datetime, *, limit: int = 20_000) -> list[OutboxRow]:
        """Rows the stream confirmed after ``since``, oldest first: what a crash of the stream's
        machine could have lost (see `shared.bus.upkeep.reconcile_outbox`)."""
        rows = await self.read(
            "SELECT * FROM outbox WHERE sent_at IS NOT NULL AND sent_at >= ? ORDER BY id LIMIT ?",
            (since.isoformat(), limit),
        )
        return [
            OutboxRow(r["id"], r["subject"], bytes(r["payload"]), r["msg_id"], json.loads(r["headers"]))
            for r in rows
        ]

    async def mark_sent(self, ids: Sequence[int], now: datetime) -> None:
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        # Under the lock: on the shared connection this statement would otherwise join (and could be
        # rolled back with) a transaction that another task has open.
        async with self._lock:
            self.conn.execute(f"UPDATE outbox SET sent_at = ? WHERE id IN ({marks})", [now.isoformat(), *ids])

    async def prune(self, now: datetime, keep: timedelta) -> None:
        """Inbox ids only need to outlive redeliveries; sent outbox rows only need to outlive audits."""
        cutoff = (now - keep).isoformat()
        async with self._lock:
            self.conn.execute("DELETE FROM inbox WHERE seen_at < ?", (cutoff,))
            self.conn.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (cutoff,))
