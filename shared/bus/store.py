"""The SQLite half of exactly-once: state change, inbox row and outbox rows in one transaction.

Each service owns one SQLite file (WAL). All writes go through ``Store.transaction()``, which
serialises them with a lock: a service is the single writer of its own state, so decisions such as
"is there capacity for this hold" can never race with each other.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
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

    conn: aiosqlite.Connection
    now: datetime
    outbox_ids: list[int] = field(default_factory=list)
    committed: list[Callable[[], object]] = field(default_factory=list)

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once the transaction has committed (never if it rolls back): for in-memory
        indexes that mirror the tables."""
        self.committed.append(callback)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self.conn.execute(sql, params)
        rowcount = cursor.rowcount
        await cursor.close()
        return rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def seen(self, msg_id: str) -> bool:
        return await self.fetchone("SELECT 1 FROM inbox WHERE msg_id = ?", (msg_id,)) is not None

    async def remember(self, msg_id: str) -> None:
        await self.execute(
            "INSERT OR IGNORE INTO inbox(msg_id, seen_at) VALUES (?, ?)", (msg_id, self.now.isoformat())
        )

    async def publish(
        self, subject: str, payload: bytes, msg_id: str, *, trace_headers: dict[str, str] | None = None
    ) -> None:
        """Queue a message; it is sent after commit, and resent after a crash until acknowledged."""
        headers = dict(trace_headers) if trace_headers is not None else current_trace_headers()
        cursor = await self.conn.execute(
            "INSERT INTO outbox(subject, payload, msg_id, headers, created_at) VALUES (?, ?, ?, ?, ?)",
            (subject, payload, msg_id, json.dumps(headers), self.now.isoformat()),
        )
        if cursor.lastrowid is not None:
            self.outbox_ids.append(cursor.lastrowid)
        await cursor.close()


def current_trace_headers() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class Store:
    def __init__(self, path: Path, schema: str) -> None:
        self._path = path
        self._schema = schema
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        return self._path

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(self._path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        # WAL + NORMAL survives a killed process (not power loss), which is the failure we test.
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.executescript(_BASE_SCHEMA + self._schema)
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    @asynccontextmanager
    async def transaction(self, now: datetime | None = None) -> AsyncIterator[Transaction]:
        async with self._lock:
            tx = Transaction(self.conn, now or datetime.now(UTC))
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                await self.conn.execute("ROLLBACK")
                tx.outbox_ids.clear()
                raise
            else:
                await self.conn.execute("COMMIT")
                for callback in tx.committed:
                    callback()

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        """A read outside any transaction (WAL readers never block the writer)."""
        async with self.conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def unsent(
        self, ids: Sequence[int] | None = None, *, older_than: datetime | None = None, limit: int = 500
    ) -> list[OutboxRow]:
        if ids is not None:
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            rows = await self.read(
                f"SELECT * FROM outbox WHERE sent_at IS NULL AND id IN ({marks}) ORDER BY id", list(ids)
            )
        else:
            cutoff = (older_than or datetime.max.replace(tzinfo=UTC)).isoformat()
            rows = await self.read(
                "SELECT * FROM outbox WHERE sent_at IS NULL AND created_at < ? ORDER BY id LIMIT ?",
                (cutoff, limit),
            )
        return [
            OutboxRow(r["id"], r["subject"], bytes(r["payload"]), r["msg_id"], json.loads(r["headers"]))
            for r in rows
        ]

    async def mark_sent(self, ids: Sequence[int], now: datetime) -> None:
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        async with self._lock:
            await self.conn.execute(
                f"UPDATE outbox SET sent_at = ? WHERE id IN ({marks})", [now.isoformat(), *ids]
            )

    async def prune(self, now: datetime, keep: timedelta) -> None:
        """Inbox ids only need to outlive redeliveries; sent outbox rows only need to outlive audits."""
        cutoff = (now - keep).isoformat()
        async with self._lock:
            await self.conn.execute("DELETE FROM inbox WHERE seen_at < ?", (cutoff,))
            await self.conn.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (cutoff,))
