"""`SqliteStore(MEMORY)`: the same transactions and outbox as a store on disk, with no file (handler
tests)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.bus.sqlite import MEMORY, SqliteStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCHEMA = "CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY);"


async def test_a_store_in_memory_commits_rolls_back_and_writes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a path taken literally would create ./:memory: here
    store = SqliteStore(MEMORY, SCHEMA)
    await store.open()
    async with store.transaction(NOW) as tx:
        await tx.execute("INSERT INTO notes(id) VALUES ('kept')")
        await tx.publish("eb.dead.x", b"{}", "m1", trace_headers={})
    assert [row.msg_id for row in tx.outbox] == ["m1"]
    with pytest.raises(RuntimeError, match="undo"):
        async with store.transaction(NOW) as tx:
            await tx.execute("INSERT INTO notes(id) VALUES ('undone')")
            await tx.publish("eb.dead.x", b"{}", "m2", trace_headers={})
            raise RuntimeError("undo")
    assert tx.outbox == []
    assert [row[0] for row in await store.read("SELECT id FROM notes")] == ["kept"]
    assert [row.msg_id for row in await store.unsent()] == ["m1"]
    await store.checkpoint()  # nothing to move, and no file to open
    await store.close()
    assert not await asyncio.to_thread(lambda: list(tmp_path.iterdir()))


async def test_each_store_in_memory_has_a_database_of_its_own() -> None:
    first, second = SqliteStore(MEMORY, SCHEMA), SqliteStore(MEMORY, SCHEMA)
    await first.open()
    await second.open()
    async with first.transaction(NOW) as tx:
        await tx.execute("INSERT INTO notes(id) VALUES ('first only')")
    assert await second.read("SELECT id FROM notes") == []
    await first.close()
    await second.close()
