"""The exactly-once runtime against a real nats-server: dedup, inbox, retries, dead letters, relay,
and consumer reconciliation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.js.api import ConsumerConfig

from shared import subjects
from shared.bus.runtime import Incoming, ServiceRuntime
from shared.bus.sqlite import SqliteStore
from shared.bus.store import OutboxRow, Store, Transaction
from shared.bus.streams import ensure_streams
from shared.bus.wiring import Consumer, Route, Wiring
from shared.telemetry import setup_tracing

SCHEMA = "CREATE TABLE IF NOT EXISTS applied (msg_id TEXT, body TEXT);"
SUBJECT = "eb.launcher.test.cmd.work"


class Recorder:
    def __init__(self, fail_times: int = 0) -> None:
        self.calls = 0
        self.fail_times = fail_times
        self.dead: list[str] = []

    async def handle(self, tx: Transaction, msg: Incoming) -> None:
        self.calls += 1
        if self.calls <= self.fail_times:
            raise RuntimeError("boom")
        await tx.execute("INSERT INTO applied(msg_id, body) VALUES (?, ?)", (msg.msg_id, msg.body.decode()))
        await tx.publish(f"eb.sessions.o.s1.{msg.body.decode()}", b"{}", f"out:{msg.msg_id}")

    async def on_dead(self, tx: Transaction, msg: Incoming, reason: str) -> None:
        self.dead.append(reason)


async def start_runtime(
    nats_url: str, tmp_path: Path, recorder: Recorder, *, ack_wait: float = 5, max_deliver: int = 3
) -> ServiceRuntime:
    store = SqliteStore(tmp_path / "svc.sqlite", SCHEMA)
    work = Route(subjects.LAUNCHER_COMMAND, recorder.handle, None, {"pool": "test"})
    runtime = ServiceRuntime(
        Wiring("svc", consumers=(Consumer("svc-work", (work,), on_dead=recorder.on_dead),)),
        nats_url,
        store,
        setup_tracing("svc"),
        ack_wait_s=ack_wait,
        max_deliver=max_deliver,
    )
    await runtime.start()
    return runtime


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[nats.NATS]:
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


async def applied_rows(store: Store) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in await store.read("SELECT msg_id, body FROM applied")]


async def eventually(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def count_subject(nc: nats.NATS, stream: str, subject: str) -> int:
    info = await nc.jetstream().stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_same_message_id_twice_is_applied_once(nats_url: str, tmp_path: Path, nc: nats.NATS) -> None:
    recorder = Recorder()
    runtime = await start_runtime(nats_url, tmp_path, recorder)
    try:
        js = nc.jetstream()
        first = await js.publish(SUBJECT, b"ACCEPTED", headers={"Nats-Msg-Id": "m-1"})
        second = await js.publish(SUBJECT, b"ACCEPTED", headers={"Nats-Msg-Id": "m-1"})
        assert second.duplicate and second.seq == first.seq

        async def one_row() -> bool:
            return len(await applied_rows(runtime.store)) == 1

        await eventually(one_row)
        await asyncio.sleep(0.5)
        assert await applied_rows(runtime.store) == [("m-1", "ACCEPTED")]
        assert await count_subject(nc, subjects.EVENTS_STREAM, "eb.sessions.o.s1.ACCEPTED") == 1
    finally:
        await runtime.stop()


async def test_inbox_skips_a_message_already_processed(nats_url: str, tmp_path: Path, nc: nats.NATS) -> None:
    """A redelivery after a crash between commit and ack finds its id in the inbox and is only acked."""
    recorder = Recorder()
    runtime = await start_runtime(nats_url, tmp_path, recorder)
    try:
        async with runtime.store.transaction() as tx:
            await tx.claim("m-done")
        await nc.jetstream().publish(SUBJECT, b"RUNNING", headers={"Nats-Msg-Id": "m-done"})
        await nc.jetstream().publish(SUBJECT, b"RELEASING", headers={"Nats-Msg-Id": "m-next"})

        async def next_applied() -> bool:
            return len(await applied_rows(runtime.store)) == 1

        await eventually(next_applied)
        assert await applied_rows(runtime.store) == [("m-next", "RELEASING")]
        assert recorder.calls == 1
        info = await nc.jetstream().consumer_info(subjects.COMMANDS_STREAM, "svc-work")
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await runtime.stop()


async def test_transient_failures_are_retried_then_applied(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    recorder = Recorder(fail_times=2)
    runtime = await start_runtime(nats_url, tmp_path, recorder, max_deliver=5)
    try:
        await nc.jetstream().publish(SUBJECT, b"PREPARING", headers={"Nats-Msg-Id": "m-retry"})

        async def applied() -> bool:
            return len(await applied_rows(runtime.store)) == 1

        await eventually(applied, timeout=15)
        assert recorder.calls == 3
        assert recorder.dead == []
    finally:
        await runtime.stop()


async def test_poison_message_goes_to_dead_letters_with_reason(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    recorder = Recorder(fail_times=100)
    runtime = await start_runtime(nats_url, tmp_path, recorder, max_deliver=2)
    try:
        await nc.jetstream().publish(SUBJECT, b"AVAILABLE", headers={"Nats-Msg-Id": "m-poison"})

        async def buried() -> bool:
            return await count_subject(nc, subjects.EVENTS_STREAM, subjects.dead_letter("svc")) == 1

        await eventually(buried, timeout=15)
        letter = await nc.jetstream().get_last_msg(subjects.EVENTS_STREAM, subjects.dead_letter("svc"))
        body = json.loads(letter.data or b"{}")
        assert body["reason"] == "RuntimeError: boom" and body["deliveries"] == 2
        assert recorder.dead == ["RuntimeError: boom"]
        info = await nc.jetstream().consumer_info(subjects.COMMANDS_STREAM, "svc-work")
        assert info.num_ack_pending == 0
    finally:
        await runtime.stop()


async def test_relay_resends_rows_left_unsent_by_a_crash(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    store = SqliteStore(tmp_path / "svc.sqlite", SCHEMA)
    await store.open()
    # As if the process died after committing but before publishing: the row is old and unsent.
    async with store.transaction(datetime.now(UTC) - timedelta(seconds=30)) as tx:
        await tx.publish("eb.sessions.o.s2.COMPLETED", b"{}", "s2:COMPLETED")
    await store.close()

    recorder = Recorder()
    runtime = await start_runtime(nats_url, tmp_path, recorder)
    try:

        async def published() -> bool:
            return await count_subject(nc, subjects.EVENTS_STREAM, "eb.sessions.o.s2.COMPLETED") == 1

        await eventually(published, timeout=10)
        assert await runtime.store.unsent() == []
    finally:
        await runtime.stop()


async def test_existing_consumer_is_reconciled_to_declared_settings(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    await js.add_consumer(
        subjects.COMMANDS_STREAM,
        ConsumerConfig(
            durable_name="svc-work", filter_subject="eb.launcher.test.cmd.*", ack_wait=30, max_deliver=9
        ),
    )
    runtime = await start_runtime(nats_url, tmp_path, Recorder(), ack_wait=7, max_deliver=4)
    try:
        info = await js.consumer_info(subjects.COMMANDS_STREAM, "svc-work")
        assert info.config.ack_wait == 7 and info.config.max_deliver == 4
    finally:
        await runtime.stop()


class SlowRecorder(Recorder):
    async def handle(self, tx: Transaction, msg: Incoming) -> None:
        await asyncio.sleep(2.5)
        await super().handle(tx, msg)


async def test_handler_slower_than_ack_wait_is_applied_once(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    recorder = SlowRecorder()
    runtime = await start_runtime(nats_url, tmp_path, recorder, ack_wait=1, max_deliver=5)
    try:
        await nc.jetstream().publish(SUBJECT, b"RUNNING", headers={"Nats-Msg-Id": "m-slow"})

        async def done() -> bool:
            info = await nc.jetstream().consumer_info(subjects.COMMANDS_STREAM, "svc-work")
            return len(await applied_rows(runtime.store)) == 1 and info.num_ack_pending == 0

        await eventually(done, timeout=15)
        await asyncio.sleep(1.5)  # a redelivery, if any, would have arrived by now
        assert recorder.calls == 1
        assert await applied_rows(runtime.store) == [("m-slow", "RUNNING")]
        info = await nc.jetstream().consumer_info(subjects.COMMANDS_STREAM, "svc-work")
        assert info.num_redelivered == 0
    finally:
        await runtime.stop()


async def test_same_message_outside_the_duplicate_window_is_caught_by_the_inbox(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    """A client re-sending a request id after the stream forgot it: the inbox still applies it once."""
    recorder = Recorder()
    runtime = await start_runtime(nats_url, tmp_path, recorder)
    try:
        js = nc.jetstream()
        await js.publish(SUBJECT, b"WAITING", headers={"Nats-Msg-Id": "m-again"})

        async def first() -> bool:
            return len(await applied_rows(runtime.store)) == 1

        await eventually(first)
        # Shrink the window so the stream forgets the id, as it would after 10 minutes.
        config = (await js.stream_info(subjects.COMMANDS_STREAM)).config
        config.duplicate_window = 1.0
        await js.update_stream(config)
        await asyncio.sleep(1.5)
        again = await js.publish(SUBJECT, b"WAITING", headers={"Nats-Msg-Id": "m-again"})
        assert not again.duplicate

        async def consumed() -> bool:
            info = await js.consumer_info(subjects.COMMANDS_STREAM, "svc-work")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually(consumed)
        assert recorder.calls == 1
        assert await applied_rows(runtime.store) == [("m-again", "WAITING")]
    finally:
        await runtime.stop()


async def outbox_rows(store: Store) -> int:
    return int((await store.read("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL"))[0][0])


async def test_rows_the_server_refuses_are_dead_lettered_and_the_others_sent(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    """Rows larger than the server's max_payload leave the outbox for the dead-letter subject, with
    their reason, at once; the rows between them are sent; nothing is retried for ever."""
    store = SqliteStore(tmp_path / "svc.sqlite", SCHEMA)
    await store.open()
    too_large = b"x" * (nc.max_payload + 1)
    async with store.transaction(datetime.now(UTC) - timedelta(seconds=30)) as tx:
        for index in range(6):
            if index % 2:
                await tx.publish(f"eb.sessions.o.big{index}.COMPLETED", too_large, f"big{index}:COMPLETED")
            else:
                await tx.publish(f"eb.sessions.o.ok{index}.COMPLETED", b"{}", f"ok{index}:COMPLETED")
    await store.close()

    refused: list[tuple[str, str]] = []

    async def on_refused(tx: Transaction, row: OutboxRow, reason: str) -> None:
        refused.append((row.subject, reason))

    runtime = ServiceRuntime(
        Wiring("svc", on_refused=on_refused),
        nats_url,
        SqliteStore(tmp_path / "svc.sqlite", SCHEMA),
        setup_tracing("svc"),
    )
    await runtime.start()
    try:

        async def emptied() -> bool:
            return await outbox_rows(runtime.store) == 0

        await eventually(emptied, timeout=10)
        assert await count_subject(nc, subjects.EVENTS_STREAM, subjects.dead_letter("svc")) == 3
        for index in (0, 2, 4):
            assert await count_subject(nc, subjects.EVENTS_STREAM, f"eb.sessions.o.ok{index}.COMPLETED") == 1
        for index in (1, 3, 5):
            assert await count_subject(nc, subjects.EVENTS_STREAM, f"eb.sessions.o.big{index}.COMPLETED") == 0
        letter = await nc.jetstream().get_last_msg(subjects.EVENTS_STREAM, subjects.dead_letter("svc"))
        body = json.loads(letter.data or b"{}")
        assert body["subject"] == "eb.sessions.o.big5.COMPLETED"
        assert "larger than the server's maximum payload" in body["reason"]
        assert len(body["payload_preview"]) <= 512
        assert sorted(subject for subject, _ in refused) == [
            f"eb.sessions.o.big{i}.COMPLETED" for i in (1, 3, 5)
        ]
        # The rows are gone, not merely marked: a restart finds nothing to resend.
        assert (await runtime.store.read("SELECT COUNT(*) FROM outbox WHERE subject LIKE '%big%'"))[0][0] == 0
    finally:
        await runtime.stop()


POISON_SCHEMA = """
CREATE TABLE IF NOT EXISTS parents (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS children (
    msg_id TEXT,
    parent TEXT REFERENCES parents(id) DEFERRABLE INITIALLY DEFERRED
);
"""


class CommitBreaker:
    """Applies every message; a message whose body is ``poison`` writes a row that only the COMMIT
    finds wrong (a deferred foreign key), so the batch it is in cannot commit at all."""

    def __init__(self) -> None:
        self.dead: list[str] = []

    async def handle(self, tx: Transaction, msg: Incoming) -> None:
        parent = "missing" if msg.body == b"poison" else None
        await tx.execute("INSERT INTO children(msg_id, parent) VALUES (?, ?)", (msg.msg_id, parent))

    async def on_dead(self, tx: Transaction, msg: Incoming, reason: str) -> None:
        self.dead.append(msg.msg_id)


async def test_a_batch_that_cannot_commit_is_retried_message_by_message(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    breaker = CommitBreaker()
    work = Route(subjects.LAUNCHER_COMMAND, breaker.handle, None, {"pool": "test"})
    runtime = ServiceRuntime(
        Wiring("svc", consumers=(Consumer("svc-work", (work,), on_dead=breaker.on_dead),)),
        nats_url,
        SqliteStore(tmp_path / "svc.sqlite", POISON_SCHEMA),
        setup_tracing("svc"),
        ack_wait_s=5,
        max_deliver=2,
    )
    js = nc.jetstream()
    await ensure_streams(js)
    # Published before the runtime starts, so that the first fetch takes them as one batch.
    for index in range(5):
        body = b"poison" if index == 2 else b"fine"
        await js.publish(SUBJECT, body, headers={"Nats-Msg-Id": f"m-{index}"})
    await runtime.start()
    try:

        async def settled() -> bool:
            buried = await count_subject(nc, subjects.EVENTS_STREAM, subjects.dead_letter("svc")) == 1
            info = await js.consumer_info(subjects.COMMANDS_STREAM, "svc-work")
            return buried and info.num_ack_pending == 0 and info.num_pending == 0

        await eventually(settled, timeout=20)
        rows = await runtime.store.read("SELECT msg_id FROM children ORDER BY msg_id")
        assert [r[0] for r in rows] == ["m-0", "m-1", "m-3", "m-4"]
        assert breaker.dead == ["m-2"]
        letter = await js.get_last_msg(subjects.EVENTS_STREAM, subjects.dead_letter("svc"))
        assert "FOREIGN KEY" in json.loads(letter.data or b"{}")["reason"]
    finally:
        await runtime.stop()


async def test_a_row_the_stream_refuses_is_found_by_the_relay_and_dead_lettered(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    """Under max_payload but over the stream's max_msg_size: the stream answers 400, which nats-py's
    asynchronous publish never reports; the relay's probe does, and the row leaves the outbox."""
    runtime = await start_runtime(nats_url, tmp_path, Recorder())
    js = nc.jetstream()
    config = (await js.stream_info(subjects.EVENTS_STREAM)).config
    original = config.max_msg_size
    config.max_msg_size = 4096
    await js.update_stream(config)
    try:
        async with runtime.store.transaction(datetime.now(UTC) - timedelta(seconds=30)) as tx:
            await tx.publish("eb.sessions.o.big.COMPLETED", b"x" * 10_000, "big:COMPLETED")
            await tx.publish("eb.sessions.o.ok.COMPLETED", b"{}", "ok:COMPLETED")

        async def emptied() -> bool:
            return await outbox_rows(runtime.store) == 0

        await eventually(emptied, timeout=20)
        assert await count_subject(nc, subjects.EVENTS_STREAM, "eb.sessions.o.ok.COMPLETED") == 1
        assert await count_subject(nc, subjects.EVENTS_STREAM, "eb.sessions.o.big.COMPLETED") == 0
        letter = await js.get_last_msg(subjects.EVENTS_STREAM, subjects.dead_letter("svc"))
        body = json.loads(letter.data or b"{}")
        assert body["subject"] == "eb.sessions.o.big.COMPLETED"
        assert "BadRequestError" in body["reason"]
    finally:
        config.max_msg_size = original
        await js.update_stream(config)
        await runtime.stop()
