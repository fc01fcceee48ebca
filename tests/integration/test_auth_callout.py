"""The auth callout against a real nats-server in config mode (accounts AUTH, APP and SYS, an
issuer key and an xkey): who gets in, and what the server lets an admitted user do.

The broker's streams live in APP, set up by an admin nkey user that, like the callout's own user,
is one of ``auth_users`` (the server never asks the callout about them). Users come in through the
callout with the fake identities of tests/fakes/identities.py, and OIDC users with access tokens of
the fake provider (tests/fakes/oidc.py, on 127.0.0.1) checked by the real `OidcVerifier`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import SecretStr

from shared import subjects
from shared.auth import owners
from shared.auth.callout import AUTH_SUBJECT, CalloutConfig, CalloutResponder, Verifier, Verifiers
from shared.auth.keys import Role, Signer, new_seed
from shared.auth.oidc import OidcVerifier
from shared.auth.permissions import consumer_create, inbox_prefix
from shared.auth.verifiers import OidcTokens
from shared.bus.streams import ensure_streams
from shared.ops.embedded import NatsServer
from tests.fakes.identities import ISSUER, FakeIdentities
from tests.fakes.oidc import DEFAULT_AUDIENCE, FakeOidcProvider

ALICE = owners.local("alice")
BOB = owners.local("bob")
CAROL = owners.oidc(ISSUER, "carol-sub")
SERVICE_DURABLE = "offers-requests"
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}


@dataclass(frozen=True)
class Keys:
    issuer: SecretStr
    xkey: SecretStr
    callout_user: SecretStr
    admin_user: SecretStr


def user_key(seed: SecretStr) -> str:
    return Signer(seed, Role.USER).public_key


def server_config(keys: Keys, responder: CalloutResponder) -> str:
    """AUTH holds the callout's user, APP the broker (JetStream) and its admin; SYS the system."""
    callout, admin = user_key(keys.callout_user), user_key(keys.admin_user)
    return f"""
accounts {{
  AUTH {{ users: [ {{ nkey: {callout} }} ] }}
  APP {{ jetstream: enabled, users: [ {{ nkey: {admin} }} ] }}
  SYS {{}}
}}
system_account: SYS
authorization {{
  timeout: 2
  auth_callout {{
    issuer: {responder.issuer}
    account: AUTH
    auth_users: [ {callout}, {admin} ]
    xkey: {responder.xkey}
  }}
}}
"""


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(new_seed(Role.ACCOUNT), new_seed(Role.CURVE), new_seed(Role.USER), new_seed(Role.USER))


@pytest.fixture
def identities() -> FakeIdentities:
    return FakeIdentities(passwords=dict(PASSWORDS))


def make_responder(keys: Keys, identities: Verifier) -> CalloutResponder:
    config = CalloutConfig(
        issuer_seed=keys.issuer,
        account="APP",
        xkey_seed=keys.xkey,
        service_consumers=frozenset({SERVICE_DURABLE}),
    )
    return CalloutResponder(config, identities)


@pytest.fixture(scope="module")
def server(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    folder = tmp_path_factory.mktemp("callout")
    config = folder / "nats.conf"
    config.write_text(server_config(keys, make_responder(keys, FakeIdentities())), encoding="utf-8")
    config.chmod(0o600)
    nats_server = NatsServer(folder / "jetstream", config_file=config)
    nats_server.start()
    try:
        yield nats_server
    finally:
        nats_server.stop()


@pytest.fixture
async def admin(server: NatsServer, keys: Keys) -> AsyncIterator[Client]:
    nc = await nats.connect(server.url, nkeys_seed_str=keys.admin_user.get_secret_value())
    js = nc.jetstream()
    await ensure_streams(js)
    await js.add_consumer(
        subjects.COMMANDS_STREAM,
        ConsumerConfig(durable_name=SERVICE_DURABLE, filter_subject=subjects.REQUEST.filter()),
    )
    try:
        yield nc
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def running_responder(
    server: NatsServer, keys: Keys, verifier: Verifier
) -> AsyncIterator[CalloutResponder]:
    callout = make_responder(keys, verifier)
    nc = await nats.connect(server.url, nkeys_seed_str=keys.callout_user.get_secret_value())
    await callout.start(nc)
    try:
        yield callout
    finally:
        await callout.stop()
        await nc.close()


@pytest.fixture
async def responder(
    server: NatsServer, keys: Keys, identities: FakeIdentities, admin: Client
) -> AsyncIterator[CalloutResponder]:
    async with running_responder(server, keys, identities) as callout:
        yield callout


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOidcProvider]:
    with FakeOidcProvider().serving() as fake:
        yield fake


