"""Bounded streams and the start-up check against a real nats-server: the streams carry their byte
limits, a stream past 80 % is warned about, and a message the stream lost after confirming it (a
crash of its machine, here the stream deleted and made anew) is published again when the service
starts, while one it still holds is not stored twice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from shared import subjects
from shared.bus.runtime import ServiceRuntime
from shared.bus.sqlite import SqliteStore
from shared.bus.store import Transaction
from shared.bus.streams import StreamLimits, ensure_streams
from shared.bus.upkeep import reconcile_outbox, stream_uses, upkeep_loop, warn_filling
from shared.bus.wiring import Wiring
from shared.telemetry import setup_tracing

EVENT = "eb.sessions.o.s1.RUNNING"


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[nats.NATS]:
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


def runtime_on(nats_url: str, path: Path) -> ServiceRuntime:
    return ServiceRuntime(
        Wiring("svc"),
        nats_url,
        SqliteStore(path, ""),
        setup_tracing("svc"),
        stream_limits=StreamLimits(2**22, 2**23),
    )


async def stored(nc: nats.NATS, subject: str) -> int:
    info = await nc.jetstream().stream_info(subjects.EVENTS_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_a_message_the_stream_lost_is_published_again_at_start(
    nats_url: str, tmp_path: Path, nc: nats.NATS, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = runtime_on(nats_url, tmp_path / "svc.sqlite")
    await runtime.start()
    try:

        async def say(tx: Transaction) -> None:
            await tx.publish(EVENT, b"{}", "phase:s1:RUNNING")

        await runtime.unit_of_work(say)
        assert await stored(nc, EVENT) == 1
        info = await nc.jetstream().stream_info(subjects.EVENTS_STREAM)
        assert info.config.max_bytes == 2**23
    finally:
        await runtime.stop()

    # The stream loses what it had confirmed: the outbox row stays marked sent.
    await nc.jetstream().delete_stream(subjects.EVENTS_STREAM)
    await ensure_streams(nc.jetstream())
    assert await stored(nc, EVENT) == 0

    restarted = runtime_on(nats_url, tmp_path / "svc.sqlite")
    with caplog.at_level(logging.WARNING, logger="shared.bus.upkeep"):
        await restarted.start()
    try:
        assert await stored(nc, EVENT) == 1
        assert any("had lost 1 of the 1" in r.getMessage() for r in caplog.records)
        # Checked again, the message the stream holds is a duplicate: nothing is stored twice.
        again = await reconcile_outbox(restarted.jetstream, restarted.store, "svc")
        assert (again.checked, again.restored, again.failed) == (1, 0, 0)
        assert await stored(nc, EVENT) == 1
    finally:
        await restarted.stop()


async def test_a_stream_past_four_fifths_of_its_bytes_is_warned_about(
    nc: nats.NATS, caplog: pytest.LogCaptureFixture
) -> None:
    js = nc.jetstream()
    # The smallest limit the settings allow (1 MiB), filled to 85 %.
    await ensure_streams(js, StreamLimits(commands_max_bytes=2**20, events_max_bytes=2**20))
    body = b"x" * 1000
    for i in range(int(0.85 * 2**20 / 1100)):
        await js.publish(f"eb.sessions.o.s{i}.RUNNING", body)
    with caplog.at_level(logging.WARNING, logger="shared.bus.upkeep"):
        full = warn_filling("svc", await stream_uses(js))
    assert [u.stream for u in full] == [subjects.EVENTS_STREAM]
    assert 0.8 <= full[0].share < 1.0
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "stream_filling"]
    assert "EB_EVENTS_MAX_BYTES" in record.getMessage()


async def test_the_upkeep_loop_truncates_the_wal_and_checks_the_streams(
    nc: nats.NATS, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    js = nc.jetstream()
    await ensure_streams(js, StreamLimits(commands_max_bytes=2**20, events_max_bytes=2**20))
    for i in range(int(0.9 * 2**20 / 1100)):
        await js.publish(f"eb.sessions.o.s{i}.RUNNING", b"x" * 1000)
    store = SqliteStore(tmp_path / "svc.sqlite", "CREATE TABLE IF NOT EXISTS notes (body TEXT);")
    await store.open()
    try:
        async with store.transaction() as tx:
            await tx.executemany("INSERT INTO notes VALUES (?)", [("y" * 500,)] * 2000)
        assert wal_size(store.path) > 0
        stopping = asyncio.Event()
        with caplog.at_level(logging.WARNING, logger="shared.bus.upkeep"):
            loop = asyncio.create_task(
                upkeep_loop("svc", store, js, stopping, every={"checkpoint": 0.1, "fill": 0.1})
            )
            await asyncio.sleep(0.5)
            stopping.set()
            await asyncio.wait_for(loop, 2.0)
        assert wal_size(store.path) == 0
        assert any(getattr(r, "event", None) == "stream_filling" for r in caplog.records)
    finally:
        await store.close()


def wal_size(database: Path) -> int:
    return Path(f"{database}-wal").stat().st_size
