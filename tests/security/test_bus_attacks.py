"""A hostile user on the secured bus of a running broker (nats-server, the auth callout and the three
services as separate processes, as `broker up` starts them).

Mallory connects with her own password and tries everything that would let her act as, or read,
Bob. Each attempt must be refused by the server itself (the client hears a permissions violation),
and Bob's session must come through untouched.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from shared import subjects
from shared.auth import owners
from shared.client import BrokerClient, BrokerRefused, read_request_file, wait_for_services
from shared.lifecycle import Phase
from shared.ops.embedded import SERVICES, EmbeddedBroker
from shared.ops.secured import service_consumers
from shared.service import installed_services
from shared.settings import Settings
from shared.subjects import LauncherVerb, SchedulerVerb
from tests.conftest import broker_env
from tests.e2e.helpers import HAPPY_PHASES, HELLO_REQUEST

pytestmark = pytest.mark.security

BOB = owners.local("bob").token
MALLORY = owners.local("mallory").token
EVENTS = subjects.EVENTS_STREAM
COMMANDS = subjects.COMMANDS_STREAM


@dataclass
class Scene:
    broker: EmbeddedBroker
    #: Bob's offered session, which Mallory attacks before Bob accepts it.
    session_id: str


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    running = EmbeddedBroker(data_dir=tmp_path_factory.mktemp("secured") / "broker", env=broker_env())
    running.start()
    try:
        asyncio.run(wait_for_services(running.url, SERVICES, timeout=60, credentials=running.operator()))
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def scene(broker: EmbeddedBroker) -> Scene:
    async def offer() -> str:
        async with BrokerClient(broker.url, broker.login("bob")) as bob:
            offerset = await bob.submit(read_request_file(HELLO_REQUEST))
            assert offerset.result == "YES" and offerset.offers and offerset.offers[0].meta
            session_id = offerset.offers[0].meta.uuid
            assert session_id is not None
            return session_id

    return Scene(broker, asyncio.run(offer()))


class Refusals:
    """What the server refused a connection, as its ``error_cb`` hears it."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def record(self, exc: Exception) -> None:
        self.errors.append(str(exc))

    async def refused(self, what: str, subject: str, timeout: float = 3.0) -> None:
        expected = f'permissions violation for {what} to "{subject}"'.lower()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if any(expected in error.lower() for error in self.errors):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the server did not refuse {what} {subject}; it said: {self.errors}")


@pytest.fixture
async def mallory(scene: Scene) -> AsyncIterator[tuple[Client, Refusals]]:
    refusals = Refusals()
    nc = await nats.connect(
        scene.broker.url,
        error_cb=refusals.record,
        allow_reconnect=False,
        **scene.broker.login("mallory").connect_options(),
    )
    yield nc, refusals
    await nc.close()


async def test_mallory_cannot_submit_or_update_as_bob(scene: Scene, mallory: tuple[Client, Refusals]) -> None:
    nc, refusals = mallory
    as_bob = subjects.request(BOB, str(uuid.uuid4()))
    await nc.publish(as_bob, HELLO_REQUEST.read_bytes())
    await refusals.refused("publish", as_bob)
    cancel = json.dumps({"kind": "uri:enum-value-update", "path": "phase", "value": "CANCELLED"}).encode()
    bobs_update = subjects.update(BOB, scene.session_id)
    await nc.publish(bobs_update, cancel)
    await refusals.refused("publish", bobs_update)
    # Her own owner token with Bob's session: offers answers that it is not hers (specific, not silent).
    async with BrokerClient(scene.broker.url, scene.broker.login("mallory")) as client:
        result = await client.cancel(scene.session_id)
    assert not result.applied


async def test_mallory_cannot_read_bobs_answers_or_events_live(mallory: tuple[Client, Refusals]) -> None:
    nc, refusals = mallory
    for subject in (
        subjects.session_events(BOB),
        subjects.OFFERSET.filter(owner=BOB),
        subjects.UPDATE_RESULT.filter(owner=BOB),
        subjects.session_events(),  # everyone's
        ">",
        f"{subjects.OFFERSET.filter()}",
        "_INBOX.>",  # other clients' replies under the shared prefix
        f"_INBOX_{BOB}.>",  # Bob's private inbox
        "eb.ops.>",  # the operators' events (a stream filling up)
        subjects.ops_event(MALLORY, subjects.OpsFact.STREAM_FILLING),
    ):
        await nc.subscribe(subject)
        await refusals.refused("subscription", subject)


async def test_mallory_cannot_replay_bobs_history_through_any_jetstream_api(
    scene: Scene, mallory: tuple[Client, Refusals]
) -> None:
    nc, refusals = mallory
    bob_events = subjects.session_events(BOB, scene.session_id)
    name = f"m{uuid.uuid4().hex[:8]}"
    body = json.dumps({"stream_name": EVENTS, "config": {"name": name, "filter_subject": bob_events}})
    attempts = {
        # A consumer filtered on Bob's subjects, named or not, or with no filter at all.
        f"$JS.API.CONSUMER.CREATE.{EVENTS}.{name}.{bob_events}": body,
        f"$JS.API.CONSUMER.CREATE.{EVENTS}": body,
        f"$JS.API.CONSUMER.CREATE.{EVENTS}.{name}": body,
        f"$JS.API.CONSUMER.DURABLE.CREATE.{EVENTS}.{name}": body,
        # Nor the operators' events through a consumer of the events stream.
        f"$JS.API.CONSUMER.CREATE.{EVENTS}.{name}.eb.ops.>": body,
        # Stored messages by sequence or by subject, and the stream's subject list.
        f"$JS.API.STREAM.MSG.GET.{EVENTS}": json.dumps({"last_by_subj": bob_events}),
        f"$JS.API.DIRECT.GET.{EVENTS}": json.dumps({"last_by_subj": bob_events}),
        f"$JS.API.DIRECT.GET.{EVENTS}.{bob_events}": "",
        f"$JS.API.STREAM.INFO.{EVENTS}": json.dumps({"subjects_filter": ">"}),
        "$JS.API.STREAM.LIST": "{}",
        f"$JS.API.CONSUMER.LIST.{EVENTS}": "{}",
    }
    for subject, payload in attempts.items():
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request(subject, payload.encode(), timeout=0.5)
        await refusals.refused("publish", subject)
    # Even her own filter cannot be widened in the body: the server checks the two agree (10131).
    mine = subjects.session_events(MALLORY)
    widened = json.dumps({"stream_name": EVENTS, "config": {"name": name, "filter_subject": bob_events}})
    answer = await nc.request(f"$JS.API.CONSUMER.CREATE.{EVENTS}.{name}.{mine}", widened.encode(), timeout=3)
    assert json.loads(answer.data)["error"]["err_code"] == 10131


