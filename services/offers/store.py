"""The offers service's tables: requests in flight, offer sets, and the session read model.

Every SQL statement of the service is here, and every query returns named rows. The handlers run
them in their ``Transaction``; the HTTP API runs the same functions on a ``ReadModel``, a
connection of its own (its readers never block the writer). Both give rows read by column name,
once, in the row type's constructor below. The SQL is the part both SQLite and PostgreSQL speak;
only the triggers that keep ``owner_use`` are written per dialect (`SCHEMA`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from services.offers.domain import RequestState, SessionView
from shared.bus.store import Row, Schema, Store, Transaction
from shared.lifecycle import TERMINAL, Phase
from shared.messages import SlotsQuoted
from shared.models import ExecutionRequest, OfferSetResponse, dump_text

# The phases as SQL lists, written once from the enum.
_FINISHED = "(" + ", ".join(f"'{p.value}'" for p in sorted(TERMINAL)) + ")"
#: Accepted and not finished: what the per-owner session limit counts.
_LIVE = (
    "(" + ", ".join(f"'{p.value}'" for p in Phase if p not in TERMINAL | {Phase.INITIAL, Phase.OFFERED}) + ")"
)
_HELD_OR_LIVE = f"phase IN ('{Phase.OFFERED.value}', {_LIVE[1:-1]})"


def _tables(sessions_order: str) -> str:
    """The tables and indexes, the same in both dialects but for ``sessions_order``: a column that
    numbers the sessions as they are inserted, which SQLite's ``rowid`` already does."""
    return f"""
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
    outputs TEXT NOT NULL DEFAULT '{{}}',
    connectors TEXT NOT NULL DEFAULT '[]',
    trace TEXT NOT NULL,
    updated_at TEXT NOT NULL{sessions_order}
);
CREATE INDEX IF NOT EXISTS offersets_by_request ON offersets(request_id);
CREATE INDEX IF NOT EXISTS sessions_offered ON sessions(expires_at) WHERE phase = 'OFFERED';
CREATE INDEX IF NOT EXISTS sessions_by_offerset ON sessions(offerset_id);
CREATE INDEX IF NOT EXISTS sessions_by_owner ON sessions(owner);
CREATE INDEX IF NOT EXISTS requests_quoting ON requests(created_at) WHERE state = 'QUOTING';
-- Each owner's holds and live sessions, kept by triggers so the per-owner limits cost one look-up
-- per request instead of a count of the owner's sessions (thousands for a busy owner).
-- Cancels of accepted sessions waiting for the session's end (the launcher publishes CANCELLED):
-- each is answered when the read model records a terminal phase (`answer_pending_cancels`).
CREATE TABLE IF NOT EXISTS pending_cancels (
    session_id TEXT NOT NULL,
    update_id TEXT NOT NULL,
    requester TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (session_id, update_id)
);
CREATE TABLE IF NOT EXISTS owner_use (
    owner TEXT PRIMARY KEY,
    holds INTEGER NOT NULL,
    live INTEGER NOT NULL
);
"""


# A database from before the triggers: its owners' counts, once (an owner with a row is kept by them).
_BACKFILL = f"""
INSERT INTO owner_use(owner, holds, live)
    SELECT owner, SUM(CASE WHEN phase = 'OFFERED' THEN 1 ELSE 0 END),
        SUM(CASE WHEN phase IN {_LIVE} THEN 1 ELSE 0 END)
    FROM sessions WHERE {_HELD_OR_LIVE} GROUP BY owner
    ON CONFLICT DO NOTHING;
"""

