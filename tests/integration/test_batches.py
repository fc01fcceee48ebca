"""Batched consumption: a batch is one transaction, each message its own savepoint; the puller is
prompt; and the scheduler's later quotes in a batch plan around its earlier holds."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from services.scheduler import store as scheduler_tables
from services.scheduler.handlers import SchedulerHandlers
from shared import subjects
from shared.bus.acks import DoubleAcks
from shared.bus.pulling import BatchPuller, JetStreamUnreachable
from shared.bus.runtime import Incoming, ServiceRuntime
from shared.bus.sqlite import SqliteStore
from shared.bus.store import Transaction
from shared.bus.streams import ConsumerSpec, ensure_consumer, ensure_streams
from shared.bus.wiring import Consumer, Route, Wiring
from shared.messages import QuoteSlots, SlotsQuoted
from shared.pools import Pool
from shared.subjects import SchedulerVerb
from shared.telemetry import setup_tracing

SCHEMA = "CREATE TABLE IF NOT EXISTS applied (msg_id TEXT, body TEXT);"


# -- the store's savepoints --------------------------------------------------------------------------


async def test_a_failing_part_undoes_only_itself(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "svc.sqlite", SCHEMA)
    await store.open()
    committed: list[str] = []
    undone: list[str] = []
    async with store.transaction() as tx:
        for name in ("first", "broken", "third"):
            try:
                async with tx.savepoint():
                    await tx.execute("INSERT INTO applied(msg_id, body) VALUES (?, ?)", (name, name))
                    await tx.publish(f"eb.sessions.o.{name}.RUNNING", b"{}", f"out:{name}")
                    tx.after_commit(lambda name=name: committed.append(name))  # type: ignore[misc]
                    tx.on_rollback(lambda name=name: undone.append(name))  # type: ignore[misc]
                    if name == "broken":
                        raise RuntimeError("boom")
            except RuntimeError:
                pass
        assert [row.msg_id for row in tx.outbox] == ["out:first", "out:third"]
    rows = await store.read("SELECT msg_id FROM applied ORDER BY msg_id")
    assert [r[0] for r in rows] == ["first", "third"]
    assert committed == ["first", "third"]
    assert undone == ["broken"]
    assert [r.msg_id for r in await store.unsent()] == ["out:first", "out:third"]
    await store.close()


async def test_a_rolled_back_transaction_runs_every_undo_newest_first(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "svc.sqlite", SCHEMA)
    await store.open()
    undone: list[int] = []
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            for n in range(3):
                tx.on_rollback(lambda n=n: undone.append(n))  # type: ignore[misc]
            raise RuntimeError("boom")
    assert undone == [2, 1, 0]
    await store.close()


# -- the puller --------------------------------------------------------------------------------------


@pytest.fixture
async def nc(nats_url: str):  # type: ignore[no-untyped-def]
    conn = await nats.connect(nats_url)
    await ensure_streams(conn.jetstream())
    yield conn
    await conn.close()


async def puller_for(nc: NATS, durable: str, batch: int) -> BatchPuller:
    spec = ConsumerSpec(subjects.COMMANDS_STREAM, durable, f"eb.launcher.{durable}.cmd.*", 30, 5)
    await ensure_consumer(nc.jetstream(), spec)
    puller = BatchPuller(nc, spec.stream, durable, batch)
    await puller.start()
    return puller


async def test_puller_takes_what_waits_in_order_and_never_more_than_a_batch(nc: NATS) -> None:
    js = nc.jetstream()
    for n in range(25):
        await js.publish("eb.launcher.pa.cmd.work", str(n).encode())
    puller = await puller_for(nc, "pa", batch=10)
    seen: list[int] = []
    sizes = []
    began = time.monotonic()
    while len(seen) < 25:
        batch = await puller.next_batch(wait=5.0)
        sizes.append(len(batch))
        for msg in batch:
            seen.append(int(msg.data))
            await msg.ack_sync()
    assert seen == list(range(25))
    assert max(sizes) == 10
    assert time.monotonic() - began < 2.0  # nothing waited for a batch to fill
    await puller.stop()


async def test_puller_returns_a_message_as_soon_as_it_arrives(nc: NATS) -> None:
    """The case nats-py's fetch(batch) gets wrong: one message while a batch of 100 is asked for."""
    js = nc.jetstream()
    puller = await puller_for(nc, "pb", batch=100)
    assert await puller.next_batch(wait=0.3) == []  # nothing there: back after the wait, empty
    waiting = asyncio.create_task(puller.next_batch(wait=10.0))
    await asyncio.sleep(0.2)
    sent = time.monotonic()
    await js.publish("eb.launcher.pb.cmd.work", b"late")
    batch = await waiting
    assert [m.data for m in batch] == [b"late"]
    assert time.monotonic() - sent < 0.5
    # The next message is not captured by a leftover request either: it comes on the next call.
    await batch[0].ack_sync()
    await js.publish("eb.launcher.pb.cmd.work", b"next")
    again = await puller.next_batch(wait=5.0)
    assert [m.data for m in again] == [b"next"]
    await puller.stop()