async def test_mallory_cannot_command_the_scheduler_or_launcher_or_forge_a_phase(
    scene: Scene, mallory: tuple[Client, Refusals]
) -> None:
    nc, refusals = mallory
    for subject in (
        subjects.launcher_command("local", LauncherVerb.LAUNCH),
        subjects.launcher_command("local", LauncherVerb.STOP),
        subjects.scheduler_command("local", SchedulerVerb.BOOK),
        subjects.session_event(BOB, scene.session_id, Phase.CANCELLED),
        subjects.session_event(MALLORY, scene.session_id, Phase.COMPLETED),  # her own token, too
        subjects.dead_letter("offers"),
    ):
        await nc.publish(subject, b"{}")
        await refusals.refused("publish", subject)


async def test_mallory_cannot_pull_from_or_redefine_a_service_durable(
    mallory: tuple[Client, Refusals],
) -> None:
    nc, refusals = mallory
    settings = Settings()
    durables = sorted(service_consumers(entry.wiring(settings) for entry in installed_services().values()))
    assert durables, "the services declare their durables"
    # The readers of the services' start-up replay too: one Mallory made first would block it.
    assert any(name.endswith("-replay0") for name in durables)
    for durable in durables:
        for subject in (
            f"$JS.API.CONSUMER.MSG.NEXT.{COMMANDS}.{durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS}.{durable}",
            f"$JS.API.CONSUMER.INFO.{COMMANDS}.{durable}",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{COMMANDS}.{durable}",
            # Her own filter, but a service's consumer name: it would update that durable.
            f"$JS.API.CONSUMER.CREATE.{EVENTS}.{durable}.{subjects.session_events(MALLORY)}",
        ):
            await nc.publish(subject, b"{}")
            await refusals.refused("publish", subject)


async def test_mallory_cannot_delete_or_purge_a_stream_or_a_consumer(
    mallory: tuple[Client, Refusals],
) -> None:
    nc, refusals = mallory
    for stream in (EVENTS, COMMANDS):
        for subject in (
            f"$JS.API.STREAM.DELETE.{stream}",
            f"$JS.API.STREAM.PURGE.{stream}",
            f"$JS.API.STREAM.UPDATE.{stream}",
            f"$JS.API.STREAM.MSG.DELETE.{stream}",
            f"$JS.API.CONSUMER.DELETE.{stream}.offers-requests",
        ):
            await nc.publish(subject, b"{}")
            await refusals.refused("publish", subject)


async def test_unauthenticated_and_wrong_logins_are_refused(scene: Scene) -> None:
    url = scene.broker.url
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3)
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(
            url, user="bob", password="guessed", allow_reconnect=False, max_reconnect_attempts=0
        )
    with pytest.raises(BrokerRefused, match="refused user bob"):
        from shared.auth.credentials import Credentials

        async with BrokerClient(url, Credentials.login("bob", "guessed")):
            pass
    log = (scene.broker.data_dir / "callout.log").read_text()
    assert "guessed" not in log
    assert "refused user 'bob'" in log


async def test_a_disabled_identity_cannot_log_in(scene: Scene) -> None:
    credentials = scene.broker.login("trudy")
    async with BrokerClient(scene.broker.url, credentials):
        pass
    scene.broker.identities.disable("trudy")
    with pytest.raises(BrokerRefused):
        async with BrokerClient(scene.broker.url, credentials):
            pass


async def test_bobs_session_is_unchanged_and_runs_after_the_attacks(scene: Scene) -> None:
    """Last in the module: every attack above ran against this offered session."""
    async with BrokerClient(scene.broker.url, scene.broker.login("bob")) as bob:
        result = await bob.accept(scene.session_id)
        assert result.applied, result.messages
        events = await bob.wait_until_done(scene.session_id, timeout=90)
    assert tuple(event.phase for event in events) == HAPPY_PHASES
    assert all(event.session_id == scene.session_id for event in events)


def test_everything_on_disk_is_private(scene: Scene) -> None:
    """After a whole session: keys, configuration, identities, stores, streams and logs are the
    broker's user's alone (folders 0700, files 0600 or stricter)."""
    bus = scene.broker.bus
    assert bus.folder.stat().st_mode & 0o777 == 0o700
    for path in Path(bus.folder).iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert (scene.broker.data_dir / "identities.db").stat().st_mode & 0o777 == 0o600
    seen = 0
    for path in scene.broker.data_dir.rglob("*"):
        if path.is_symlink():
            continue
        seen += 1
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others: {oct(path.stat().st_mode)}"
    assert seen > 20  # stores, streams and logs were there to check