_SQLITE_TRIGGERS = f"""
CREATE TRIGGER IF NOT EXISTS owner_use_insert AFTER INSERT ON sessions WHEN NEW.{_HELD_OR_LIVE}
BEGIN
    INSERT INTO owner_use(owner, holds, live) VALUES (NEW.owner, NEW.phase = 'OFFERED', NEW.phase IN {_LIVE})
    ON CONFLICT(owner) DO UPDATE SET holds = holds + excluded.holds, live = live + excluded.live;
END;
CREATE TRIGGER IF NOT EXISTS owner_use_update AFTER UPDATE OF phase ON sessions
    WHEN OLD.phase IS NOT NEW.phase AND (OLD.{_HELD_OR_LIVE} OR NEW.{_HELD_OR_LIVE})
BEGIN
    INSERT INTO owner_use(owner, holds, live) VALUES (
        NEW.owner,
        (NEW.phase = 'OFFERED') - (OLD.phase = 'OFFERED'),
        (NEW.phase IN {_LIVE}) - (OLD.phase IN {_LIVE})
    )
    ON CONFLICT(owner) DO UPDATE SET holds = holds + excluded.holds, live = live + excluded.live;
END;
CREATE TRIGGER IF NOT EXISTS owner_use_delete AFTER DELETE ON sessions WHEN OLD.{_HELD_OR_LIVE}
BEGIN
    UPDATE owner_use SET holds = holds - (OLD.phase = 'OFFERED'), live = live - (OLD.phase IN {_LIVE})
    WHERE owner = OLD.owner;
END;
"""

# The same three triggers as one PL/pgSQL function: PostgreSQL's triggers call a function, and its
# booleans are cast to count. Its search path is the service's schema, fixed when it is created.
_POSTGRES_TRIGGERS = f"""
CREATE OR REPLACE FUNCTION owner_use_count() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    held INTEGER := 0;
    live_now INTEGER := 0;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        held := (NEW.phase = 'OFFERED')::int;
        live_now := (NEW.phase IN {_LIVE})::int;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        held := held - (OLD.phase = 'OFFERED')::int;
        live_now := live_now - (OLD.phase IN {_LIVE})::int;
    END IF;
    IF held = 0 AND live_now = 0 THEN
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE owner_use SET holds = holds + held, live = live + live_now WHERE owner = OLD.owner;
    ELSE
        INSERT INTO owner_use AS u(owner, holds, live) VALUES (NEW.owner, held, live_now)
        ON CONFLICT(owner) DO UPDATE SET holds = u.holds + excluded.holds, live = u.live + excluded.live;
    END IF;
    RETURN NULL;
END;
$$;
CREATE OR REPLACE TRIGGER owner_use AFTER INSERT OR UPDATE OF phase OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION owner_use_count();
"""

SCHEMA = Schema(
    sqlite=_tables("") + _SQLITE_TRIGGERS + _BACKFILL,
    # PostgreSQL has no rowid: an identity column of that name numbers the sessions instead.
    postgres=_tables(",\n    rowid BIGINT GENERATED ALWAYS AS IDENTITY") + _POSTGRES_TRIGGERS + _BACKFILL,
)


class Reads(Protocol):
    """What a query needs: the handlers' ``Transaction`` and the HTTP API's ``ReadModel`` both are."""

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


def _lock(db: Reads, *, skip_locked: bool = False) -> str:
    """A read in a transaction locks its rows where replicas share the store, so that one writer at
    a time decides about a request or a session (`Transaction.row_lock`); the read model locks none."""
    return db.row_lock(skip_locked=skip_locked) if isinstance(db, Transaction) else ""


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# -- requests waiting for the pools' quotes ----------------------------------------------------------


@dataclass(frozen=True)
class RequestRow:
    request_id: str
    owner: str
    state: RequestState
    request_json: str
    expires_at: datetime
    pools: tuple[str, ...]
    trace: dict[str, str]

    def request(self) -> ExecutionRequest:
        """Parsed only when the offer set is built, not for every quote that arrives."""
        return ExecutionRequest.model_validate_json(self.request_json)


async def request_seen(db: Reads, request_id: str) -> bool:
    """A request is identified by its id, whatever transport id a re-send carries."""
    return (
        await db.fetchone("SELECT 1 FROM requests WHERE request_id = ?", (request_id,)) is not None
        or await db.fetchone("SELECT 1 FROM offersets WHERE request_id = ?", (request_id,)) is not None
    )


