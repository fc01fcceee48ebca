"""The offers service's tables: requests in flight, offer sets, and the session read model."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from services.offers.domain import SessionView
from shared.bus.store import Transaction
from shared.lifecycle import Phase
from shared.models import OfferSetResponse, dump_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    offerset_id TEXT NOT NULL,
    state TEXT NOT NULL,
    request_json TEXT,
    expires_at TEXT,
    pools TEXT NOT NULL DEFAULT '[]',
    trace TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS quotes (
    request_id TEXT NOT NULL,
    pool TEXT NOT NULL,
    answer TEXT NOT NULL,
    PRIMARY KEY (request_id, pool)
);
CREATE TABLE IF NOT EXISTS offersets (
    offerset_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    result TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    offerset_id TEXT NOT NULL,
    pool TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL,
    phase TEXT NOT NULL,
    expires_at TEXT,
    document TEXT NOT NULL,
    messages TEXT NOT NULL DEFAULT '[]',
    outputs TEXT NOT NULL DEFAULT '{}',
    connectors TEXT NOT NULL DEFAULT '[]',
    trace TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identities (
    uuid TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS offersets_by_request ON offersets(request_id);
CREATE INDEX IF NOT EXISTS sessions_offered ON sessions(expires_at) WHERE phase = 'OFFERED';
CREATE INDEX IF NOT EXISTS sessions_by_offerset ON sessions(offerset_id);
CREATE INDEX IF NOT EXISTS sessions_by_owner ON sessions(owner);
"""


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def save_offerset(
    tx: Transaction,
    request_id: str,
    owner: str,
    offerset: OfferSetResponse,
    trace: dict[str, str],
    pools: dict[str, str] | None = None,
    document: str | None = None,
) -> None:
    """``pools`` maps each offered session id to the pool that holds it; ``document`` is the offer
    set already serialised, if the caller has it."""
    meta = offerset.meta
    assert meta is not None and meta.uuid is not None
    await tx.execute(
        "INSERT OR REPLACE INTO offersets(offerset_id, request_id, owner, result, document, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (meta.uuid, request_id, owner, offerset.result, document or dump_text(offerset), tx.now.isoformat()),
    )
    trace_text = json.dumps(trace)
    for offer in offerset.offers or []:
        assert offer.meta is not None and offer.meta.uuid is not None
        await tx.execute(
            "INSERT OR IGNORE INTO sessions(session_id, offerset_id, pool, owner, phase, expires_at, "
            "document, trace, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                offer.meta.uuid,
                meta.uuid,
                (pools or {}).get(offer.meta.uuid, ""),
                owner,
                Phase.OFFERED.value,
                offer.expires.isoformat() if offer.expires else None,
                dump_text(offer),
                trace_text,
                tx.now.isoformat(),
            ),
        )


async def session_view(tx: Transaction, session_id: str) -> SessionView | None:
    row = await tx.fetchone(
        "SELECT session_id, owner, phase, expires_at, offerset_id FROM sessions WHERE session_id = ?",
        (session_id,),
    )
    if row is None:
        return None
    return SessionView(row[0], row[1], Phase(row[2]), _dt(row[3]), row[4])


async def offered_siblings(tx: Transaction, offerset_id: str) -> list[str]:
    rows = await tx.fetchall(
        "SELECT session_id FROM sessions WHERE offerset_id = ? AND phase = 'OFFERED' ORDER BY session_id",
        (offerset_id,),
    )
    return [r[0] for r in rows]


async def session_trace(tx: Transaction, session_id: str) -> dict[str, str]:
    row = await tx.fetchone("SELECT trace FROM sessions WHERE session_id = ?", (session_id,))
    return dict(json.loads(row[0])) if row else {}


async def session_document(tx: Transaction, session_id: str) -> dict[str, Any]:
    row = await tx.fetchone("SELECT document FROM sessions WHERE session_id = ?", (session_id,))
    return dict(json.loads(row[0])) if row is not None else {}


async def set_phase(tx: Transaction, session_id: str, phase: Phase) -> None:
    await tx.execute(
        "UPDATE sessions SET phase = ?, updated_at = ? WHERE session_id = ?",
        (phase.value, tx.now.isoformat(), session_id),
    )


async def record_event(
    tx: Transaction,
    session_id: str,
    phase: Phase,
    messages: list[dict[str, Any]],
    outputs: dict[str, str],
    connectors: list[dict[str, str]],
) -> None:
    row = await tx.fetchone("SELECT messages, outputs FROM sessions WHERE session_id = ?", (session_id,))
    if row is None:
        return
    all_messages = json.loads(row[0]) + messages
    all_outputs = {**json.loads(row[1]), **outputs}
    await tx.execute(
        "UPDATE sessions SET phase = ?, messages = ?, outputs = ?, connectors = CASE WHEN ? = '[]' "
        "THEN connectors ELSE ? END, updated_at = ? WHERE session_id = ?",
        (
            phase.value,
            json.dumps(all_messages),
            json.dumps(all_outputs),
            json.dumps(connectors),
            json.dumps(connectors),
            tx.now.isoformat(),
            session_id,
        ),
    )


