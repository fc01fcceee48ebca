"""The store port's contract, on both of its implementations: SQLite (a file, as the services use it)
and PostgreSQL (a fresh database of the run's private server, tests/postgres.py).

Inbox, outbox, transactions, savepoints and two writers at once here; each service's own tables
are exercised through its handlers, which tests/handlers runs on both stores too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from services.scheduler import store as scheduler_tables
from services.scheduler.domain import Reservation
from services.scheduler.states import ReservationState
from shared.bus.postgres import PostgresStore, PostgresTransaction, pyformat
from shared.bus.sqlite import SqliteStore
from shared.bus.store import Schema, Store, Transaction
from tests.postgres import PostgresServer

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOTES = """
CREATE TABLE IF NOT EXISTS notes (key TEXT PRIMARY KEY, body TEXT NOT NULL, n INTEGER NOT NULL DEFAULT 0);
"""

#: A store of a given name (two of one name share their tables: two writers) on one backend.
Stores = Callable[[Schema | str, str], Store]


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    if request.param == "sqlite":
        return lambda schema, name="svc": SqliteStore(tmp_path / f"{name}.sqlite", schema)
    url: str = request.getfixturevalue("postgres_url")
    return lambda schema, name="svc": PostgresStore(url, name, schema)


@pytest.fixture
async def store(stores: Stores) -> AsyncIterator[Store]:
    opened = stores(NOTES, "svc")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def note(tx: Transaction, key: str, body: str = "x") -> int:
    return await tx.execute("INSERT INTO notes(key, body) VALUES (?, ?) ON CONFLICT DO NOTHING", (key, body))


async def keys(store: Store) -> list[str]:
    return [row["key"] for row in await store.read("SELECT key FROM notes ORDER BY key")]


# -- the inbox ------------------------------------------------------------------------------------------


async def test_the_inbox_claims_a_message_once_and_only_when_its_transaction_commits(store: Store) -> None:
    async with store.transaction(NOW) as tx:
        assert await tx.claim("m1")
        assert not await tx.claim("m1")  # a repeat in the same transaction is not claimed again
        assert await tx.seen("m1")
    with pytest.raises(RuntimeError):
        async with store.transaction(NOW) as tx:
            assert await tx.claim("m2")
            raise RuntimeError("the handler failed")
    async with store.transaction(NOW) as tx:
        assert not await tx.claim("m1")  # a redelivery
        assert await tx.seen_among(["m1", "m2", "m3"]) == {"m1"}
        assert await tx.seen_among([]) == set()
        assert not await tx.seen("m2")
    assert [tuple(row) for row in await store.read("SELECT msg_id, seen_at FROM inbox")] == [
        ("m1", NOW.isoformat())
    ]


async def test_a_claim_rolled_back_by_its_savepoint_can_be_claimed_again(store: Store) -> None:
    async with store.transaction(NOW) as tx:
        with pytest.raises(ValueError):
            async with tx.savepoint():
                assert await tx.claim("m1")
                raise ValueError("the handler failed")
        assert await tx.claim("m1")


# -- the outbox -----------------------------------------------------------------------------------------


async def test_the_outbox_keeps_commit_order_and_what_the_stream_confirmed(store: Store) -> None:
    async with store.transaction(NOW) as tx:
        for i in range(3):
            await tx.publish(f"s.{i}", bytes([i, 0, 255]), f"m{i}", trace_headers={"traceparent": f"t{i}"})
    first = tx.outbox
    async with store.transaction(NOW + timedelta(seconds=5)) as tx:
        await tx.publish("s.3", b"", "m3", trace_headers={})
    assert [row.id for row in first] == sorted(row.id for row in first)
    assert first[-1].id < tx.outbox[0].id
    unsent = await store.unsent()
    assert unsent == [*first, *tx.outbox]  # the bytes and headers come back as they went in
    assert await store.unsent(older_than=NOW + timedelta(seconds=1)) == first
    assert await store.unsent(limit=2) == first[:2]

    await store.mark_sent([first[0].id, first[2].id], NOW + timedelta(seconds=10))
    await store.mark_sent([], NOW)
    assert [row.msg_id for row in await store.unsent()] == ["m1", "m3"]
    assert [row.msg_id for row in await store.sent_since(NOW)] == ["m0", "m2"]
    assert await store.sent_since(NOW + timedelta(seconds=11)) == []

    # Sent rows and inbox ids outlive `keep`, then go; unsent rows stay whatever their age.
    async with store.transaction(NOW) as tx:
        await tx.claim("old")
    await store.prune(NOW + timedelta(days=2), keep=timedelta(days=1))
    assert [row.msg_id for row in await store.unsent()] == ["m1", "m3"]
    assert await store.sent_since(NOW) == []
    assert await store.read("SELECT * FROM inbox") == []


async def test_a_rolled_back_transaction_leaves_no_row_no_message_and_undoes_its_callbacks(
    store: Store,
) -> None:
    happened: list[str] = []
    with pytest.raises(ValueError, match="refused"):
        async with store.transaction(NOW) as tx:
            await note(tx, "a")
            await tx.publish("s", b"x", "m")
            tx.after_commit(lambda: happened.append("committed"))
            tx.on_rollback(lambda: happened.append("undone"))
            raise ValueError("refused")
    assert (tx.outbox, happened) == ([], ["undone"])
    assert await keys(store) == []
    assert await store.unsent() == []

    async with store.transaction(NOW) as tx:
        await note(tx, "b")
        tx.after_commit(lambda: happened.append("committed"))
    assert happened == ["undone", "committed"]
    assert await keys(store) == ["b"]


async def test_a_savepoint_undoes_only_its_part_even_after_a_failed_statement(store: Store) -> None:
    """The runtime applies each message of a batch under a savepoint. On PostgreSQL a failed
    statement spoils the whole transaction unless the savepoint is rolled back: the rest commits."""
    async with store.transaction(NOW) as tx:
        await note(tx, "kept")
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            async with tx.savepoint():
                await note(tx, "undone")
                await tx.publish("s", b"x", "undone")
                await tx.execute("INSERT INTO notes(key, body) VALUES (?, ?)", ("kept", "again"))
        async with tx.savepoint():
            await note(tx, "after")
        assert [row.msg_id for row in tx.outbox] == []
    assert await keys(store) == ["after", "kept"]
    assert await store.unsent() == []


async def test_rows_are_read_by_name_and_by_position_and_placeholders_skip_literals(store: Store) -> None:
    async with store.transaction(NOW) as tx:
        await note(tx, "k?", "50%")
        row = await tx.fetchone(
            "SELECT key, body, '?' AS mark FROM notes WHERE key = ? AND body LIKE '5%'", ("k?",)
        )
        assert row is not None
        assert (row["key"], row[1], row["mark"], row.keys()) == ("k?", "50%", "?", ["key", "body", "mark"])
        assert await tx.fetchone("SELECT key FROM notes WHERE key = ?", ("none",)) is None
        await tx.executemany("UPDATE notes SET n = n + ? WHERE key = ?", [(2, "k?"), (3, "k?")])
        assert await tx.execute("UPDATE notes SET body = ? WHERE key = ?", ("b", "missing")) == 0
    assert [tuple(r) for r in await store.read("SELECT key, n FROM notes")] == [("k?", 5)]


def test_placeholders_become_psycopgs_outside_quoted_literals_only() -> None:
    assert pyformat("SELECT '?', ?, 'it''s ?' FROM t WHERE a LIKE '5%' AND b = ?") == (
        "SELECT '?', %s, 'it''s ?' FROM t WHERE a LIKE '5%%' AND b = %s"
    )


# -- two writers -----------------------------------------------------------------------------------------


async def test_transactions_of_one_store_are_one_at_a_time(store: Store) -> None:
    """Read, then write what was read: the store's single writer makes it safe within a process."""
    async with store.transaction(NOW) as tx:
        await note(tx, "count")

    async def increment() -> None:
        async with store.transaction(NOW) as tx:
            row = await tx.fetchone("SELECT n FROM notes WHERE key = 'count'")
            assert row is not None
            await asyncio.sleep(0)  # another task's transaction would run here, if it could
            await tx.execute("UPDATE notes SET n = ? WHERE key = 'count'", (row["n"] + 1,))

    await asyncio.gather(*(increment() for _ in range(20)))
    assert [tuple(r) for r in await store.read("SELECT n FROM notes")] == [(20,)]