async def insert_request(
    tx: Transaction,
    *,
    request_id: str,
    owner: str,
    offerset_id: str,
    state: RequestState,
    request: ExecutionRequest,
    expires_at: datetime,
    pools: Sequence[str],
    trace: dict[str, str],
) -> None:
    await tx.execute(
        "INSERT INTO requests(request_id, owner, offerset_id, state, request_json, "
        "expires_at, pools, trace, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            request_id,
            owner,
            offerset_id,
            state.value,
            dump_text(request),
            expires_at.isoformat(),
            json.dumps(list(pools)),
            json.dumps(trace),
            tx.now.isoformat(),
        ),
    )


async def get_request(db: Reads, request_id: str) -> RequestRow | None:
    r = await db.fetchone(
        "SELECT request_id, owner, state, request_json, expires_at, pools, trace FROM requests "
        f"WHERE request_id = ?{_lock(db)}",
        (request_id,),
    )
    if r is None:
        return None
    return RequestRow(
        request_id=r["request_id"],
        owner=r["owner"],
        state=RequestState(r["state"]),
        request_json=r["request_json"],
        expires_at=datetime.fromisoformat(r["expires_at"]),
        pools=tuple(json.loads(r["pools"])),
        trace=json.loads(r["trace"]),
    )


async def quoting_since(db: Reads, before: datetime, limit: int = 100) -> list[RequestRow]:
    """Requests still waiting for quotes that were made before ``before``, oldest first."""
    rows = await db.fetchall(
        "SELECT request_id FROM requests WHERE state = ? AND created_at < ? ORDER BY created_at LIMIT ?"
        + _lock(db, skip_locked=True),
        (RequestState.QUOTING.value, before.isoformat(), limit),
    )
    found = [await get_request(db, r["request_id"]) for r in rows]
    return [row for row in found if row is not None]


async def offered_in(db: Reads, request_id: str) -> bool:
    """Whether the request's offer set offered anything (a YES)."""
    r = await db.fetchone("SELECT result FROM offersets WHERE request_id = ?", (request_id,))
    return r is not None and r["result"] == "YES"


async def set_request_state(tx: Transaction, request_id: str, state: RequestState) -> None:
    """Callers decide with ``domain.request_transition``; this only writes the outcome."""
    await tx.execute("UPDATE requests SET state = ? WHERE request_id = ?", (state.value, request_id))


async def add_quote(tx: Transaction, quoted: SlotsQuoted) -> None:
    """One pool's answer, kept until every pool asked has answered (a repeat is ignored)."""
    await tx.execute(
        "INSERT INTO quotes(request_id, pool, answer) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (quoted.request_id, quoted.pool, quoted.model_dump_json()),
    )


async def quotes(db: Reads, request_id: str) -> list[SlotsQuoted]:
    rows = await db.fetchall("SELECT answer FROM quotes WHERE request_id = ?", (request_id,))
    return [SlotsQuoted.model_validate_json(r["answer"]) for r in rows]