async def due_offers(tx: Transaction, now: datetime, limit: int = 500) -> list[SessionView]:
    rows = await tx.fetchall(
        "SELECT session_id, owner, phase, expires_at, offerset_id FROM sessions "
        "WHERE phase = 'OFFERED' AND expires_at <= ? ORDER BY expires_at LIMIT ?",
        (now.isoformat(), limit),
    )
    return [SessionView(r[0], r[1], Phase(r[2]), _dt(r[3]), r[4]) for r in rows]


# -- the read side, for the HTTP API ----------------------------------------------------------------


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    offerset_id: str
    owner: str
    phase: Phase
    document: dict[str, Any]
    messages: list[dict[str, Any]]
    outputs: dict[str, str]
    connectors: list[dict[str, str]]
    trace: dict[str, str]
    updated_at: datetime


@dataclass(frozen=True)
class OffersetRow:
    offerset_id: str
    owner: str
    result: str
    document: dict[str, Any]


class IdentityExists(Exception):
    pass


_SESSION_COLUMNS = (
    "session_id, offerset_id, owner, phase, document, messages, outputs, connectors, trace, updated_at"
)


def _session_row(r: Sequence[Any]) -> SessionRow:
    return SessionRow(
        r[0],
        r[1],
        r[2],
        Phase(r[3]),
        json.loads(r[4]),
        json.loads(r[5]),
        json.loads(r[6]),
        json.loads(r[7]),
        json.loads(r[8]),
        datetime.fromisoformat(r[9]),
    )


class ReadModel:
    """Reads of the offers tables on a connection of its own (WAL: readers never block the writer),
    plus the identities table, which only the HTTP layer writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None

    async def open(self) -> None:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.executescript(SCHEMA)
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._conn is None:
            raise RuntimeError("read model is not open")
        async with self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def session(self, session_id: str) -> SessionRow | None:
        rows = await self._all(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,))
        return _session_row(rows[0]) if rows else None

    async def session_owner(self, session_id: str) -> str | None:
        rows = await self._all("SELECT owner FROM sessions WHERE session_id = ?", (session_id,))
        return str(rows[0][0]) if rows else None

    async def sessions(
        self, owner: str | None, phase: Phase | None = None, limit: int = 100
    ) -> list[SessionRow]:
        where, params = [], []
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if phase is not None:
            where.append("phase = ?")
            params.append(phase.value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._all(
            f"SELECT {_SESSION_COLUMNS} FROM sessions {clause} ORDER BY rowid DESC LIMIT ?", (*params, limit)
        )
        return [_session_row(r) for r in rows]

    async def offerset(self, offerset_id: str) -> OffersetRow | None:
        rows = await self._all(
            "SELECT offerset_id, owner, result, document FROM offersets WHERE offerset_id = ?", (offerset_id,)
        )
        return OffersetRow(rows[0][0], rows[0][1], rows[0][2], json.loads(rows[0][3])) if rows else None

    async def offerset_sessions(self, offerset_id: str) -> dict[str, SessionRow]:
        rows = await self._all(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE offerset_id = ?", (offerset_id,)
        )
        return {row.session_id: row for row in map(_session_row, rows)}

    async def password_hash(self, username: str) -> str | None:
        rows = await self._all("SELECT password_hash FROM identities WHERE username = ?", (username,))
        return str(rows[0][0]) if rows else None

    async def create_identity(self, username: str, password_hash: str) -> str:
        if self._conn is None:
            raise RuntimeError("read model is not open")
        identity_id = str(uuid.uuid4())
        try:
            await self._conn.execute(
                "INSERT INTO identities(uuid, username, password_hash, created_at) VALUES (?, ?, ?, ?)",
                (identity_id, username, password_hash, datetime.now(UTC).isoformat()),
            )
        except aiosqlite.IntegrityError:
            raise IdentityExists(username) from None
        return identity_id


async def session_pool(tx: Transaction, session_id: str) -> str:
    row = await tx.fetchone("SELECT pool FROM sessions WHERE session_id = ?", (session_id,))
    return str(row[0]) if row is not None else ""


async def pools_of(tx: Transaction, session_ids: list[str]) -> dict[str, list[str]]:
    """Group session ids by their pool, to send each pool only its own releases."""
    grouped: dict[str, list[str]] = {}
    for session_id in session_ids:
        grouped.setdefault(await session_pool(tx, session_id), []).append(session_id)
    return grouped