@pytest.fixture
async def oidc_responder(
    server: NatsServer, keys: Keys, identities: FakeIdentities, provider: FakeOidcProvider, admin: Client
) -> AsyncIterator[CalloutResponder]:
    """Passwords from the fake identities, tokens through the real OidcVerifier and the fake provider
    (its keys fetched before: on a loaded machine a first fetch may outlast the callout's 1.5 s)."""
    verifier = OidcVerifier(provider.issuer, DEFAULT_AUDIENCE)
    await verifier.verify(provider.mint())
    tokens = OidcTokens(verifier)
    async with running_responder(server, keys, Verifiers(identities.password, tokens.token)) as callout:
        yield callout


class User:
    """A connection of one user, with the errors the server sent it (permission violations)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.closed = asyncio.Event()
        self.nc: Client | None = None

    async def connect(self, url: str, owner: owners.Owner | None = None, **credentials: Any) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        async def on_closed() -> None:
            self.closed.set()

        self.nc = await nats.connect(
            url,
            inbox_prefix=inbox_prefix(owner.token) if owner else "_INBOX",
            error_cb=on_error,
            closed_cb=on_closed,
            allow_reconnect=False,
            connect_timeout=5,
            **credentials,
        )
        return self.nc

    async def violation(self, text: str, timeout: float = 10.0) -> str:
        """Wait for the server's permission violation that mentions `text`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for error in self.errors:
                # nats-py lower-cases the server's error text.
                if "permissions violation" in error.lower() and text.lower() in error.lower():
                    return error
            await asyncio.sleep(0.02)
        raise AssertionError(f"no permission violation about {text!r}; errors: {self.errors}")


@pytest.fixture
async def alice(server: NatsServer, responder: CalloutResponder) -> AsyncIterator[User]:
    user = User()
    nc = await user.connect(server.url, ALICE, user="alice", password=PASSWORDS["alice"])
    try:
        yield user
    finally:
        await nc.close()


async def refused(url: str, **credentials: Any) -> str:
    with pytest.raises(nats.errors.Error) as caught:
        await User().connect(url, **credentials)
    return str(caught.value)


async def test_password_user_publishes_requests_as_themselves(alice: User, admin: Client) -> None:
    assert alice.nc is not None
    request_id = str(uuid.uuid4())
    ack = await alice.nc.jetstream(timeout=3).publish(subjects.request(ALICE.token, request_id), b"{}")
    assert ack.stream == subjects.COMMANDS_STREAM
    stored = await admin.jetstream().get_last_msg(
        subjects.COMMANDS_STREAM, subjects.request(ALICE.token, request_id)
    )
    assert stored.data == b"{}"
    assert alice.errors == []


async def test_wrong_password_and_no_credentials_are_refused(
    server: NatsServer, responder: CalloutResponder, identities: FakeIdentities
) -> None:
    assert "Authorization Violation" in await refused(server.url, user="alice", password="bob-secret")
    assert "Authorization Violation" in await refused(server.url)
    assert "Authorization Violation" in await refused(server.url, user="mallory", password="x")
    assert "password:alice" in identities.asked  # the callout, not the server, judged these