# -- offer sets and sessions, as the handlers change them ---------------------------------------------


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
        "INSERT INTO offersets(offerset_id, request_id, owner, result, document, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(offerset_id) DO UPDATE SET request_id = excluded.request_id, "
        "owner = excluded.owner, result = excluded.result, document = excluded.document, "
        "created_at = excluded.created_at",
        (meta.uuid, request_id, owner, offerset.result, document or dump_text(offerset), tx.now.isoformat()),
    )
    trace_text = json.dumps(trace)
    for offer in offerset.offers or []:
        assert offer.meta is not None and offer.meta.uuid is not None
        await tx.execute(
            "INSERT INTO sessions(session_id, offerset_id, pool, owner, phase, expires_at, "
            "document, trace, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
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


_VIEW_COLUMNS = "session_id, owner, phase, expires_at, offerset_id"


def _session_view(r: Row) -> SessionView:
    return SessionView(
        session_id=r["session_id"],
        owner=r["owner"],
        phase=Phase(r["phase"]),
        expires_at=_dt(r["expires_at"]),
        offerset_id=r["offerset_id"],
    )


async def session_view(db: Reads, session_id: str, *, lock: bool = True) -> SessionView | None:
    """``lock``: hold the row until the transaction ends (where replicas share the store)."""
    clause = _lock(db) if lock else ""
    r = await db.fetchone(f"SELECT {_VIEW_COLUMNS} FROM sessions WHERE session_id = ?{clause}", (session_id,))
    return _session_view(r) if r is not None else None


async def offered_siblings(db: Reads, offerset_id: str) -> list[str]:
    rows = await db.fetchall(
        "SELECT session_id FROM sessions WHERE offerset_id = ? AND phase = 'OFFERED' ORDER BY session_id"
        + _lock(db),
        (offerset_id,),
    )
    return [r["session_id"] for r in rows]


async def session_trace(db: Reads, session_id: str) -> dict[str, str]:
    r = await db.fetchone("SELECT trace FROM sessions WHERE session_id = ?", (session_id,))
    return dict(json.loads(r["trace"])) if r is not None else {}


async def session_document(db: Reads, session_id: str) -> dict[str, Any]:
    r = await db.fetchone("SELECT document FROM sessions WHERE session_id = ?", (session_id,))
    return dict(json.loads(r["document"])) if r is not None else {}


async def session_pool(db: Reads, session_id: str) -> str:
    r = await db.fetchone("SELECT pool FROM sessions WHERE session_id = ?", (session_id,))
    return str(r["pool"]) if r is not None else ""


async def pools_of(db: Reads, session_ids: list[str]) -> dict[str, list[str]]:
    """Group session ids by their pool, to send each pool only its own releases."""
    grouped: dict[str, list[str]] = {}
    for session_id in session_ids:
        grouped.setdefault(await session_pool(db, session_id), []).append(session_id)
    return grouped


async def lock_offerset(tx: Transaction, offerset_id: str) -> None:
    """Where replicas share the store, hold the offer set until the transaction ends: updates of
    its sessions (an accept rejects the siblings) then take turns, locking rows in one order."""
    if tx.LOCKS_ROWS:
        await tx.fetchone(f"SELECT 1 FROM offersets WHERE offerset_id = ?{_lock(tx)}", (offerset_id,))


async def set_phase(tx: Transaction, session_id: str, phase: Phase) -> None:
    await tx.execute(
        "UPDATE sessions SET phase = ?, updated_at = ? WHERE session_id = ?",
        (phase.value, tx.now.isoformat(), session_id),
    )


@dataclass(frozen=True)
class PendingCancel:
    update_id: str
    requester: str


async def add_pending_cancel(tx: Transaction, session_id: str, update_id: str, requester: str) -> None:
    """A cancel whose answer waits for the session's end (a re-delivery adds nothing)."""
    await tx.execute(
        "INSERT INTO pending_cancels(session_id, update_id, requester, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (session_id, update_id, requester, tx.now.isoformat()),
    )


async def take_pending_cancels(tx: Transaction, session_id: str) -> list[PendingCancel]:
    """The cancels of `session_id` still unanswered, oldest first; they are answered now, so gone."""
    rows = await tx.fetchall(
        "SELECT update_id, requester FROM pending_cancels WHERE session_id = ? "
        "ORDER BY created_at, update_id",
        (session_id,),
    )
    if rows:
        await tx.execute("DELETE FROM pending_cancels WHERE session_id = ?", (session_id,))
    return [PendingCancel(r["update_id"], r["requester"]) for r in rows]


async def record_event(
    tx: Transaction,
    session_id: str,
    phase: Phase,
    messages: list[dict[str, Any]],
    outputs: dict[str, str],
    connectors: list[dict[str, str]],
) -> None:
    r = await tx.fetchone(
        f"SELECT messages, outputs FROM sessions WHERE session_id = ?{_lock(tx)}", (session_id,)
    )
    if r is None:
        return
    all_messages = json.loads(r["messages"]) + messages
    all_outputs = {**json.loads(r["outputs"]), **outputs}
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


async def due_offers(db: Reads, now: datetime, limit: int = 500) -> list[SessionView]:
    rows = await db.fetchall(
        f"SELECT {_VIEW_COLUMNS} FROM sessions "
        "WHERE phase = 'OFFERED' AND expires_at <= ? ORDER BY expires_at LIMIT ?"
        # Rows a replica's update holds are left to the next tick: it may be accepting them.
        + _lock(db, skip_locked=True),
        (now.isoformat(), limit),
    )
    return [_session_view(r) for r in rows]


# -- offer sets and sessions, as the HTTP API shows them ----------------------------------------------


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


_SESSION_COLUMNS = (
    "session_id, offerset_id, owner, phase, document, messages, outputs, connectors, trace, updated_at"
)


def _session_row(r: Row) -> SessionRow:
    return SessionRow(
        session_id=r["session_id"],
        offerset_id=r["offerset_id"],
        owner=r["owner"],
        phase=Phase(r["phase"]),
        document=json.loads(r["document"]),
        messages=json.loads(r["messages"]),
        outputs=json.loads(r["outputs"]),
        connectors=json.loads(r["connectors"]),
        trace=json.loads(r["trace"]),
        updated_at=datetime.fromisoformat(r["updated_at"]),
    )


async def session(db: Reads, session_id: str) -> SessionRow | None:
    r = await db.fetchone(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,))
    return _session_row(r) if r is not None else None


