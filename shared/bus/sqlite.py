"""The store port on SQLite, the embedded default: one file per service (WAL).

The connection is the standard library's, used on the event loop's thread. A statement on a local
WAL file takes microseconds and a commit with ``synchronous=NORMAL`` does not wait for the disk, so
handing each one to a worker thread (what aiosqlite does) cost more in thread wake-ups than the
statement itself: measured, it was the largest single cost per message. The methods stay ``async``
because the port's other implementation (PostgreSQL) does real I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.bus.store import Row, Schema, Store, Transaction, schema_for

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

#: The path of a store that lives in memory only, SQLite's own name for it: each `SqliteStore`
#: opened with it has a database of its own, gone when closed (for tests of the handlers, no files).
MEMORY = ":memory:"

#: SQLite's ``synchronous`` settings a store may run with (`Settings.sqlite_synchronous`).
SYNCHRONOUS = frozenset({"NORMAL", "FULL"})


@dataclass
class SqliteTransaction(Transaction):
    conn: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        assert self.conn is not None
        return self.conn

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        marks = self.marks()
        self.db.execute("SAVEPOINT part")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK TO part")
            self.db.execute("RELEASE part")
            self.cut_back(marks)
            raise
        else:
            self.db.execute("RELEASE part")

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.db.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: sqlite3.Row | None = self.db.execute(sql, params).fetchone()
        return row

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self.db.execute(sql, params).fetchall())

    async def insert_returning_id(self, sql: str, params: Sequence[Any]) -> int:
        row_id = self.db.execute(sql, params).lastrowid
        assert row_id is not None
        return row_id


class SqliteStore(Store):
    dialect = "sqlite"

    def __init__(self, path: Path | str, schema: Schema | str, *, synchronous: str = "NORMAL") -> None:
        """``synchronous``: NORMAL survives a killed process; FULL also a machine crash, at the cost
        of an fsync per commit (``EB_DURABILITY=safe``)."""
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS)}, not {synchronous!r}")
        super().__init__()
        self._memory = str(path) == MEMORY
        self._path = Path(path)
        self._schema = schema_for(schema, self.dialect)
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None

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
        self._conn = conn
        await self.apply_schema()

    async def apply_schema(self) -> None:
        async with self._lock:
            self.conn.executescript(_BASE_SCHEMA + self._schema)

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

    async def _begin(self, now: datetime) -> Transaction:
        self.conn.execute("BEGIN IMMEDIATE")
        return SqliteTransaction(now, conn=self.conn)

    async def _end(self, statement: str) -> None:
        self.conn.execute(statement)

    async def _abort(self) -> None:
        # A failed COMMIT leaves the transaction open: end it, or the next BEGIN would fail too.
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """A read outside any transaction (WAL readers never block the writer)."""
        return list(self.conn.execute(sql, params).fetchall())

    async def mark_sent(self, ids: Sequence[int], now: datetime) -> None:
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        # Under the lock: on the shared connection this statement would otherwise join (and could be
        # rolled back with) a transaction that another task has open.
        async with self._lock:
            self.conn.execute(f"UPDATE outbox SET sent_at = ? WHERE id IN ({marks})", [now.isoformat(), *ids])
