"""The launcher's driver with the local platform, without the bus: the phases each session publishes,
in order and once, and how many transactions that takes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from services.launcher import store as tables
from services.launcher.driver import Drivers
from services.launcher.platforms.local.platform import LocalPlatform
from shared.bus.sqlite import SqliteStore
from shared.bus.store import Store, Transaction
from shared.lifecycle import Phase
from shared.messages import LaunchSession
from shared.platforms.port import LaunchSpec, Platform, RunStatus

T = TypeVar("T")
COMMAND_KIND = "urn:execution-broker:kinds/executable/local-command"
HAPPY = ["PREPARING", "AVAILABLE", "RUNNING", "RELEASING", "COMPLETED"]


class FakeRuntime:
    """What the driver uses of a ServiceRuntime: the store, and transactions whose messages it keeps."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.sent: list[tuple[str, str]] = []  # (subject, msg id), in publishing order
        self.transactions = 0

    async def unit_of_work(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        async with self.store.transaction(datetime.now(UTC)) as tx:
            result = await work(tx)
        self.transactions += 1
        self.sent += [(row.subject, row.msg_id) for row in tx.outbox]
        return result

    def phases(self, session_id: str) -> list[str]:
        return [
            msg_id.split(":", 1)[1]
            for subject, msg_id in self.sent
            if subject.startswith("eb.sessions.") and msg_id.startswith(f"{session_id}:")
        ]


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[FakeRuntime]:
    store = SqliteStore(tmp_path / "launcher.sqlite", tables.SCHEMA)
    await store.open()
    yield FakeRuntime(store)
    await store.close()


def drivers_for(runtime: FakeRuntime, tmp_path: Path, platform: Platform | None = None) -> Drivers:
    return Drivers(runtime, {"local": platform or LocalPlatform()}, tmp_path / "sessions")


async def launch(
    runtime: FakeRuntime, drivers: Drivers, session_id: str, command: list[str], minutes: float = 5
) -> None:
    now = datetime.now(UTC)
    spec = LaunchSession(
        session_id=session_id,
        owner="alice",
        executable={"kind": COMMAND_KIND, "command": command},
        cores=1,
        memory_gib=1,
        start=now,
        end=now + timedelta(minutes=minutes),
    ).model_dump(mode="json")
    async with runtime.store.transaction() as tx:
        await tables.insert(tx, tables.Run(session_id, "alice", "local", Phase.WAITING, spec, None, None, {}))
        tx.after_commit(lambda: drivers.ensure(session_id))


async def phase_of(runtime: FakeRuntime, session_id: str) -> Phase:
    run = await tables.read(runtime.store, session_id)
    assert run is not None
    return run.phase


async def until(runtime: FakeRuntime, session_id: str, phases: set[Phase], limit_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    while await phase_of(runtime, session_id) not in phases:
        assert asyncio.get_running_loop().time() < deadline, await phase_of(runtime, session_id)
        await asyncio.sleep(0.01)


async def test_zero_time_commands_publish_every_phase_once_in_order_in_three_transactions(
    runtime: FakeRuntime, tmp_path: Path
) -> None:
    drivers = drivers_for(runtime, tmp_path)
    sessions = [f"s{i}" for i in range(20)]
    began = asyncio.get_running_loop().time()
    for session_id in sessions:
        await launch(runtime, drivers, session_id, ["true"])
    for session_id in sessions:
        await until(runtime, session_id, {Phase.COMPLETED, Phase.FAILED})
    # The exit of each command wakes its driver: no waiting for a poll interval.
    assert asyncio.get_running_loop().time() - began < 10
    for session_id in sessions:
        assert runtime.phases(session_id) == HAPPY
    assert runtime.transactions == 3 * len(sessions)
    measured = [msg_id for subject, msg_id in runtime.sent if msg_id.startswith("measured:")]
    assert sorted(measured) == sorted(f"measured:{s}" for s in sessions)
    await drivers.stop()


async def test_a_resumed_driver_publishes_nothing_twice(runtime: FakeRuntime, tmp_path: Path) -> None:
    drivers = drivers_for(runtime, tmp_path)
    await launch(runtime, drivers, "s", ["sleep", "0.5"])
    await until(runtime, "s", {Phase.RUNNING})
    await drivers.stop()  # the launcher goes away while the command runs
    resumed = drivers_for(runtime, tmp_path)  # a new launcher, a new platform instance
    await resumed.resume_all()
    await until(runtime, "s", {Phase.COMPLETED, Phase.FAILED})
    assert runtime.phases("s") == HAPPY
    await resumed.stop()


async def test_a_cancel_while_running_stops_the_command(runtime: FakeRuntime, tmp_path: Path) -> None:
    drivers = drivers_for(runtime, tmp_path)
    await launch(runtime, drivers, "s", ["sleep", "30"])
    await until(runtime, "s", {Phase.RUNNING})
    async with runtime.store.transaction() as tx:
        await tables.request_cancel(tx, "s", "changed my mind")
        tx.after_commit(lambda: drivers.wake("s"))
    await until(runtime, "s", {Phase.CANCELLED}, limit_s=15)
    assert runtime.phases("s") == ["PREPARING", "AVAILABLE", "RUNNING", "RELEASING", "CANCELLED"]
    await drivers.stop()


async def test_a_command_that_cannot_start_fails_with_its_reason(
    runtime: FakeRuntime, tmp_path: Path
) -> None:
    drivers = drivers_for(runtime, tmp_path)
    await launch(runtime, drivers, "s", ["no-such-command-for-the-broker"])
    await until(runtime, "s", {Phase.FAILED})
    assert runtime.phases("s") == ["PREPARING", "AVAILABLE", "RUNNING", "RELEASING", "FAILED"]
    await drivers.stop()


async def test_the_run_is_stopped_at_the_end_of_its_slot(runtime: FakeRuntime, tmp_path: Path) -> None:
    drivers = drivers_for(runtime, tmp_path)
    began = asyncio.get_running_loop().time()
    await launch(runtime, drivers, "s", ["sleep", "30"], minutes=1.5 / 60)
    await until(runtime, "s", {Phase.FAILED}, limit_s=20)
    # Not later than the slot's end plus the stop itself, whatever the poll interval.
    assert asyncio.get_running_loop().time() - began < 1.5 + 6
    assert runtime.phases("s") == ["PREPARING", "AVAILABLE", "RUNNING", "RELEASING", "FAILED"]
    await drivers.stop()


class SlowRelease(LocalPlatform):
    async def release(self, spec: LaunchSpec, handle: str | None) -> None:
        await asyncio.sleep(0.5)
        await super().release(spec, handle)


async def test_a_slow_release_shows_as_releasing_while_it_lasts(runtime: FakeRuntime, tmp_path: Path) -> None:
    drivers = drivers_for(runtime, tmp_path, SlowRelease())
    await launch(runtime, drivers, "s", ["true"])
    await until(runtime, "s", {Phase.RELEASING})
    assert runtime.phases("s") == HAPPY[:-1]
    await until(runtime, "s", {Phase.COMPLETED})
    assert runtime.phases("s") == HAPPY
    assert runtime.transactions == 4
    await drivers.stop()


class Unwatched(LocalPlatform):
    """A platform that cannot tell when a run ends: the driver must find out by polling."""

    polls = 0

    def exited(self, spec: LaunchSpec, handle: str) -> asyncio.Future[None] | None:
        return None

    async def poll(self, spec: LaunchSpec, handle: str) -> RunStatus:
        self.polls += 1
        return await super().poll(spec, handle)


async def test_a_platform_that_cannot_watch_is_polled_to_the_end(
    runtime: FakeRuntime, tmp_path: Path
) -> None:
    platform = Unwatched()
    drivers = drivers_for(runtime, tmp_path, platform)
    await launch(runtime, drivers, "s", ["sleep", "0.5"])
    await until(runtime, "s", {Phase.COMPLETED, Phase.FAILED})
    assert runtime.phases("s") == HAPPY
    assert platform.polls >= 2  # RUNNING at least once, then the end
    await drivers.stop()


class Closing(LocalPlatform):
    closed = 0

    async def aclose(self) -> None:
        self.closed += 1


async def test_stopping_the_drivers_closes_each_platform_once(runtime: FakeRuntime, tmp_path: Path) -> None:
    platform = Closing()
    drivers = drivers_for(runtime, tmp_path, platform)
    await launch(runtime, drivers, "s", ["true"])
    await until(runtime, "s", {Phase.COMPLETED})
    assert platform.closed == 0
    await drivers.stop()
    assert platform.closed == 1


class Connecting(Unwatched):
    """Reports a connector once the run has gone on a while, as an interactive CANFAR session does."""

    async def poll(self, spec: LaunchSpec, handle: str) -> RunStatus:
        status = await super().poll(spec, handle)
        if status.state.is_final or self.polls < 3:
            return status
        connector = {"kind": "urn:jupyter-notebook", "protocol": "HTTPS", "location": "https://x/nb"}
        return status.model_copy(update={"connectors": [connector | {"status": "AVAILABLE"}]})


async def test_connectors_reported_while_running_are_published_once(
    runtime: FakeRuntime, tmp_path: Path
) -> None:
    drivers = drivers_for(runtime, tmp_path, Connecting())
    await launch(runtime, drivers, "s", ["sleep", "1"])
    await until(runtime, "s", {Phase.COMPLETED, Phase.FAILED})
    phases = runtime.phases("s")
    connector_events = [p for p in phases if p.startswith("RUNNING:connectors:")]
    assert len(connector_events) == 1, phases  # polled many times, published once
    assert [p for p in phases if p not in connector_events] == HAPPY
    assert phases.index(connector_events[0]) == phases.index("RUNNING") + 1
    await drivers.stop()