async def session_owner(db: Reads, session_id: str) -> str | None:
    r = await db.fetchone("SELECT owner FROM sessions WHERE session_id = ?", (session_id,))
    return str(r["owner"]) if r is not None else None


async def sessions(
    db: Reads, owner: str | None, phase: Phase | None = None, limit: int = 100
) -> list[SessionRow]:
    """Newest first; every owner's when ``owner`` is None."""
    where, params = [], []
    if owner is not None:
        where.append("owner = ?")
        params.append(owner)
    if phase is not None:
        where.append("phase = ?")
        params.append(phase.value)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = await db.fetchall(
        f"SELECT {_SESSION_COLUMNS} FROM sessions {clause} ORDER BY rowid DESC LIMIT ?", (*params, limit)
    )
    return [_session_row(r) for r in rows]


async def offerset(db: Reads, offerset_id: str) -> OffersetRow | None:
    r = await db.fetchone(
        "SELECT offerset_id, owner, result, document FROM offersets WHERE offerset_id = ?", (offerset_id,)
    )
    if r is None:
        return None
    return OffersetRow(
        offerset_id=r["offerset_id"], owner=r["owner"], result=r["result"], document=json.loads(r["document"])
    )


async def offerset_sessions(db: Reads, offerset_id: str) -> dict[str, SessionRow]:
    rows = await db.fetchall(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE offerset_id = ?", (offerset_id,))
    return {row.session_id: row for row in map(_session_row, rows)}


# -- retention (shared/bus/retention.py) and per-owner limits (services/offers/limits.py) ----------------


async def prune_finished(tx: Transaction, cutoff: datetime, limit: int) -> int:
    """Delete finished sessions, answered requests and offer sets left with no session, all last
    changed before ``cutoff``; at most ``limit`` of each."""
    before = cutoff.isoformat()
    deleted = await tx.execute(
        "DELETE FROM sessions WHERE session_id IN (SELECT session_id FROM sessions "
        f"WHERE phase IN {_FINISHED} AND updated_at < ? LIMIT ?)",
        (before, limit),
    )
    answered = RequestState.ANSWERED.value
    await tx.execute(
        "DELETE FROM quotes WHERE request_id IN (SELECT request_id FROM requests "
        "WHERE state = ? AND created_at < ? LIMIT ?)",
        (answered, before, limit),
    )
    deleted += await tx.execute(
        "DELETE FROM requests WHERE request_id IN (SELECT request_id FROM requests "
        "WHERE state = ? AND created_at < ? LIMIT ?)",
        (answered, before, limit),
    )
    deleted += await tx.execute(
        "DELETE FROM offersets WHERE offerset_id IN (SELECT offerset_id FROM offersets o "
        "WHERE o.created_at < ? "
        "AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.offerset_id = o.offerset_id) LIMIT ?)",
        (before, limit),
    )
    return deleted


async def accepted_before(db: Reads, before: datetime, limit: int) -> list[tuple[str, str]]:
    """(session id, owner) of sessions still ACCEPTED that last changed before ``before``."""
    rows = await db.fetchall(
        "SELECT session_id, owner FROM sessions WHERE phase = 'ACCEPTED' AND updated_at < ? "
        "ORDER BY updated_at LIMIT ?",
        (before.isoformat(), limit),
    )
    return [(str(r["session_id"]), str(r["owner"])) for r in rows]


@dataclass(frozen=True)
class OwnerUse:
    """An owner's offers not yet accepted or let go (each a hold in a pool), and accepted sessions
    not yet finished."""

    holds: int
    live_sessions: int


async def owner_use(db: Reads, owner: str) -> OwnerUse:
    """Kept by the ``owner_use`` triggers as sessions are inserted, change phase or are pruned."""
    r = await db.fetchone("SELECT holds, live FROM owner_use WHERE owner = ?", (owner,))
    return OwnerUse(int(r["holds"]), int(r["live"])) if r is not None else OwnerUse(0, 0)


# -- local identities of before shared/auth/identities.py (read once, to move them there) --------------


async def legacy_identities(db: ReadModel) -> list[tuple[str, str]]:
    """(user name, password hash) of every row of the old ``identities`` table, if there is one (only
    an old SQLite file can have it: no PostgreSQL database predates its move)."""
    if db.dialect != "sqlite":
        return []
    if await db.fetchone("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'identities'") is None:
        return []
    rows = await db.fetchall("SELECT username, password_hash FROM identities ORDER BY username")
    return [(str(r["username"]), str(r["password_hash"])) for r in rows]


async def forget_legacy_identities(db: ReadModel, usernames: Sequence[str]) -> None:
    """Delete rows that are now kept elsewhere; the table itself once it is empty."""
    for username in usernames:
        await db.execute("DELETE FROM identities WHERE username = ?", (username,))
    if await db.fetchone("SELECT 1 FROM identities LIMIT 1") is None:
        await db.execute("DROP TABLE identities")


# -- the HTTP API's connection -------------------------------------------------------------------------


class ReadModel:
    """The offers tables on a connection of the HTTP API's own, read with the functions above; it
    writes nothing but the old identities table, once, to empty it (see ``forget_legacy_identities``).

    On SQLite, the service's file opened again (aiosqlite: the HTTP API's reads leave the event
    loop to a thread); on PostgreSQL, a second store on the service's schema, which it opens."""

    def __init__(self, source: Path | Store) -> None:
        self._source = source
        self.dialect = "sqlite" if isinstance(source, Path) else source.dialect
        self._conn: aiosqlite.Connection | None = None

    async def open(self) -> None:
        if not isinstance(self._source, Path):
            await self._source.open()
            return
        conn = await aiosqlite.connect(self._source, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.executescript(SCHEMA.sqlite)
        self._conn = conn

    async def close(self) -> None:
        if not isinstance(self._source, Path):
            await self._source.close()
        elif self._conn is not None:
            await self._conn.close()
            self._conn = None

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("read model is not open")
        return self._conn

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        if not isinstance(self._source, Path):
            rows = await self._source.read(sql, params)
            return rows[0] if rows else None
        async with self.conn.execute(sql, params) as cursor:
            row: Row | None = await cursor.fetchone()
            return row

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        if not isinstance(self._source, Path):
            return await self._source.read(sql, params)
        async with self.conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if not isinstance(self._source, Path):
            async with self._source.transaction() as tx:
                return await tx.execute(sql, params)
        async with self.conn.execute(sql, params) as cursor:
            return cursor.rowcount
