"""OIDC users on the bus of a running broker: the callout process (`broker callout`) verifies access
tokens against a real (fake) provider; a token's user is owned by issuer and `sub`, never by the
name it prefers; a connection is closed when its token expires."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import nats
import pytest
from pydantic import SecretStr

from shared.auth import owners
from shared.auth.credentials import Credentials
from shared.client import BrokerClient, BrokerRefused, read_request_file, wait_for_services
from shared.ops.embedded import SERVICES, EmbeddedBroker
from tests.conftest import allowed_owners, broker_env
from tests.e2e.helpers import HELLO_REQUEST
from tests.fakes.oidc import DEFAULT_AUDIENCE, FakeOidcProvider

pytestmark = pytest.mark.security
CAROL_SUB = "c4r01-sub"


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOidcProvider]:
    with FakeOidcProvider().serving() as fake:
        yield fake


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, provider: FakeOidcProvider) -> Iterator[EmbeddedBroker]:
    carol = str(owners.oidc(provider.issuer, CAROL_SUB))  # the local pool runs her code too
    env = broker_env(
        EB_OIDC_ISSUER=provider.issuer,
        EB_OIDC_AUDIENCE=DEFAULT_AUDIENCE,
        EB_POOL_ALLOWED_OWNERS=allowed_owners(carol),
    )
    running = EmbeddedBroker(data_dir=tmp_path_factory.mktemp("oidc") / "broker", env=env)
    running.start()
    try:
        asyncio.run(wait_for_services(running.url, SERVICES, timeout=60, credentials=running.operator()))
        yield running
    finally:
        running.stop()


def token_login(token: str) -> Credentials:
    return Credentials(token=SecretStr(token))


async def test_an_oidc_user_submits_as_issuer_and_sub(
    broker: EmbeddedBroker, provider: FakeOidcProvider
) -> None:
    # She prefers the name of a local user; the bus still makes her her provider's sub.
    broker.login("alice")
    carol = token_login(provider.mint(CAROL_SUB, preferred_username="alice"))
    assert carol.owner == owners.oidc(provider.issuer, CAROL_SUB)
    async with BrokerClient(broker.url, carol) as client:
        assert client.owner != owners.local("alice").token
        offerset = await client.submit(read_request_file(HELLO_REQUEST))
        assert offerset.result == "YES"
        session_id = (offerset.offers or [])[0].meta.uuid  # type: ignore[union-attr]
        assert session_id is not None
    # The local alice cannot touch it: its subjects carry carol's owner token, not alice's.
    async with BrokerClient(broker.url, broker.login("alice")) as alice:
        assert not (await alice.cancel(session_id)).applied


async def test_tokens_the_bus_must_not_accept(broker: EmbeddedBroker, provider: FakeOidcProvider) -> None:
    for token in (
        provider.mint("x", aud="another-client"),
        provider.mint("x", foreign=True),
        provider.mint("x", expires_in=-60),
        provider.mint("x", issuer="https://idp.example.org/realms/science"),
    ):
        with pytest.raises(BrokerRefused):
            async with BrokerClient(broker.url, token_login(token)):
                pass
    log = (broker.data_dir / "callout.log").read_text()
    assert token.split(".")[1] not in log  # refusals name the reason, never the token


async def test_the_server_closes_a_connection_when_its_token_expires(
    broker: EmbeddedBroker, provider: FakeOidcProvider
) -> None:
    closed = asyncio.Event()

    async def on_disconnect() -> None:
        closed.set()

    short = token_login(provider.mint("short-lived", expires_in=3))
    nc = await nats.connect(
        broker.url, allow_reconnect=False, disconnected_cb=on_disconnect, **short.connect_options()
    )
    try:
        assert nc.is_connected
        await asyncio.wait_for(closed.wait(), timeout=15)
        assert "expired" in str(nc.last_error).lower()
    finally:
        await nc.close()
