"""Each service as its own nkey user with the permissions derived from its wiring, on a real
nats-server: a whole session runs to COMPLETED without one refused subject, and a service user is
refused what is not its own (another service's commands and phases, another service's durable,
deleting a stream)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nkeys  # type: ignore[import-untyped]
import pytest
from nats.aio.client import Client

from services.launcher import main as launcher_main
from services.offers import main as offers_main
from services.scheduler import main as scheduler_main
from shared import subjects
from shared.auth.credentials import Credentials
from shared.bus.acks import DoubleAcks
from shared.bus.permissions import inbox_prefix, service_permissions
from shared.bus.pulling import BatchPuller
from shared.bus.streams import ConsumerSpec, StreamsNotReady, ensure_consumer, ensure_streams
from shared.client import BrokerClient, wait_for_services
from shared.models import LOCAL_COMMAND_KIND, SIMPLE_COMPUTE_KIND
from shared.ops.embedded import SERVICES, NatsServer
from shared.service import load_service
from shared.settings import Settings
from tests.e2e.helpers import HAPPY_PHASES

OPERATOR = "operator"


@dataclass(frozen=True)
class SecuredBus:
    server: NatsServer
    #: The bootstrap identity: it created the streams; the test's client connects as it too.
    operator_url: str
    seeds: dict[str, Path]
    data_dir: Path
    #: The same identity as credentials, acting as local user alice would (the operator may do anything).
    operator: Credentials

    def settings(self, service: str) -> Settings:
        return Settings(
            nats_url=self.server.url,
            data_dir=self.data_dir,
            nats_nkey_seed_file=self.seeds[service],
            manage_streams=False,
            pool_cores=4,
            pool_memory_gib=16,
            ack_wait_s=5,
            pool_allowed_owners=f"local:{OPERATOR}",  # the test's client runs a command on the local pool
        )

    def violations(self) -> list[str]:
        """The server's own record of every refused publish or subscription."""
        log = self.server.log_file
        assert log is not None
        return [line for line in log.read_text().splitlines() if "Violation" in line]


def new_user_seed(path: Path) -> str:
    """Write a fresh user nkey seed (0600) and return its public key."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path.touch(mode=0o600)
    path.write_bytes(seed)
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


def server_config(users: list[dict[str, Any]]) -> dict[str, Any]:
    return {"authorization": {"users": users}}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SecuredBus]:
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    data_dir = tmp_path / "data"
    password = secrets.token_urlsafe(24)
    users: list[dict[str, Any]] = [{"user": OPERATOR, "password": password}]
    seeds: dict[str, Path] = {}
    for name in SERVICES:
        seeds[name] = keys / f"{name}.nk"
        public_key = new_user_seed(seeds[name])
        # The wiring the service will run with: its permissions depend only on the pool names.
        wiring = load_service(name).wiring(Settings(data_dir=data_dir))
        permissions = service_permissions(wiring, inbox_prefix=inbox_prefix(name))
        users.append({"nkey": public_key, "permissions": permissions.to_nats_config()})
    config = tmp_path / "nats-server.json"
    config.write_text(json.dumps(server_config(users), indent=2))
    server = NatsServer(tmp_path / "jetstream", log_file=tmp_path / "nats-server.log", config_file=config)
    server.start()
    operator_url = server.url.replace("nats://", f"nats://{OPERATOR}:{password}@")

    async def bootstrap() -> None:
        nc = await nats.connect(operator_url)
        try:
            await ensure_streams(nc.jetstream())
        finally:
            await nc.close()

    try:
        asyncio.run(bootstrap())
        yield SecuredBus(server, operator_url, seeds, data_dir, Credentials.login(OPERATOR, password))
    finally:
        server.stop()


class Refusals:
    """What the server refused a connection, as its ``error_cb`` hears it."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def record(self, exc: Exception) -> None:  # nats-py wants a coroutine function
        self.errors.append(str(exc))

    async def refused(self, what: str, subject: str, timeout: float = 3.0) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            expected = f'permissions violation for {what} to "{subject.lower()}"'
            for error in self.errors:
                if expected in error.lower():
                    return error
            await asyncio.sleep(0.05)
        raise AssertionError(f"no permissions violation for {what} {subject}; errors: {self.errors}")