async def test_another_owners_subjects_are_refused_by_the_server(alice: User, admin: Client) -> None:
    nc = alice.nc
    assert nc is not None
    bob_request = subjects.request(BOB.token, "r1")
    with pytest.raises(nats.errors.TimeoutError):  # a denied publish gets no PubAck
        await nc.jetstream(timeout=1).publish(bob_request, b"{}")
    await alice.violation(bob_request)
    await nc.publish(subjects.update(BOB.token, "s1"), b"{}")
    await alice.violation(subjects.update(BOB.token, "s1"))
    for subject in (f"eb.sessions.{BOB.token}.>", subjects.session_events(BOB.token), "eb.offersets.>"):
        await nc.subscribe(subject)
        await alice.violation(subject)
    info = await admin.jetstream().stream_info(subjects.COMMANDS_STREAM, subjects_filter=bob_request)
    assert not info.state.subjects  # nothing was stored as bob


async def test_service_subjects_and_stream_admin_are_refused(alice: User, admin: Client) -> None:
    nc = alice.nc
    assert nc is not None
    ev, cmd = subjects.EVENTS_STREAM, subjects.COMMANDS_STREAM
    forbidden = [
        subjects.launcher_command("local", subjects.LauncherVerb.LAUNCH),
        subjects.scheduler_command("local", subjects.SchedulerVerb.BOOK),
        subjects.session_event(ALICE.token, "s1", "RUNNING"),  # phases are the services' to publish
        subjects.health("offers"),
        f"$JS.API.STREAM.DELETE.{ev}",
        f"$JS.API.STREAM.PURGE.{cmd}",
        f"$JS.API.STREAM.INFO.{ev}",  # its subjects_filter would list every owner's subjects
        "$JS.API.STREAM.NAMES",
        f"$JS.API.STREAM.MSG.GET.{ev}",
        f"$JS.API.DIRECT.GET.{ev}.{subjects.session_event(ALICE.token, 's1', 'RUNNING')}",
        f"$JS.API.CONSUMER.MSG.NEXT.{cmd}.{SERVICE_DURABLE}",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{ev}.mine",
        f"$JS.API.CONSUMER.CREATE.{ev}",  # no filter in the subject: any filter in the body
        f"$JS.API.CONSUMER.DELETE.{cmd}.{SERVICE_DURABLE}",
        consumer_create(ev, "peek", subjects.session_events(BOB.token)),
        consumer_create(ev, "peek", subjects.SESSION.filter()),  # every owner's events
        consumer_create(ev, SERVICE_DURABLE, subjects.session_events(ALICE.token)),
        consumer_create(cmd, "peek", subjects.REQUEST.filter(owner=ALICE.token)),
    ]
    for subject in forbidden:
        await nc.publish(subject, b"{}", reply=nc.new_inbox())
        await alice.violation(subject)
    streams = await admin.jetstream().streams_info()
    assert {s.config.name for s in streams} == {ev, cmd}
    assert (await admin.jetstream().consumer_info(cmd, SERVICE_DURABLE)).config.filter_subject == (
        subjects.REQUEST.filter()
    )


async def test_history_replays_through_an_owner_filtered_consumer_only(alice: User, admin: Client) -> None:
    nc = alice.nc
    assert nc is not None
    session = str(uuid.uuid4())
    for owner, phase in ((ALICE, "QUOTED"), (BOB, "QUOTED"), (ALICE, "ACCEPTED")):
        subject = subjects.session_event(owner.token, session, phase)
        await admin.jetstream().publish(subject, json.dumps({"owner": str(owner), "phase": phase}).encode())
    # What BrokerClient must do: name the stream (no STREAM.NAMES look-up) and the consumer (so
    # nats-py uses the filtered create subject).
    sub = await nc.jetstream(timeout=3).subscribe(
        subjects.session_events(ALICE.token, session),
        stream=subjects.EVENTS_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
        config=ConsumerConfig(name=uuid.uuid4().hex),
    )
    seen = [json.loads((await sub.next_msg(timeout=3)).data) for _ in range(2)]
    assert seen == [
        {"owner": "local:alice", "phase": "QUOTED"},
        {"owner": "local:alice", "phase": "ACCEPTED"},
    ]
    await sub.unsubscribe()
    # The filter in the body must be the filter in the subject: alice's subject, bob's filter.
    body = {
        "stream_name": subjects.EVENTS_STREAM,
        "config": {"name": "sly", "filter_subject": subjects.session_events(BOB.token), "ack_policy": "none"},
    }
    subject = consumer_create(subjects.EVENTS_STREAM, "sly", subjects.session_events(ALICE.token))
    answer = json.loads((await nc.request(subject, json.dumps(body).encode(), timeout=3)).data)
    assert answer["error"]["err_code"] == 10131
    assert alice.errors == []