async def test_double_acks_of_a_batch_are_confirmed_and_unanswered_ones_counted(nc: NATS) -> None:
    js = nc.jetstream()
    for n in range(30):
        await js.publish("eb.launcher.pc.cmd.work", str(n).encode())
    puller = await puller_for(nc, "pc", batch=30)
    msgs = await puller.next_batch(wait=5.0)
    assert len(msgs) == 30
    acks = DoubleAcks(nc)
    await acks.start()
    assert await acks.ack(msgs, timeout=5.0) == 0
    info = await js.consumer_info(subjects.COMMANDS_STREAM, "pc")
    assert info.num_ack_pending == 0 and info.ack_floor.consumer_seq == 30
    # An ack nobody answers (its consumer gone) is reported, not taken for confirmed.
    orphan = Msg(nc, subject="eb.launcher.pc.cmd.work", reply="nobody.listens.here", data=b"")
    assert await acks.ack([orphan], timeout=1.0) == 1
    await acks.stop()
    await puller.stop()


# -- the runtime: a failing message in a batch --------------------------------------------------------


async def test_a_batch_with_a_failing_message_applies_the_others_once_and_retries_it(
    nats_url: str, tmp_path: Path, nc: NATS
) -> None:
    attempts: dict[str, int] = {}

    async def handle(tx: Transaction, msg: Incoming) -> None:
        body = msg.body.decode()
        attempts[body] = attempts.get(body, 0) + 1
        await tx.execute("INSERT INTO applied(msg_id, body) VALUES (?, ?)", (msg.msg_id, body))
        if body == "m3" and attempts[body] == 1:
            raise RuntimeError("first attempt fails after writing")  # its write must be undone
        await tx.publish(f"eb.sessions.o.{body}.RUNNING", b"{}", f"out:{msg.msg_id}")

    js = nc.jetstream()
    for n in range(1, 7):
        await js.publish("eb.launcher.batch.cmd.work", f"m{n}".encode(), headers={"Nats-Msg-Id": f"id-{n}"})
    store = SqliteStore(tmp_path / "svc.sqlite", SCHEMA)
    work = Route(subjects.LAUNCHER_COMMAND, handle, None, {"pool": "batch"})
    runtime = ServiceRuntime(
        Wiring("svc", consumers=(Consumer("svc-batch", (work,)),)),
        nats_url,
        store,
        setup_tracing("svc"),
        ack_wait_s=5,
        max_deliver=3,
        batch_size=10,
    )
    await runtime.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            rows = await store.read("SELECT body FROM applied ORDER BY body")
            info = await js.consumer_info(subjects.COMMANDS_STREAM, "svc-batch")
            if len(rows) == 6 and info.num_ack_pending == 0 and info.num_pending == 0:
                break
            await asyncio.sleep(0.1)
        assert [r[0] for r in rows] == [f"m{n}" for n in range(1, 7)]  # each applied once
        assert attempts == {"m1": 1, "m2": 1, "m3": 2, "m4": 1, "m5": 1, "m6": 1}
        assert info.num_ack_pending == 0
        published = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter="eb.sessions.*.*.RUNNING")
        assert sum((published.state.subjects or {}).values()) == 6
    finally:
        await runtime.stop()


# -- the scheduler: holds within one batch ------------------------------------------------------------


async def test_quotes_in_one_batch_never_share_capacity(tmp_path: Path) -> None:
    """Two quotes applied in one transaction: the second must see the first one's hold (the ledger
    changes at once, not at commit); a rolled-back quote gives its capacity back."""
    pool = Pool(name="tiny", platform="local", cores=1, memory_gib=4, grid_s=1, prepare_s=0, max_offers=1)
    handlers = SchedulerHandlers(pool, hold_grace_s=60)
    store = SqliteStore(tmp_path / "scheduler.sqlite", scheduler_tables.SCHEMA)
    await store.open()
    await handlers.load(store)
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=10)

    def quote(request_id: str) -> Incoming:
        body = QuoteSlots(
            request_id=request_id,
            owner="u",
            cores_min=1,
            cores_max=1,
            memory_min=1,
            memory_max=1,
            duration_s=60,
            earliest_start=now,
            latest_start=now,  # one possible start: two holds there would over-book the core
            prepare_s=0,
            max_offers=1,
            expires_at=now + timedelta(minutes=5),
            requested_at=now - timedelta(seconds=10),
        )
        subject = subjects.scheduler_command("tiny", SchedulerVerb.QUOTE)
        return Incoming(subject, body.to_bytes(), {}, request_id, 1)

    async with store.transaction(now - timedelta(seconds=10)) as tx:
        with pytest.raises(RuntimeError):
            async with tx.savepoint():
                await handlers.quote(tx, quote("rolled-back"))
                assert len(handlers.ledger) == 1
                raise RuntimeError("this message fails after holding")
        await handlers.quote(tx, quote("a"))  # gets the core the rolled-back quote gave back
        await handlers.quote(tx, quote("b"))
        await handlers.quote(tx, quote("c"))
        answers = [SlotsQuoted.model_validate_json(row.payload) for row in tx.outbox]
    held = {a.request_id: len(a.holds) for a in answers}
    assert held == {"a": 1, "b": 0, "c": 0}
    assert len(handlers.ledger) == 1


async def test_a_puller_with_no_jetstream_to_ask_says_so_at_once(nc: NATS) -> None:
    """No JetStream answers (a site's link to the hub is cut): the server's 503 ends the request,
    and the puller raises instead of returning an empty batch its caller would ask again for at once."""
    puller = BatchPuller(nc, "EB_COMMANDS", "nobody", 10, api_prefix="$JS.elsewhere.API")
    await puller.start()
    try:
        started = time.monotonic()
        with pytest.raises(JetStreamUnreachable, match="no responders"):
            await puller.next_batch(wait=5.0)
        assert time.monotonic() - started < 2.0
    finally:
        await puller.stop()
