"""The launcher's table: one row per launched session, enough to resume it after a restart."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.bus.store import Store, Transaction
from shared.lifecycle import Phase

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    session_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    platform TEXT NOT NULL,
    phase TEXT NOT NULL,
    spec TEXT NOT NULL,
    handle TEXT,
    cancel_reason TEXT,
    trace TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_active ON runs(session_id)
    WHERE phase NOT IN ('COMPLETED', 'FAILED', 'CANCELLED');
-- The name a start is about to make its run under (`Platform.start_name`), committed before the start:
-- after a crash between the platform's start and the commit of its handle, the run is found by it.
-- A table of its own, so a store made before it existed gains it without a migration.
CREATE TABLE IF NOT EXISTS start_intents (
    session_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    recorded TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Run:
    session_id: str
    owner: str
    platform: str
    phase: Phase
    spec: dict[str, Any]
    handle: str | None
    cancel_reason: str | None
    trace: dict[str, str]


def _run(r: Any) -> Run:
    return Run(
        session_id=r["session_id"],
        owner=r["owner"],
        platform=r["platform"],
        phase=Phase(r["phase"]),
        spec=json.loads(r["spec"]),
        handle=r["handle"],
        cancel_reason=r["cancel_reason"],
        trace=json.loads(r["trace"]),
    )


async def insert(tx: Transaction, run: Run) -> bool:
    changed = await tx.execute(
        "INSERT INTO runs(session_id, owner, platform, phase, spec, trace, updated) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            run.session_id,
            run.owner,
            run.platform,
            run.phase.value,
            json.dumps(run.spec),
            json.dumps(run.trace),
            tx.now.isoformat(),
        ),
    )
    return changed > 0


async def get(tx: Transaction, session_id: str) -> Run | None:
    row = await tx.fetchone("SELECT * FROM runs WHERE session_id = ?", (session_id,))
    return _run(row) if row is not None else None


async def read(store: Store, session_id: str) -> Run | None:
    rows = await store.read("SELECT * FROM runs WHERE session_id = ?", (session_id,))
    return _run(rows[0]) if rows else None


async def cancel_reason(store: Store, session_id: str) -> tuple[bool, str | None]:
    """Whether the run exists, and why it should be cancelled (None: it should not): what the
    monitor reads on every poll, without decoding the whole row."""
    rows = await store.read("SELECT cancel_reason FROM runs WHERE session_id = ?", (session_id,))
    return (True, rows[0][0]) if rows else (False, None)


async def active(store: Store) -> list[str]:
    rows = await store.read(
        "SELECT session_id FROM runs WHERE phase NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')"
    )
    return [r[0] for r in rows]


async def set_phase(tx: Transaction, session_id: str, phase: Phase, handle: str | None = None) -> None:
    await tx.execute(
        "UPDATE runs SET phase = ?, handle = COALESCE(?, handle), updated = ? WHERE session_id = ?",
        (phase.value, handle, tx.now.isoformat(), session_id),
    )


async def start_intent(store: Store, session_id: str) -> str | None:
    """The name recorded for the session's start, or None when no start was begun."""
    rows = await store.read("SELECT name FROM start_intents WHERE session_id = ?", (session_id,))
    return str(rows[0][0]) if rows else None


async def record_start_intent(tx: Transaction, session_id: str, name: str) -> None:
    await tx.execute(
        "INSERT INTO start_intents(session_id, name, recorded) VALUES (?, ?, ?) "
        "ON CONFLICT (session_id) DO UPDATE SET name = excluded.name, recorded = excluded.recorded",
        (session_id, name, tx.now.isoformat()),
    )


async def request_cancel(tx: Transaction, session_id: str, reason: str) -> None:
    await tx.execute(
        "UPDATE runs SET cancel_reason = COALESCE(cancel_reason, ?), updated = ? WHERE session_id = ?",
        (reason, tx.now.isoformat(), session_id),
    )


async def prune_finished(tx: Transaction, cutoff: datetime, limit: int) -> list[str]:
    """Delete the runs that finished before ``cutoff`` (`shared.bus.retention`), at most ``limit``;
    their session ids, whose work directories go too."""
    rows = await tx.fetchall(
        "SELECT session_id FROM runs WHERE phase IN ('COMPLETED', 'FAILED', 'CANCELLED') AND updated < ? "
        "LIMIT ?",
        (cutoff.isoformat(), limit),
    )
    ids = [str(r[0]) for r in rows]
    await tx.executemany("DELETE FROM runs WHERE session_id = ?", [(i,) for i in ids])
    await tx.executemany("DELETE FROM start_intents WHERE session_id = ?", [(i,) for i in ids])
    return ids