async def test_live_events_arrive_and_answers_need_the_private_inbox(
    server: NatsServer, alice: User, admin: Client
) -> None:
    nc = alice.nc
    assert nc is not None
    events = await nc.subscribe(subjects.session_events(ALICE.token))
    await nc.flush()
    await admin.publish(subjects.session_event(ALICE.token, "s9", "RUNNING"), b"live")
    assert (await events.next_msg(timeout=10)).data == b"live"  # generous: a loaded CI machine
    assert alice.errors == []
    # With nats-py's default inbox prefix, no answer can reach the client.
    plain = User()
    pnc = await plain.connect(server.url, user="alice", password=PASSWORDS["alice"])
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await pnc.jetstream(timeout=1).publish(subjects.request(ALICE.token, "r9"), b"{}")
        await plain.violation("_INBOX.")
    finally:
        await pnc.close()


async def test_a_token_identity_is_disconnected_when_its_token_expires(
    server: NatsServer, responder: CalloutResponder, identities: FakeIdentities
) -> None:
    expires = int(time.time()) + 2
    identities.tokens["carol-token"] = ("carol-sub", expires)
    carol = User()
    nc = await carol.connect(server.url, CAROL, token="carol-token")
    ack = await nc.jetstream(timeout=3).publish(subjects.request(CAROL.token, "r1"), b"{}")
    assert ack.stream == subjects.COMMANDS_STREAM
    await asyncio.wait_for(carol.closed.wait(), timeout=6)
    assert time.time() >= expires - 1  # closed at the token's expiry, not before
    assert "expired" in str(nc.last_error).lower()  # nats-py keeps the server's reason here
    # An expired token is refused at once; an unknown one too.
    assert "Authorization Violation" in await refused(server.url, token="carol-token")
    assert "Authorization Violation" in await refused(server.url, token="forged")


async def test_garbage_credentials_are_refused_and_the_responder_carries_on(
    server: NatsServer, responder: CalloutResponder
) -> None:
    garbage: list[dict[str, Any]] = [
        {"user": "a" * 2000, "password": "x"},  # longer than any field the callout reads
        {"user": "alice", "password": "p" * 3000},
        {"user": "al\u0000ice\n", "password": "alice-secret"},
        {"user": "alice"},  # a name without a password (nats-py sends an empty one)
        {"token": "t" * 3000},  # the server itself refuses a CONNECT over 4 KiB
        {"token": "\u00ff" * 100},
    ]
    for credentials in garbage:
        assert "Authorization Violation" in await refused(server.url, **credentials)
    user = User()
    nc = await user.connect(server.url, ALICE, user="alice", password=PASSWORDS["alice"])
    assert nc.is_connected
    await nc.close()


async def test_no_client_can_send_the_responder_a_request(
    server: NatsServer, keys: Keys, admin: Client, responder: CalloutResponder
) -> None:
    """Only nats-server asks the callout: another account's `$SYS.REQ.USER.AUTH` is another subject,
    and the callout account's own users may not publish on it."""
    with pytest.raises(nats.errors.NoRespondersError):
        await admin.request(AUTH_SUBJECT, b"garbage", timeout=1)
    insider = User()
    nc = await insider.connect(server.url, nkeys_seed_str=keys.callout_user.get_secret_value())
    try:
        await nc.publish(AUTH_SUBJECT, b"garbage", reply=nc.new_inbox())
        await insider.violation(AUTH_SUBJECT)
    finally:
        await nc.close()


