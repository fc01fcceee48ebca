"""The scheduler's one table: every hold and booking of its pool, with its state.

Times are epoch seconds so that overlap queries are plain numeric range scans.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.scheduler.domain import Reservation
from services.scheduler.estimates import LearnedEstimates
from shared.bus.store import Store, Transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS reservations (
    session_id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    request_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,            -- held | booked | launched | ended | released
    start REAL NOT NULL,
    end REAL NOT NULL,
    cores INTEGER NOT NULL,
    memory_gib INTEGER NOT NULL,
    storage_gib INTEGER NOT NULL DEFAULT 0,
    prepare_s INTEGER NOT NULL,
    expires_at REAL,
    launch_at REAL,
    launch TEXT,
    sources TEXT NOT NULL DEFAULT '{}',
    trace TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS learned (
    pool TEXT PRIMARY KEY,
    estimates TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS preparations (
    session_id TEXT PRIMARY KEY,
    seconds REAL NOT NULL,
    steps TEXT NOT NULL,
    measured_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_active ON reservations(pool, end, start)
    WHERE state IN ('held', 'booked', 'launched');
CREATE INDEX IF NOT EXISTS reservations_due ON reservations(launch_at) WHERE state = 'booked';
CREATE INDEX IF NOT EXISTS reservations_holds ON reservations(expires_at) WHERE state = 'held';
"""

ACTIVE = ("held", "booked", "launched")


def ts(value: datetime) -> float:
    return value.timestamp()


def dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True)
class Row:
    session_id: str
    request_id: str
    owner: str
    state: str
    start: datetime
    end: datetime
    cores: int
    memory_gib: int
    storage_gib: int
    prepare_s: int
    launch: dict[str, Any] | None
    trace: dict[str, str]
    sources: dict[str, str | None]

    def reservation(self) -> Reservation:
        return Reservation(
            self.session_id, self.start, self.end, self.cores, self.memory_gib, self.storage_gib
        )


def _row(r: Any) -> Row:
    return Row(
        session_id=r["session_id"],
        request_id=r["request_id"],
        owner=r["owner"],
        state=r["state"],
        start=dt(r["start"]),
        end=dt(r["end"]),
        cores=r["cores"],
        memory_gib=r["memory_gib"],
        storage_gib=r["storage_gib"],
        prepare_s=r["prepare_s"],
        launch=json.loads(r["launch"]) if r["launch"] else None,
        trace=json.loads(r["trace"]) if r["trace"] else {},
        sources=json.loads(r["sources"]) if r["sources"] else {},
    )


async def active(store: Store, pool: str) -> list[Reservation]:
    """Every hold and booking of a pool that still takes capacity: the ledger is rebuilt from these."""
    rows = await store.read(
        "SELECT session_id, start, end, cores, memory_gib, storage_gib FROM reservations "
        "WHERE pool = ? AND state IN ('held', 'booked', 'launched')",
        (pool,),
    )
    return [Reservation(r[0], dt(r[1]), dt(r[2]), r[3], r[4], r[5]) for r in rows]


async def get(tx: Transaction, session_id: str) -> Row | None:
    r = await tx.fetchone("SELECT * FROM reservations WHERE session_id = ?", (session_id,))
    return _row(r) if r is not None else None


async def insert_hold(
    tx: Transaction,
    pool: str,
    reservation: Reservation,
    request_id: str,
    owner: str,
    prepare_s: int,
    expires_at: datetime,
    sources: dict[str, str | None] | None = None,
) -> None:
    await tx.execute(
        "INSERT INTO reservations(session_id, pool, request_id, owner, state, start, end, cores, memory_gib, "
        "storage_gib, prepare_s, expires_at, sources, updated) "
        "VALUES (?, ?, ?, ?, 'held', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            reservation.id,
            pool,
            request_id,
            owner,
            ts(reservation.start),
            ts(reservation.end),
            reservation.cores,
            reservation.memory_gib,
            reservation.storage_gib,
            prepare_s,
            ts(expires_at),
            json.dumps(sources or {}),
            ts(tx.now),
        ),
    )


async def set_state(tx: Transaction, session_id: str, state: str, *, only_from: tuple[str, ...]) -> bool:
    marks = ",".join("?" * len(only_from))
    changed = await tx.execute(
        f"UPDATE reservations SET state = ?, updated = ? WHERE session_id = ? AND state IN ({marks})",
        (state, ts(tx.now), session_id, *only_from),
    )
    return changed > 0


async def book(
    tx: Transaction, session_id: str, launch_at: datetime, launch: dict[str, Any], trace: dict[str, str]
) -> None:
    await tx.execute(
        "UPDATE reservations SET state = 'booked', launch_at = ?, launch = ?, trace = ?, updated = ? "
        "WHERE session_id = ?",
        (ts(launch_at), json.dumps(launch), json.dumps(trace), ts(tx.now), session_id),
    )


async def due_launches(tx: Transaction, pool: str, limit: int = 200) -> list[Row]:
    rows = await tx.fetchall(
        "SELECT * FROM reservations WHERE pool = ? AND state = 'booked' AND launch_at <= ? "
        "ORDER BY launch_at LIMIT ?",
        (pool, ts(tx.now), limit),
    )
    return [_row(r) for r in rows]


async def release_expired_holds(tx: Transaction, pool: str, grace_s: int) -> list[str]:
    rows = await tx.fetchall(
        "SELECT session_id FROM reservations WHERE pool = ? AND state = 'held' AND expires_at <= ?",
        (pool, ts(tx.now) - grace_s),
    )
    ids = [r[0] for r in rows]
    for session_id in ids:
        await tx.execute(
            "UPDATE reservations SET state = 'released', updated = ? WHERE session_id = ?",
            (ts(tx.now), session_id),
        )
    return ids


async def usage(store: Store, pool: str) -> list[tuple[str, Reservation]]:
    rows = await store.read(
        "SELECT state, session_id, start, end, cores, memory_gib, storage_gib FROM reservations "
        "WHERE pool = ? AND state IN ('held', 'booked', 'launched')",
        (pool,),
    )
    return [(r[0], Reservation(r[1], dt(r[2]), dt(r[3]), r[4], r[5], r[6])) for r in rows]


async def record_preparation(
    tx: Transaction, session_id: str, seconds: float, steps: dict[str, float]
) -> None:
    await tx.execute(
        "INSERT OR IGNORE INTO preparations(session_id, seconds, steps, measured_at) VALUES (?, ?, ?, ?)",
        (session_id, seconds, json.dumps(steps), ts(tx.now)),
    )


async def load_learned(tx: Transaction, pool: str) -> LearnedEstimates:
    row = await tx.fetchone("SELECT estimates FROM learned WHERE pool = ?", (pool,))
    return LearnedEstimates.from_dict(json.loads(row[0])) if row is not None else LearnedEstimates()


async def save_learned(tx: Transaction, pool: str, learned: LearnedEstimates) -> None:
    await tx.execute(
        "INSERT INTO learned(pool, estimates) VALUES (?, ?) "
        "ON CONFLICT(pool) DO UPDATE SET estimates = excluded.estimates",
        (pool, json.dumps(learned.to_dict())),
    )
