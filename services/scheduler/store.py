"""The scheduler's one table: every hold and booking of its pool, with its state.

Times are epoch seconds so that overlap queries are plain numeric range scans: DOUBLE PRECISION,
which PostgreSQL keeps as 8 bytes (its REAL has 4) and SQLite as REAL. ``end`` is quoted in every
statement: it is a reserved word of PostgreSQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.scheduler.domain import Reservation
from services.scheduler.estimates import LearnedEstimates
from services.scheduler.states import TAKES_CAPACITY, ReservationState, change
from shared.bus.store import Store, Transaction

# The state values as SQL literals, written once from the enum: a partial index is used only by a
# query whose condition is the same text as the index's.
_HELD = f"'{ReservationState.HELD.value}'"
_BOOKED = f"'{ReservationState.BOOKED.value}'"
_ACTIVE = "state IN (" + ", ".join(f"'{s.value}'" for s in TAKES_CAPACITY) + ")"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS reservations (
    session_id TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    request_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,            -- a ReservationState: held | booked | launched | ended | released
    start DOUBLE PRECISION NOT NULL,
    "end" DOUBLE PRECISION NOT NULL,
    cores INTEGER NOT NULL,
    memory_gib INTEGER NOT NULL,
    storage_gib INTEGER NOT NULL DEFAULT 0,
    prepare_s INTEGER NOT NULL,
    expires_at DOUBLE PRECISION,
    launch_at DOUBLE PRECISION,
    launch TEXT,
    sources TEXT NOT NULL DEFAULT '{{}}',
    trace TEXT,
    updated DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS learned (
    pool TEXT PRIMARY KEY,
    estimates TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS preparations (
    session_id TEXT PRIMARY KEY,
    seconds DOUBLE PRECISION NOT NULL,
    steps TEXT NOT NULL,
    measured_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_active ON reservations(pool, "end", start)
    WHERE {_ACTIVE};
CREATE INDEX IF NOT EXISTS reservations_due ON reservations(launch_at) WHERE state = {_BOOKED};
CREATE INDEX IF NOT EXISTS reservations_holds ON reservations(expires_at) WHERE state = {_HELD};
"""


def ts(value: datetime) -> float:
    return value.timestamp()


def dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True)
class Row:
    session_id: str
    request_id: str
    owner: str
    state: ReservationState
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
        state=ReservationState(r["state"]),
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
        'SELECT session_id, start, "end", cores, memory_gib, storage_gib FROM reservations '
        f"WHERE pool = ? AND {_ACTIVE}",
        (pool,),
    )
    return [Reservation(r[0], dt(r[1]), dt(r[2]), r[3], r[4], r[5]) for r in rows]


async def get(tx: Transaction, session_id: str) -> Row | None:
    r = await tx.fetchone("SELECT * FROM reservations WHERE session_id = ?", (session_id,))
    return _row(r) if r is not None else None


async def state_of(tx: Transaction, session_id: str) -> ReservationState | None:
    r = await tx.fetchone("SELECT state FROM reservations WHERE session_id = ?", (session_id,))
    return ReservationState(r[0]) if r is not None else None


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
        'INSERT INTO reservations(session_id, pool, request_id, owner, state, start, "end", cores, '
        "memory_gib, storage_gib, prepare_s, expires_at, sources, updated) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            reservation.id,
            pool,
            request_id,
            owner,
            ReservationState.HELD.value,
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


async def set_state(
    tx: Transaction, session_id: str, current: ReservationState, new: ReservationState
) -> bool:
    """Move a reservation from `current` (the state the caller read) to `new` as the table allows.

    False for a repeat; `IllegalReservationChange` for a change the table forbids.
    """
    if not change(current, new):
        return False
    changed = await tx.execute(
        "UPDATE reservations SET state = ?, updated = ? WHERE session_id = ? AND state = ?",
        (new.value, ts(tx.now), session_id, current.value),
    )
    return changed > 0


