"""The offers service's tables: requests in flight, offer sets, and the session read model."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from services.offers.domain import SessionView
from shared.bus.store import Transaction
from shared.lifecycle import Phase
from shared.models import OfferSetResponse, to_jsonable

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    offerset_id TEXT NOT NULL,
    state TEXT NOT NULL,
    request_json TEXT,
    expires_at TEXT,
    trace TEXT NOT NULL,
    created_at TEXT NOT NULL
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
CREATE INDEX IF NOT EXISTS offersets_by_request ON offersets(request_id);
CREATE INDEX IF NOT EXISTS sessions_offered ON sessions(expires_at) WHERE phase = 'OFFERED';
CREATE INDEX IF NOT EXISTS sessions_by_offerset ON sessions(offerset_id);
CREATE INDEX IF NOT EXISTS sessions_by_owner ON sessions(owner);
"""


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def save_offerset(
    tx: Transaction, request_id: str, owner: str, offerset: OfferSetResponse, trace: dict[str, str]
) -> None:
    document = to_jsonable(offerset)
    meta = offerset.meta
    assert meta is not None and meta.uuid is not None
    await tx.execute(
        "INSERT OR REPLACE INTO offersets(offerset_id, request_id, owner, result, document, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (meta.uuid, request_id, owner, offerset.result, json.dumps(document), tx.now.isoformat()),
    )
    for offer in offerset.offers or []:
        assert offer.meta is not None and offer.meta.uuid is not None
        await tx.execute(
            "INSERT OR IGNORE INTO sessions(session_id, offerset_id, owner, phase, expires_at, document, "
            "trace, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                offer.meta.uuid,
                meta.uuid,
                owner,
                Phase.OFFERED.value,
                offer.expires.isoformat() if offer.expires else None,
                json.dumps(to_jsonable(offer)),
                json.dumps(trace),
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