async def test_two_stores_on_the_same_tables_lose_no_write_and_insert_a_key_once(stores: Stores) -> None:
    """Two writers (two processes, or replicas to come) on one service's tables: atomic updates add
    up and a key inserted by both is inserted by exactly one."""
    first, second = stores(NOTES, "svc"), stores(NOTES, "svc")
    await first.open()
    await second.open()
    try:
        async with first.transaction(NOW) as tx:
            await note(tx, "count")
        inserted: list[int] = []

        async def write(store: Store, rounds: int) -> None:
            for i in range(rounds):
                async with store.transaction(NOW) as tx:
                    await tx.execute("UPDATE notes SET n = n + 1 WHERE key = 'count'")
                    inserted.append(await note(tx, f"k{i}"))
                    await tx.publish("s", b"x", f"{id(store)}-{i}")

        await asyncio.gather(write(first, 25), write(second, 25))
        assert [tuple(r) for r in await second.read("SELECT n FROM notes WHERE key = 'count'")] == [(50,)]
        assert sorted(inserted) == [0] * 25 + [1] * 25
        ids = [row.id for row in await first.unsent()]
        assert len(ids) == len(set(ids)) == 50
    finally:
        await first.close()
        await second.close()


async def test_two_stores_claiming_one_message_at_once_apply_it_once(postgres_url: str) -> None:
    """Offers replicas on one store both get a redelivered message: whichever claims it second
    waits for the first transaction and then finds it claimed (or claims it, if that rolled back).
    PostgreSQL only: a SQLite file is never shared by two processes (one file per process)."""
    first, second = PostgresStore(postgres_url, "svc", NOTES), PostgresStore(postgres_url, "svc", NOTES)
    await first.open()
    await second.open()
    try:
        claimed: list[str] = []
        inside = asyncio.Event()

        async def apply(store: Store, msg_id: str, name: str, fail: bool = False) -> None:
            with contextlib.suppress(LookupError):
                async with store.transaction(NOW) as tx:
                    if await tx.claim(msg_id):
                        inside.set()
                        await asyncio.sleep(0.3)  # the other claims meanwhile (PostgreSQL: it waits)
                        if fail:
                            raise LookupError("rolled back")
                        await note(tx, name)
                        claimed.append(name)

        await asyncio.gather(apply(first, "m1", "first"), apply(second, "m1", "second"))
        assert len(claimed) == 1 and await keys(first) == claimed

        # The first claimant rolls back: the message is still to be applied, by the other.
        claimed.clear()
        inside.clear()
        failing = asyncio.create_task(apply(first, "m2", "third", fail=True))
        await inside.wait()
        await asyncio.gather(failing, apply(second, "m2", "fourth"))
        assert claimed == ["fourth"]
    finally:
        await first.close()
        await second.close()