# -- OIDC access tokens through the real verifier ---------------------------------------------------


async def test_an_oidc_token_connects_as_its_owner_and_nobody_else(
    server: NatsServer, oidc_responder: CalloutResponder, provider: FakeOidcProvider, admin: Client
) -> None:
    # Named like the local alice: the owner is the provider's sub all the same.
    dora = owners.oidc(provider.issuer, "dora-sub")
    user = User()
    nc = await user.connect(server.url, dora, token=provider.mint("dora-sub", preferred_username="alice"))
    try:
        ack = await nc.jetstream(timeout=5).publish(subjects.request(dora.token, "r1"), b"{}")
        assert ack.stream == subjects.COMMANDS_STREAM
        events = await nc.subscribe(subjects.session_events(dora.token))
        await nc.flush()
        await admin.publish(subjects.session_event(dora.token, "s1", "RUNNING"), b"mine")
        await admin.flush()
        assert (await events.next_msg(timeout=5)).data == b"mine"
        alice_request = subjects.request(ALICE.token, "r2")
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream(timeout=1).publish(alice_request, b"{}")
        await user.violation(alice_request)
        await nc.subscribe(subjects.session_events(ALICE.token))
        await user.violation(subjects.session_events(ALICE.token))
    finally:
        await nc.close()
    info = await admin.jetstream().stream_info(subjects.COMMANDS_STREAM, subjects_filter=alice_request)
    assert not info.state.subjects


async def test_tokens_that_do_not_verify_are_refused_for_their_reason(
    server: NatsServer,
    oidc_responder: CalloutResponder,
    provider: FakeOidcProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = FakeOidcProvider()
    other.base_url = "https://idp.example.org"  # never asked: its tokens name it, and that is enough
    cases = [
        (provider.mint("s", aud="another-client"), "not for this audience"),
        (provider.mint("s", foreign=True, kid=provider.current.kid), "signature does not verify"),
        (provider.mint("s", foreign=True), "not one of the issuer's"),
        (provider.mint("s", expires_in=-60), "has expired"),
        (provider.mint("s", expires_in=-2), "has expired"),  # within the verifier's leeway: the callout's
        (provider.mint("s", issuer=other.issuer), "from another issuer"),
        (other.mint("s"), "not one of the issuer's"),
    ]
    with caplog.at_level(logging.WARNING, logger="shared.auth.callout"):
        for token, reason in cases:
            caplog.clear()
            assert "Authorization Violation" in await refused(server.url, token=token)
            refusals = [r.getMessage() for r in caplog.records if "refused a token" in r.getMessage()]
            assert len(refusals) == 1 and reason in refusals[0], (reason, refusals)
            assert token.split(".")[1] not in caplog.text


async def test_an_oidc_connection_is_closed_when_its_token_expires(
    server: NatsServer, oidc_responder: CalloutResponder, provider: FakeOidcProvider
) -> None:
    erin = owners.oidc(provider.issuer, "erin-sub")
    token = provider.mint("erin-sub", expires_in=3)
    expires = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]
    user = User()
    nc = await user.connect(server.url, erin, token=token)
    ack = await nc.jetstream(timeout=3).publish(subjects.request(erin.token, "r1"), b"{}")
    assert ack.stream == subjects.COMMANDS_STREAM
    assert not user.closed.is_set()
    await asyncio.wait_for(user.closed.wait(), timeout=10)
    assert time.time() >= expires - 1  # closed at the token's exp, not before
    assert "expired" in str(nc.last_error).lower()
    assert "Authorization Violation" in await refused(server.url, token=token)
