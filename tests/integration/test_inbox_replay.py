"""The start-up inbox replay against a real nats-server and real SQLite files: a service whose store
lost its last committed transactions (a machine crash with ``EB_DURABILITY=fast``, simulated by
putting back a copy of the files taken before) applies the acknowledged messages again, once, and
what they re-produce is not stored twice; with nothing lost, a restart applies nothing."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from shared import subjects
from shared.bus.runtime import Incoming, ServiceRuntime
from shared.bus.sqlite import SqliteStore
from shared.bus.store import Store, Transaction
from shared.bus.wiring import Consumer, Route, Wiring
from shared.telemetry import setup_tracing
from tests.integration.test_bus_runtime import eventually

SCHEMA = "CREATE TABLE IF NOT EXISTS applied (msg_id TEXT, body TEXT);"
SUBJECT = subjects.launcher_command("test", subjects.LauncherVerb.LAUNCH)
OTHER = subjects.launcher_command("test", subjects.LauncherVerb.STOP)
SQLITE_FILES = ("svc.sqlite", "svc.sqlite-wal", "svc.sqlite-shm")


class Recorder:
    """A handler that records each message and says so on the events stream, with an id derived from
    the message (as every handler does); ``failing`` names bodies it refuses."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.calls: list[str] = []
        self.failing = failing
        self.dead: list[str] = []

    async def handle(self, tx: Transaction, msg: Incoming) -> None:
        body = msg.body.decode()
        self.calls.append(body)
        if body in self.failing:
            raise RuntimeError(f"cannot do {body}")
        await tx.execute("INSERT INTO applied(msg_id, body) VALUES (?, ?)", (msg.msg_id, body))
        await tx.publish(output(body), b"{}", f"out:{msg.msg_id}")

    async def on_dead(self, tx: Transaction, msg: Incoming, reason: str) -> None:
        self.dead.append(msg.body.decode())


def output(body: str) -> str:
    return f"eb.sessions.o.{body}.RUNNING"


def runtime_of(nats_url: str, folder: Path, recorder: Recorder) -> ServiceRuntime:
    routes = (
        Route(subjects.LAUNCHER_COMMAND, recorder.handle, None, {"pool": "test", "verb": "launch"}),
        Route(subjects.LAUNCHER_COMMAND, recorder.handle, None, {"pool": "test", "verb": "stop"}),
    )
    return ServiceRuntime(
        Wiring("svc", consumers=(Consumer("svc-work", routes, on_dead=recorder.on_dead),)),
        nats_url,
        SqliteStore(folder / "svc.sqlite", SCHEMA),
        setup_tracing("svc"),
        ack_wait_s=5,
        max_deliver=3,
    )


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[nats.NATS]:
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


async def applied(store: Store) -> list[str]:
    return sorted(r[0] for r in await store.read("SELECT body FROM applied"))


async def stored(nc: nats.NATS, subject: str) -> int:
    info = await nc.jetstream().stream_info(subjects.EVENTS_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def run_until_applied(
    nats_url: str, folder: Path, nc: nats.NATS, sends: list[tuple[str, str, str]]
) -> None:
    """Start the service, send (subject, body, message id) each, wait until all are applied, stop."""
    runtime = runtime_of(nats_url, folder, Recorder())
    await runtime.start()
    try:
        for subject, body, msg_id in sends:
            await nc.jetstream().publish(subject, body.encode(), headers={"Nats-Msg-Id": msg_id})

        async def done() -> bool:
            return {body for _, body, _ in sends} <= set(await applied(runtime.store))

        await eventually(done)
        await asyncio.sleep(0.3)  # the acks and the output's PubAck
    finally:
        await runtime.stop()


def copy_files(source: Path, target: Path) -> None:
    target.mkdir(exist_ok=True)
    for name in SQLITE_FILES:
        (target / name).unlink(missing_ok=True)
        if (source / name).exists():
            shutil.copy2(source / name, target / name)


def restored(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [r.restored for r in caplog.records if getattr(r, "event", None) == "inbox_restored"]


async def test_a_lost_transaction_is_applied_again_once_and_its_output_not_stored_twice(
    nats_url: str, tmp_path: Path, nc: nats.NATS, caplog: pytest.LogCaptureFixture
) -> None:
    service, before = tmp_path / "svc", tmp_path / "before"
    service.mkdir()
    await run_until_applied(nats_url, service, nc, [(SUBJECT, "a", "m-a")])
    copy_files(service, before)
    # Two more on both filter subjects, applied and acknowledged, then lost with the store's suffix.
    await run_until_applied(nats_url, service, nc, [(SUBJECT, "b", "m-b"), (OTHER, "c", "m-c")])
    assert [await stored(nc, output(body)) for body in "abc"] == [1, 1, 1]
    copy_files(before, service)

    recorder = Recorder()
    runtime = runtime_of(nats_url, service, recorder)
    with caplog.at_level(logging.WARNING, logger="shared.bus.runtime"):
        await runtime.start()
    try:
        # Applied again before any durable or timer runs, in stream order, each once.
        assert recorder.calls == ["b", "c"]
        assert await applied(runtime.store) == ["a", "b", "c"]
        assert restored(caplog) == [2]
        await asyncio.sleep(1.0)  # the durable is running now: it has nothing to deliver
        assert recorder.calls == ["b", "c"]
        # What they published again had the ids of the first time: the stream dropped it.
        assert [await stored(nc, output(body)) for body in "abc"] == [1, 1, 1]
    finally:
        await runtime.stop()

    caplog.clear()
    quiet = Recorder()
    again = runtime_of(nats_url, service, quiet)
    with caplog.at_level(logging.WARNING, logger="shared.bus.runtime"):
        await again.start()
    try:
        await asyncio.sleep(0.5)
        assert quiet.calls == []  # nothing lost: nothing applied
        assert restored(caplog) == []
        assert await applied(again.store) == ["a", "b", "c"]
    finally:
        await again.stop()


async def test_a_message_failing_when_applied_again_is_dead_lettered_once_the_durable_is_done_with_it(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    """Acknowledged (at or below the durable's ack floor), nothing will bring it back: it is
    dead-lettered and its sender answered, instead of being forgotten in silence."""
    service, before = tmp_path / "svc", tmp_path / "before"
    service.mkdir()
    await run_until_applied(nats_url, service, nc, [(SUBJECT, "a", "m-a")])
    copy_files(service, before)
    await run_until_applied(nats_url, service, nc, [(SUBJECT, "b", "m-b")])
    copy_files(before, service)

    recorder = Recorder(failing=frozenset({"b"}))
    runtime = runtime_of(nats_url, service, recorder)
    await runtime.start()
    try:
        assert (recorder.calls, recorder.dead) == (["b"], ["b"])
        assert await stored(nc, subjects.dead_letter("svc")) == 1
        assert await applied(runtime.store) == ["a"]
        await asyncio.sleep(1.0)
        assert recorder.calls == ["b"]  # remembered as dead: not applied again by anyone
    finally:
        await runtime.stop()