async def test_a_row_read_for_update_waits_for_the_other_writer_on_postgres(postgres_url: str) -> None:
    """Where several processes share the store, a handler's read locks its rows until it commits
    (`Transaction.row_lock`), so two replicas never both decide on one request from a stale read."""
    first, second = PostgresStore(postgres_url, "svc", NOTES), PostgresStore(postgres_url, "svc", NOTES)
    await first.open()
    await second.open()
    try:
        async with first.transaction(NOW) as tx:
            await note(tx, "r", "QUOTING")
        order: list[str] = []

        async def decide(store: Store, name: str) -> None:
            async with store.transaction(NOW) as tx:
                row = await tx.fetchone(f"SELECT body FROM notes WHERE key = 'r'{tx.row_lock()}")
                assert row is not None
                if row["body"] == "QUOTING":
                    await asyncio.sleep(0.3)
                    await tx.execute("UPDATE notes SET body = ? WHERE key = 'r'", (f"ANSWERED by {name}",))
                    order.append(name)

        await asyncio.gather(decide(first, "first"), decide(second, "second"))
        assert len(order) == 1, order
        async with second.transaction(NOW) as tx:
            assert tx.row_lock(skip_locked=True) == " FOR UPDATE SKIP LOCKED"
    finally:
        await first.close()
        await second.close()


def test_sqlite_transactions_lock_no_rows(tmp_path: Path) -> None:
    from shared.bus.sqlite import SqliteTransaction

    assert not SqliteTransaction.LOCKS_ROWS and PostgresTransaction.LOCKS_ROWS


# -- values as the services store them -------------------------------------------------------------------


async def test_scheduler_times_keep_their_microseconds(stores: Stores) -> None:
    """Epoch seconds with microseconds need 8-byte floats (PostgreSQL's REAL has 4)."""
    store = stores(scheduler_tables.SCHEMA, "scheduler")
    await store.open()
    start = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    reservation = Reservation("s1", start, start + timedelta(hours=1), 2, 4, 0)
    try:
        async with store.transaction(NOW) as tx:
            await scheduler_tables.insert_hold(tx, "p", reservation, "r1", "alice", 0, NOW, {"in": None})
            row = await scheduler_tables.get(tx, "s1")
        assert row is not None
        assert (row.state, row.start, row.end, row.sources) == (
            ReservationState.HELD,
            start,
            start + timedelta(hours=1),
            {"in": None},
        )
        assert await scheduler_tables.active(store, "p") == [reservation]
        async with store.transaction(NOW) as tx:
            assert await scheduler_tables.record_preparation(tx, "s1", 1.5, {"fetch": 1.5})
            assert not await scheduler_tables.record_preparation(tx, "s1", 9.0, {})
    finally:
        await store.close()


# -- PostgreSQL alone: a database on the network -----------------------------------------------------------


async def test_a_postgres_store_replaces_connections_the_server_cut(postgres_url: str) -> None:
    """The database restarts or an operator ends the store's sessions: the transaction (or read) in
    flight fails, and the next one runs on a new connection."""
    store = PostgresStore(postgres_url, "svc", NOTES)
    await store.open()
    try:
        with psycopg.connect(postgres_url, autocommit=True) as other:
            cut = other.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'eb-svc'"
            ).fetchall()
        assert cut == [(True,), (True,)]  # the writer's and the reader's
        with pytest.raises(psycopg.OperationalError):
            async with store.transaction(NOW) as tx:
                await note(tx, "lost")
        with pytest.raises(psycopg.OperationalError):
            await store.read("SELECT key FROM notes")
        async with store.transaction(NOW) as tx:
            await note(tx, "kept")
        assert await keys(store) == ["kept"]
    finally:
        await store.close()


async def test_a_postgres_database_that_does_not_sort_text_bytewise_is_refused(
    postgres: PostgresServer,
) -> None:
    url = postgres.database(icu_locale="en-US")
    store = PostgresStore(url, "svc", NOTES)
    with pytest.raises(RuntimeError, match=r"collation is ICU 'en-US'.*LOCALE 'C'"):
        await store.open()
    await store.close()
