"""The settings of bounded growth and durability where they take effect: the streams' byte limits,
the fill warning, SQLite's synchronous mode and WAL truncation, nats-server's sync interval."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared import subjects
from shared.bus.sqlite import SqliteStore
from shared.bus.streams import StreamLimits, stream_configs
from shared.bus.upkeep import FILL_WARNING, StreamUse, announce_filling, filling, filling_msg_id, step
from shared.messages import StreamFilling
from shared.ops.secured import SecuredBus
from shared.settings import Settings

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCHEMA = "CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, body TEXT);"


def test_each_stream_has_its_byte_limit_beside_its_age() -> None:
    configs = {
        c.name: c for c in stream_configs(StreamLimits(commands_max_bytes=2**25, events_max_bytes=2**26))
    }
    assert configs[subjects.COMMANDS_STREAM].max_bytes == 2**25
    assert configs[subjects.EVENTS_STREAM].max_bytes == 2**26
    assert all(c.max_age and c.max_age > 0 for c in configs.values())
    defaults = {c.name: c.max_bytes for c in stream_configs()}
    assert defaults == {subjects.COMMANDS_STREAM: 2**30, subjects.EVENTS_STREAM: 4 * 2**30}


def test_the_limits_and_durability_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EB_COMMANDS_MAX_BYTES", str(2**24))
    monkeypatch.setenv("EB_EVENTS_MAX_BYTES", str(2**27))
    monkeypatch.setenv("EB_DURABILITY", "safe")
    settings = Settings()
    assert StreamLimits.of(settings) == StreamLimits(2**24, 2**27)
    assert settings.sqlite_synchronous == "FULL"
    assert Settings(durability="fast").sqlite_synchronous == "NORMAL"


@pytest.mark.parametrize(
    "field",
    [
        {"durability": "paranoid"},
        {"events_max_bytes": 1000},
        {"retention_days": 0},
        {"max_holds_per_owner": 0},
        {"max_live_sessions_per_owner": 10**9},
    ],
)
def test_settings_out_of_range_are_refused(field: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate(field)


def test_a_stream_past_four_fifths_of_its_bytes_is_filling() -> None:
    uses = [
        StreamUse("a", int(0.79 * 1000), 1000),
        StreamUse("b", int(FILL_WARNING * 1000), 1000),
        StreamUse("c", 10**12, -1),  # no limit: never filling
    ]
    assert [u.stream for u in filling(uses)] == ["b"]


@pytest.mark.parametrize(
    ("used", "expected"), [(800, 0.8), (899, 0.8), (900, 0.9), (999, 0.9), (1000, 1.0), (1200, 1.0)]
)
def test_a_filling_stream_is_announced_at_each_tenth_from_the_warning_on(used: int, expected: float) -> None:
    assert step(StreamUse("s", used, 1000)) == expected


def test_a_filling_event_id_names_the_stream_the_step_and_the_hour() -> None:
    at = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    use = StreamUse("s", 850, 1000)
    assert filling_msg_id(use, at) == filling_msg_id(StreamUse("s", 899, 1000), at + timedelta(minutes=55))
    assert filling_msg_id(use, at) != filling_msg_id(use, at + timedelta(hours=1))
    assert filling_msg_id(use, at) != filling_msg_id(StreamUse("s", 900, 1000), at)
    assert filling_msg_id(use, at) != filling_msg_id(StreamUse("t", 850, 1000), at)


async def test_a_service_announces_a_filling_stream_once_per_step_and_hour(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "svc.sqlite", "")
    await store.open()
    at = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    full = [StreamUse(subjects.EVENTS_STREAM, 850, 1000, messages=7)]
    try:
        queued = []
        for now, use in ((at, full), (at + timedelta(minutes=30), full), (at + timedelta(hours=1), full)):
            async with store.transaction(now) as tx:
                queued.append(await announce_filling(tx, "svc", use))
        async with store.transaction(at) as tx:
            queued.append(await announce_filling(tx, "svc", [StreamUse(subjects.EVENTS_STREAM, 950, 1000)]))
            (row,) = tx.outbox
        assert queued == [1, 0, 1, 1]
        assert row.subject == subjects.ops_event("svc", subjects.OpsFact.STREAM_FILLING)
        event = StreamFilling.model_validate_json(row.payload)
        assert (event.threshold, event.fraction, event.bytes, event.max_bytes) == (0.9, 0.95, 950, 1000)
    finally:
        await store.close()


@pytest.mark.parametrize(("synchronous", "pragma"), [("NORMAL", 1), ("FULL", 2)])
async def test_the_store_syncs_as_its_durability_says(tmp_path: Path, synchronous: str, pragma: int) -> None:
    store = SqliteStore(tmp_path / "s.sqlite", SCHEMA, synchronous=synchronous)
    await store.open()
    try:
        assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == pragma
    finally:
        await store.close()


def test_a_store_refuses_an_unknown_synchronous_mode() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStore(":memory:", SCHEMA, synchronous="OFF; DROP TABLE notes")


def wal_size(database: Path) -> int:
    return Path(f"{database}-wal").stat().st_size


async def test_a_truncating_checkpoint_empties_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path, SCHEMA)
    await store.open()
    try:
        async with store.transaction(NOW) as tx:
            await tx.executemany(
                "INSERT INTO notes VALUES (?, ?)", [(str(i), "x" * 500) for i in range(2000)]
            )
        assert wal_size(path) > 100_000
        await store.checkpoint()  # passive: copies, leaves the file as large
        assert wal_size(path) > 100_000
        busy, _, _ = await store.checkpoint(truncate=True) or (1, 0, 0)
        assert busy == 0 and wal_size(path) == 0
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 2000
    finally:
        await store.close()


async def test_sent_since_lists_only_what_the_stream_confirmed_lately(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite", SCHEMA)
    await store.open()
    try:
        async with store.transaction(NOW) as tx:
            for name in ("old", "recent", "unsent"):
                await tx.publish(f"eb.dead.{name}", b"{}", name, trace_headers={})
        ids = {row.msg_id: row.id for row in tx.outbox}
        await store.mark_sent([ids["old"]], NOW - timedelta(hours=1))
        await store.mark_sent([ids["recent"]], NOW)
        assert [r.msg_id for r in await store.sent_since(NOW - timedelta(minutes=3))] == ["recent"]
    finally:
        await store.close()


def test_safe_durability_makes_nats_server_sync_every_write(tmp_path: Path) -> None:
    bus = SecuredBus(tmp_path)  # its keys are made on first use
    fast = bus.server_config({})
    safe = bus.server_config({}, sync_always=True)
    assert "jetstream" not in fast
    assert safe["jetstream"] == {"sync_interval": "always"}
    assert {k: v for k, v in safe.items() if k != "jetstream"} == fast