async def book(
    tx: Transaction,
    session_id: str,
    current: ReservationState,
    launch_at: datetime,
    launch: dict[str, Any],
    trace: dict[str, str],
) -> bool:
    """`set_state` to BOOKED, with what the launch needs."""
    if not change(current, ReservationState.BOOKED):
        return False
    changed = await tx.execute(
        "UPDATE reservations SET state = ?, launch_at = ?, launch = ?, trace = ?, updated = ? "
        "WHERE session_id = ? AND state = ?",
        (
            ReservationState.BOOKED.value,
            ts(launch_at),
            json.dumps(launch),
            json.dumps(trace),
            ts(tx.now),
            session_id,
            current.value,
        ),
    )
    return changed > 0


async def due_launches(tx: Transaction, pool: str, limit: int = 200) -> list[Row]:
    rows = await tx.fetchall(
        f"SELECT * FROM reservations WHERE pool = ? AND state = {_BOOKED} AND launch_at <= ? "
        "ORDER BY launch_at LIMIT ?",
        (pool, ts(tx.now), limit),
    )
    return [_row(r) for r in rows]


async def expired_holds(tx: Transaction, pool: str, grace_s: int) -> list[str]:
    """The holds of a pool whose offer expired more than `grace_s` seconds ago."""
    rows = await tx.fetchall(
        f"SELECT session_id FROM reservations WHERE pool = ? AND state = {_HELD} AND expires_at <= ?",
        (pool, ts(tx.now) - grace_s),
    )
    return [r[0] for r in rows]


async def usage(store: Store, pool: str) -> list[tuple[ReservationState, Reservation]]:
    rows = await store.read(
        'SELECT state, session_id, start, "end", cores, memory_gib, storage_gib FROM reservations '
        f"WHERE pool = ? AND {_ACTIVE}",
        (pool,),
    )
    return [(ReservationState(r[0]), Reservation(r[1], dt(r[2]), dt(r[3]), r[4], r[5], r[6])) for r in rows]


async def record_preparation(
    tx: Transaction, session_id: str, seconds: float, steps: dict[str, float]
) -> bool:
    """Record a session's measured preparation; False if it was recorded before (a repeated fact)."""
    inserted = await tx.execute(
        "INSERT INTO preparations(session_id, seconds, steps, measured_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (session_id, seconds, json.dumps(steps), ts(tx.now)),
    )
    return inserted == 1


async def load_learned(tx: Transaction, pool: str) -> LearnedEstimates:
    row = await tx.fetchone("SELECT estimates FROM learned WHERE pool = ?", (pool,))
    return LearnedEstimates.from_dict(json.loads(row[0])) if row is not None else LearnedEstimates()


async def save_learned(tx: Transaction, pool: str, learned: LearnedEstimates) -> None:
    await tx.execute(
        "INSERT INTO learned(pool, estimates) VALUES (?, ?) "
        "ON CONFLICT(pool) DO UPDATE SET estimates = excluded.estimates",
        (pool, json.dumps(learned.to_dict())),
    )


async def prune_finished(tx: Transaction, cutoff: datetime, limit: int) -> int:
    """Delete reservations that ended or were let go, and measured preparations, before ``cutoff``
    (`shared.bus.retention`); at most ``limit`` of each. Neither takes capacity, so the ledger,
    which holds only what does, is unchanged."""
    done = (ReservationState.ENDED.value, ReservationState.RELEASED.value)
    deleted = await tx.execute(
        "DELETE FROM reservations WHERE session_id IN (SELECT session_id FROM reservations "
        "WHERE state IN (?, ?) AND updated < ? LIMIT ?)",
        (*done, ts(cutoff), limit),
    )
    deleted += await tx.execute(
        "DELETE FROM preparations WHERE session_id IN "
        "(SELECT session_id FROM preparations WHERE measured_at < ? LIMIT ?)",
        (ts(cutoff), limit),
    )
    return deleted
