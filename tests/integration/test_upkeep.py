"""Bounded streams and the start-up check against a real nats-server: the streams carry their byte
limits, a stream past 80 % is warned about (a log line, and one `StreamFilling` event on
``eb.ops.<service>.stream_filling`` per stream, step and hour, however many checks and services
see it), an events stream made before that subject existed is given it, and a message the stream
lost after confirming it (a crash of its machine, here the stream deleted and made anew) is
published again when the service starts, while one it still holds is not stored twice."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from shared import subjects
from shared.bus import upkeep
from shared.bus.runtime import ServiceRuntime
from shared.bus.sqlite import SqliteStore
from shared.bus.store import Transaction
from shared.bus.streams import StreamLimits, StreamsNotReady, check_streams, ensure_streams, stream_configs
from shared.bus.upkeep import reconcile_outbox, stream_uses, upkeep_loop, warn_filling
from shared.bus.wiring import Wiring
from shared.messages import StreamFilling
from shared.telemetry import setup_tracing

EVENT = "eb.sessions.o.s1.RUNNING"


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[nats.NATS]:
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


#: The smallest byte limits the settings allow (1 MiB).
SMALL = StreamLimits(commands_max_bytes=2**20, events_max_bytes=2**20)


async def fill(js: JetStreamContext, share: float) -> None:
    """Make the streams `SMALL` and fill the events stream to about ``share`` of it."""
    await ensure_streams(js, SMALL)
    for i in range(int(share * 2**20 / 1100)):  # a stored message takes about 1100 bytes
        await js.publish(f"eb.sessions.o.s{i}.RUNNING", b"x" * 1000)


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
    # The smallest limit the settings allow, filled to 85 %.
    await fill(js, 0.85)
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
    await fill(js, 0.9)
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


def announcing(nats_url: str, path: Path, service: str) -> ServiceRuntime:
    """A service whose wiring declares the upkeep's event, checking the streams ten times a second."""
    return ServiceRuntime(
        Wiring(service, publishes=upkeep.publications(service)),
        nats_url,
        SqliteStore(path / f"{service}.sqlite", ""),
        setup_tracing(service),
        stream_limits=SMALL,
        upkeep_every={"fill": 0.1},
    )


async def outside_an_hours_end() -> None:
    now = datetime.now(UTC)
    if now.minute == 59 and now.second >= 50:
        await asyncio.sleep(61 - now.second)


async def run_for(runtime: ServiceRuntime, seconds: float) -> None:
    await runtime.start()
    try:
        await asyncio.sleep(seconds)
    finally:
        await runtime.stop()


async def test_a_filling_stream_is_announced_once_on_the_operations_subject(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    js = nc.jetstream()
    await fill(js, 0.85)
    heard: list[StreamFilling] = []
    await outside_an_hours_end()  # the event's id names the hour

    async def hear(msg: nats.aio.msg.Msg) -> None:
        heard.append(StreamFilling.model_validate_json(msg.data))

    await nc.subscribe(subjects.OPS.filter(), cb=hear)
    # About ten checks, then a restart (the outbox remembers), then a second service within the
    # stream's duplicate window (the same Nats-Msg-Id: the stream keeps one).
    await run_for(announcing(nats_url, tmp_path, "svc"), 1.0)
    await run_for(announcing(nats_url, tmp_path, "svc"), 0.5)
    await run_for(announcing(nats_url, tmp_path, "other"), 0.5)
    await nc.flush()

    assert await stored(nc, subjects.OPS.filter()) == 1
    subject = subjects.ops_event("svc", subjects.OpsFact.STREAM_FILLING)
    assert await stored(nc, subject) == 1
    event = StreamFilling.model_validate_json((await js.get_last_msg(subjects.EVENTS_STREAM, subject)).data)
    assert (event.stream, event.max_bytes, event.threshold) == (subjects.EVENTS_STREAM, 2**20, 0.8)
    assert 0.8 <= event.fraction < 0.9 and event.bytes > 0.8 * 2**20 and event.messages > 700
    # Live, core NATS shows every copy the stream dropped: the one the restart's start-up check
    # sent again (`reconcile_outbox`) and the second service's. Each service noticed it once.
    assert len(heard) == 3
    assert {e.stream for e in heard} == {subjects.EVENTS_STREAM}
    assert len({e.noticed_at for e in heard}) == 2


async def test_an_events_stream_made_before_the_operations_subject_is_given_it(nc: nats.NATS) -> None:
    js = nc.jetstream()
    (events,) = [c for c in stream_configs() if c.name == subjects.EVENTS_STREAM]
    older = [s for s in events.subjects or () if s != subjects.OPS.filter()]
    assert len(older) == len(events.subjects or ()) - 1
    await ensure_streams(js)
    await js.update_stream(events, subjects=older)
    with pytest.raises(StreamsNotReady, match=re.escape(subjects.OPS.filter())):
        await check_streams(js)  # a service that may not update streams says what is missing
    await ensure_streams(js)  # what the operator's `broker streams` and a managing service run
    assert subjects.OPS.filter() in ((await js.stream_info(subjects.EVENTS_STREAM)).config.subjects or ())
    await check_streams(js)


def wal_size(database: Path) -> int:
    return Path(f"{database}-wal").stat().st_size
