"""The lease on a real PostgreSQL (tests/postgres.py): two stores of one schema, as two processes of
the scheduler or the launcher would open them. The second waits at `open` until the first's lease
goes (closed, or its session ended by the server); a store whose leased connection broke writes
nothing more and says so (`LeaseLost`)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest

from shared.bus import lease as leases
from shared.bus.lease import LeaseLost, lease_key
from shared.bus.postgres import PostgresStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOTES = "CREATE TABLE IF NOT EXISTS notes (key TEXT PRIMARY KEY);"
#: Long enough for a standby to have asked for the lease a few times (every `POLL_S`).
WAITED_S = 4 * leases.POLL_S


@pytest.fixture
async def active(postgres_url: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(postgres_url, "svc", NOTES, lease=True)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def note(store: PostgresStore, key: str) -> None:
    async with store.transaction(NOW) as tx:
        await tx.execute("INSERT INTO notes(key) VALUES (?)", (key,))


async def holder_backends(url: str) -> list[int]:
    """The server processes holding the lease of schema svc."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = %s",
            (lease_key("svc"),),
        )
        return [int(row[0]) for row in await cursor.fetchall()]


async def terminate(url: str, backend: int) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_terminate_backend(%s)", (backend,))


async def test_a_second_store_waits_as_a_standby_until_the_first_closes(
    active: PostgresStore, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=leases.__name__)
    standby = PostgresStore(postgres_url, "svc", NOTES, lease=True)
    opening = asyncio.create_task(standby.open())
    await asyncio.sleep(WAITED_S)
    assert not opening.done(), "two stores held one lease"
    assert "standby: waiting for the svc lease" in caplog.text
    assert caplog.text.count("waiting for the svc lease") == 1, "said once, not at every try"
    await note(active, "by the first")
    await active.close()
    await asyncio.wait_for(opening, 5 * leases.POLL_S)
    try:
        assert "svc: took the lease after waiting as a standby" in caplog.text
        await note(standby, "by the second")
        assert [r["key"] for r in await standby.read("SELECT key FROM notes ORDER BY key")] == [
            "by the first",
            "by the second",
        ]
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            holder = await leases.lease_holder(conn, "svc")
        assert holder is not None and holder.pid == os.getpid()
    finally:
        await standby.close()


async def test_the_standby_takes_over_when_the_server_ends_the_active_session(
    active: PostgresStore, postgres_url: str
) -> None:
    standby = PostgresStore(postgres_url, "svc", NOTES, lease=True)
    opening = asyncio.create_task(standby.open())
    await asyncio.sleep(WAITED_S)
    assert not opening.done()
    [backend] = await holder_backends(postgres_url)
    await terminate(postgres_url, backend)
    await asyncio.wait_for(opening, 5 * leases.POLL_S)
    try:
        assert await holder_backends(postgres_url) not in ([], [backend])
        # The first never writes again: not by reconnecting, not through its reader.
        with pytest.raises(LeaseLost, match="svc store lost its lease"):
            await note(active, "too late")
        with pytest.raises(LeaseLost):
            await note(active, "still too late")
        with pytest.raises(LeaseLost):
            await active.mark_sent([1], NOW)
        await note(standby, "the new writer")
        assert [r["key"] for r in await standby.read("SELECT key FROM notes")] == ["the new writer"]
    finally:
        await standby.close()


async def test_a_lost_lease_is_noticed_while_no_transaction_runs(
    active: PostgresStore, postgres_url: str
) -> None:
    lost = asyncio.create_task(active.lease_lost())
    await asyncio.sleep(2 * leases.CHECK_S)
    assert not lost.done(), "a live lease is not lost"
    [backend] = await holder_backends(postgres_url)
    await terminate(postgres_url, backend)
    error = await asyncio.wait_for(lost, 3 * leases.CHECK_S)
    assert isinstance(error, LeaseLost)
    with pytest.raises(LeaseLost):
        await note(active, "after")
    assert await holder_backends(postgres_url) == []  # nobody reconnected to take it again


async def test_a_transaction_cut_by_the_server_loses_the_lease_at_once(
    active: PostgresStore, postgres_url: str
) -> None:
    [backend] = await holder_backends(postgres_url)
    with pytest.raises(psycopg.OperationalError):
        async with active.transaction(NOW) as tx:
            await tx.execute("INSERT INTO notes(key) VALUES ('half')")
            await terminate(postgres_url, backend)
            await tx.execute("INSERT INTO notes(key) VALUES ('done')")
    assert isinstance(await asyncio.wait_for(active.lease_lost(), 0.5), LeaseLost)
    with pytest.raises(LeaseLost):
        await note(active, "after")
    other = PostgresStore(postgres_url, "svc", NOTES, lease=True)
    await asyncio.wait_for(other.open(), 5 * leases.POLL_S)
    try:
        assert await other.read("SELECT key FROM notes") == []
    finally:
        await other.close()


async def test_a_store_without_a_lease_never_waits_and_still_replaces_a_cut_connection(
    active: PostgresStore, postgres_url: str
) -> None:
    """offers' replicas share the schema without a lease (and the HTTP read model reads it)."""
    free = PostgresStore(postgres_url, "svc", NOTES)
    await asyncio.wait_for(free.open(), 5.0)
    try:
        await note(free, "a")
        lost = asyncio.create_task(free.lease_lost())
        await asyncio.sleep(0.1)
        assert not lost.done()
        lost.cancel()
    finally:
        await free.close()


async def test_a_standby_told_to_stop_leaves_at_once(active: PostgresStore, postgres_url: str) -> None:
    standby = PostgresStore(postgres_url, "svc", NOTES, lease=True)
    stop = asyncio.Event()
    starting = asyncio.create_task(leases.started(standby.open(), stop))
    await asyncio.sleep(WAITED_S)
    stop.set()
    assert await asyncio.wait_for(starting, 1.0) is False
    await standby.close()
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'eb-svc%'"
        )
        row = await cursor.fetchone()
    assert row is not None and row[0] == 2, "the standby's connection stayed open"  # the active's two


async def test_served_raises_when_the_lease_goes(
    active: PostgresStore, postgres_url: str
) -> None:
    stop = asyncio.Event()
    serving = asyncio.create_task(leases.served(stop, active))
    await asyncio.sleep(0.1)
    assert not serving.done()
    [backend] = await holder_backends(postgres_url)
    await terminate(postgres_url, backend)
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(serving, 3 * leases.CHECK_S)


async def test_served_returns_when_stopped(active: PostgresStore) -> None:
    stop = asyncio.Event()
    serving = asyncio.create_task(leases.served(stop, active))
    await asyncio.sleep(0.1)
    assert not serving.done()
    stop.set()
    await asyncio.wait_for(serving, 0.5)


async def test_a_standby_whose_waiting_connection_is_cut_connects_again_and_keeps_waiting(
    active: PostgresStore, postgres_url: str
) -> None:
    standby = PostgresStore(postgres_url, "svc", NOTES, lease=True)
    opening = asyncio.create_task(standby.open())
    await asyncio.sleep(WAITED_S)
    [holder] = await holder_backends(postgres_url)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'eb-svc:%%' AND pid <> %s",
            (holder,),
        )
        [(waiting,)] = await cursor.fetchall()
    await terminate(postgres_url, waiting)
    await asyncio.sleep(WAITED_S)
    assert not opening.done(), "a standby whose connection broke took the lease, or gave up"
    await active.close()
    await asyncio.wait_for(opening, 5 * leases.POLL_S)
    try:
        await note(standby, "after the cut")
        assert await holder_backends(postgres_url) not in ([], [holder], [waiting])
    finally:
        await standby.close()
