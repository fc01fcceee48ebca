"""OIDC bearer tokens against the real services: the offers service verifies them with the fake
provider (tests/fakes/oidc.py) over HTTP, and an OIDC user whose ``preferred_username`` is a local
user's name is another owner: it can neither read nor change that user's sessions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.auth import owners
from tests.conftest import allowed_owners
from tests.e2e.helpers import hello_request
from tests.e2e.http_support import JSON, HttpBroker, start_http_broker, update
from tests.fakes.oidc import DEFAULT_AUDIENCE, FakeOidcProvider

OIDC_ALICE = "0b6e7f5c-oidc-alice"


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOidcProvider]:
    with FakeOidcProvider().serving() as fake:
        yield fake


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory, provider: FakeOidcProvider) -> Iterator[HttpBroker]:
    running = start_http_broker(
        tmp_path_factory.mktemp("http-oidc-broker"),
        EB_OIDC_ISSUER=provider.issuer,
        EB_OIDC_AUDIENCE=DEFAULT_AUDIENCE,
        # The OIDC alice may run code on the local pool too: what is tested is whose session it is.
        EB_POOL_ALLOWED_OWNERS=allowed_owners(str(owners.oidc(provider.issuer, OIDC_ALICE))),
    )
    try:
        yield running
    finally:
        running.broker.stop()


def bearer(http: HttpBroker, token: str) -> httpx.Client:
    return httpx.Client(base_url=http.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=40.0)


def offers_of(client: httpx.Client) -> list[str]:
    answer = client.post("/requests", json=hello_request(), headers=JSON)
    assert answer.status_code == 303, answer.text
    offerset: dict[str, Any] = answer.json()
    assert offerset["result"] == "YES", offerset
    return [offer["meta"]["uuid"] for offer in offerset["offers"]]


def test_an_oidc_alice_is_not_the_local_alice(http: HttpBroker, provider: FakeOidcProvider) -> None:
    token = provider.mint(OIDC_ALICE, preferred_username="alice")
    with http.client() as alice, bearer(http, token) as impostor:
        me = impostor.get("/whoami", headers=JSON).json()
        assert me["username"] == "alice"  # shown as the provider says
        assert me["owner"] == owners.oidc(provider.issuer, "0b6e7f5c-oidc-alice").token
        assert me["owner"] != alice.get("/whoami", headers=JSON).json()["owner"]

        offers = offers_of(alice)
        # The impostor may neither read nor change alice's sessions, nor list them.
        assert impostor.get(f"/sessions/{offers[0]}", headers=JSON).status_code in {403, 404}
        refused = update(impostor, offers[0], "ACCEPTED")
        assert refused.status_code == 403, refused.text
        assert refused.json()["messages"][0]["kind"] == "urn:forbidden"
        assert impostor.get("/sessions", headers=JSON).json()["sessions"] == []

        # The local alice can, and her session is as she left it (the refused update did nothing).
        session = alice.get(f"/sessions/{offers[0]}", headers=JSON)
        assert session.status_code == 200, session.text
        assert session.json()["phase"] == "OFFERED"
        for offer in offers:
            rejected = update(alice, offer, "REJECTED")
            assert rejected.status_code == 200, rejected.text

        # The other way round: the OIDC user's sessions are its own.
        own = offers_of(impostor)
        assert impostor.get(f"/sessions/{own[0]}", headers=JSON).status_code == 200
        assert alice.get(f"/sessions/{own[0]}", headers=JSON).status_code in {403, 404}
        assert update(alice, own[0], "ACCEPTED").status_code == 403
        for offer in own:
            assert update(impostor, offer, "REJECTED").status_code == 200


def test_tokens_the_broker_must_not_accept(http: HttpBroker, provider: FakeOidcProvider) -> None:
    for token in (
        provider.mint("x", preferred_username="alice", aud="another-client"),
        provider.mint("x", preferred_username="alice", foreign=True),
        provider.mint("x", preferred_username="alice", expires_in=-60),
        provider.mint("x", preferred_username="alice", issuer="https://idp.example.org/realms/science"),
    ):
        with bearer(http, token) as client:
            answer = client.get("/sessions", headers=JSON)
            assert answer.status_code == 401, answer.text
            assert "Bearer" in answer.headers["www-authenticate"]
            assert token.split(".")[1] not in answer.text