@pytest.fixture
async def service_users(secured: SecuredBus) -> AsyncIterator[tuple[dict[str, Client], Refusals]]:
    """A raw connection per service user, as a leaked key would give, with its refusals recorded."""
    refusals = Refusals()
    connections = {
        name: await nats.connect(
            secured.server.url,
            nkeys_seed=str(secured.seeds[name]),
            inbox_prefix=inbox_prefix(name),
            error_cb=refusals.record,
            allow_reconnect=False,
        )
        for name in SERVICES
    }
    yield connections, refusals
    for nc in connections.values():
        await nc.close()


def echo_request() -> dict[str, object]:
    return {
        "executable": {"kind": LOCAL_COMMAND_KIND, "command": [sys.executable, "-c", "print('hello')"]},
        "compute": {
            "kind": SIMPLE_COMPUTE_KIND,
            "cores": {"min": 1, "max": 1},
            "memory": {"min": 1, "max": 1},
        },
        "schedule": {"requested": {"duration": "PT1M"}},
    }


async def test_a_whole_session_runs_with_least_privilege(
    secured: SecuredBus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    offers = offers_main.build(secured.settings("offers"))
    scheduler, _, _ = scheduler_main.build(secured.settings("scheduler"))
    launcher, drivers = launcher_main.build(secured.settings("launcher"))
    started = []
    try:
        for runtime in (offers, scheduler, launcher):
            await runtime.start()
            started.append(runtime)
        await drivers.resume_all()
        # Health answers go back through allow_responses, as does the scheduler's pools reply.
        await wait_for_services(secured.operator_url, SERVICES, timeout=30, credentials=secured.operator)
        async with BrokerClient(secured.operator_url, secured.operator) as client:
            pools = json.loads((await client.nc.request(subjects.pools_info(), b"", timeout=5)).data)
            assert [pool["name"] for pool in pools] == ["local"]
            offerset = await client.submit(echo_request())
            session_id = (offerset.offers or [])[0].meta.uuid  # type: ignore[union-attr]
            assert session_id is not None
            assert (await client.accept(session_id)).applied
            events = await client.wait_until_done(session_id, timeout=60)
        assert tuple(event.phase for event in events) == HAPPY_PHASES
    finally:
        await drivers.stop()
        for runtime in reversed(started):
            await runtime.stop()
    assert secured.violations() == []
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == []


async def offers_start_fails(bus: SecuredBus, why: str) -> None:
    runtime = offers_main.build(bus.settings("offers"))
    with pytest.raises(StreamsNotReady, match=why):
        await runtime.start()
    await runtime.stop()


async def test_a_service_that_may_not_create_streams_says_what_is_missing(secured: SecuredBus) -> None:
    """An operator who forgot a subject or a stream is told so at start, not by lost messages."""
    operator = await nats.connect(secured.operator_url)
    js = operator.jetstream()
    try:
        events = (await js.stream_info(subjects.EVENTS_STREAM)).config
        dead = subjects.DEAD_LETTER.filter()
        await js.update_stream(events, subjects=[s for s in events.subjects or () if s != dead])
        await offers_start_fails(secured, f"{subjects.EVENTS_STREAM} does not store {re.escape(dead)}")
        await js.delete_stream(subjects.EVENTS_STREAM)
        await offers_start_fails(secured, f"stream {subjects.EVENTS_STREAM} does not exist")
    finally:
        await operator.close()
    assert secured.violations() == []


async def test_a_service_user_may_publish_only_its_own_subjects(
    secured: SecuredBus, service_users: tuple[dict[str, Client], Refusals]
) -> None:
    users, refusals = service_users
    # Only the scheduler commands the launcher.
    launch = subjects.launcher_command("local", subjects.LauncherVerb.LAUNCH)
    await users["offers"].publish(launch, b"{}")
    await refusals.refused("publish", launch)
    # Only the service that owns a phase publishes it.
    accepted = subjects.session_event("alice", "s1", "ACCEPTED")
    await users["launcher"].publish(accepted, b"{}")
    await refusals.refused("publish", accepted)
    # No service speaks for a user.
    request = subjects.request("alice", "r1")
    await users["offers"].publish(request, b"{}")
    await refusals.refused("publish", request)
    # Nor reads users' events outside its durables.
    await users["offers"].subscribe(subjects.session_events())
    await refusals.refused("subscription", subjects.session_events())
    # What they may do still works on the same connections.
    await users["scheduler"].publish(launch, b"{}")
    await users["scheduler"].flush()
    assert (await users["offers"].jetstream().stream_info(subjects.COMMANDS_STREAM)).state.messages == 1
    assert len(refusals.errors) == 4


async def test_a_service_user_cannot_pull_from_another_services_durable(
    secured: SecuredBus, service_users: tuple[dict[str, Client], Refusals]
) -> None:
    users, refusals = service_users
    launcher_wiring = load_service("launcher").wiring(secured.settings("launcher"))
    (consumer,) = launcher_wiring.consumers
    spec = ConsumerSpec(consumer.stream, consumer.durable, consumer.filter_subjects, 5.0, 5)
    await ensure_consumer(users["launcher"].jetstream(), spec)
    await (
        users["scheduler"]
        .jetstream()
        .publish(subjects.launcher_command("local", subjects.LauncherVerb.LAUNCH), b"{}")
    )
    pull = f"$JS.API.CONSUMER.MSG.NEXT.{consumer.stream}.{consumer.durable}"
    inbox = users["offers"].new_inbox()
    delivered = await users["offers"].subscribe(inbox)
    await users["offers"].publish(pull, json.dumps({"batch": 1, "no_wait": True}).encode(), reply=inbox)
    await refusals.refused("publish", pull)
    # Nor can it take the durable over by redefining it.
    redefine = f"$JS.API.CONSUMER.DURABLE.CREATE.{consumer.stream}.{consumer.durable}"
    await users["offers"].publish(redefine, b"{}")
    await refusals.refused("publish", redefine)
    assert delivered.pending_msgs == 0
    info = await users["launcher"].jetstream().consumer_info(consumer.stream, consumer.durable)
    assert (info.num_pending, info.num_ack_pending) == (1, 0)  # still waiting for the launcher
    # The launcher pulls it, says it is still working on it (more than one answer to the message's
    # reply subject: allowed by its $JS.ACK grant, not only by allow_responses) and double-acks it.
    puller = BatchPuller(users["launcher"], consumer.stream, consumer.durable, 10)
    acks = DoubleAcks(users["launcher"])
    await puller.start()
    await acks.start()
    (msg,) = await puller.next_batch(wait=2.0)
    await msg.in_progress()
    await msg.in_progress()
    assert await acks.ack([msg], timeout=2.0) == 0
    info = await users["launcher"].jetstream().consumer_info(consumer.stream, consumer.durable)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
    assert len(refusals.errors) == 2


async def test_no_service_user_can_delete_or_purge_a_stream(
    secured: SecuredBus, service_users: tuple[dict[str, Client], Refusals]
) -> None:
    users, refusals = service_users
    for name, nc in users.items():
        js = nc.jetstream(timeout=1)
        with pytest.raises(nats.errors.TimeoutError):  # the request never reached JetStream
            await js.delete_stream(subjects.EVENTS_STREAM)
        await refusals.refused("publish", f"$JS.API.STREAM.DELETE.{subjects.EVENTS_STREAM}")
        with pytest.raises(nats.errors.TimeoutError):
            await js.purge_stream(subjects.COMMANDS_STREAM)
        await refusals.refused("publish", f"$JS.API.STREAM.PURGE.{subjects.COMMANDS_STREAM}")
        refusals.errors.clear()
        assert (await js.stream_info(subjects.EVENTS_STREAM)).config.name == subjects.EVENTS_STREAM, name


async def test_an_unauthenticated_connection_is_refused(secured: SecuredBus) -> None:
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(secured.server.url, allow_reconnect=False, max_reconnect_attempts=0)
