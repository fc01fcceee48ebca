"""The HTTP layer's pure parts: owner tokens, content negotiation, password hashes, event tokens,
OIDC bearer tokens (the fake provider in process), and the app's auth rules on an in-process server."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from services.offers.http.app import create_app
from services.offers.http.auth import (
    Authenticator,
    AuthError,
    EventTokens,
    Identity,
    hash_password,
    owner_token,
    verify_password,
)
from services.offers.http.negotiation import Format, response_format
from services.offers.http.settings import HttpSettings
from services.offers.store import ReadModel
from shared.auth import owners
from shared.auth.oidc import OidcVerifier
from shared.subjects import is_token
from tests.fakes.oidc import FakeOidcProvider

ISSUER_BASE = "https://issuer.example"
AUDIENCE = "broker"


def test_owner_tokens_are_safe_and_injective() -> None:
    names = ["alice", "a.b", "a_b", "a=2Eb", "bob smith", "é", "x*y>", "", "a=b"]
    tokens = [owner_token(n) for n in names]
    assert all(is_token(t) for t in tokens)
    assert len(set(tokens)) == len(names)
    assert owner_token("alice") == "alice"


@pytest.mark.parametrize(
    ("accept", "content_type", "expected"),
    [
        (None, None, Format.YAML),
        ("*/*", None, Format.YAML),
        (None, "application/json", Format.JSON),
        ("application/json", "application/yaml", Format.JSON),
        ("text/yaml", "application/json", Format.YAML),
        ("application/yml", None, Format.YAML),
        ("text/yml", None, Format.YAML),
        ("application/vnd.eb+yaml", None, Format.YAML),
        ("application/yaml;q=0.5, application/json", None, Format.JSON),
        ("text/html", "text/yaml", Format.YAML),
    ],
)
def test_response_format(accept: str | None, content_type: str | None, expected: Format) -> None:
    assert response_format(accept, content_type) is expected


def test_password_hashes_verify_and_differ() -> None:
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second  # salted
    assert verify_password("s3cret", first)
    assert not verify_password("wrong", first)
    assert not verify_password("s3cret", "garbage")


def test_event_tokens_expire_and_cannot_be_forged() -> None:
    tokens = EventTokens("secret", ttl_s=60)
    token, _ = tokens.issue(Identity("alice", "alice"), now=1000)
    assert tokens.verify(token, now=1030).owner == "alice"
    with pytest.raises(AuthError):
        tokens.verify(token, now=1061)
    with pytest.raises(AuthError):
        EventTokens("other", ttl_s=60).verify(token, now=1030)
    body, _, signature = token.partition(".")
    with pytest.raises(AuthError):
        tokens.verify(body[:-2] + "xx." + signature, now=1030)


def oidc_provider() -> tuple[FakeOidcProvider, OidcVerifier]:
    provider = FakeOidcProvider()
    provider.base_url = ISSUER_BASE  # in process: the verifier fetches through its ASGI app
    return provider, OidcVerifier(provider.issuer, AUDIENCE, fetch=provider.fetch)


async def no_password(username: str) -> str | None:
    return None


async def test_an_oidc_user_is_owned_by_issuer_and_sub_never_by_its_preferred_username() -> None:
    provider, verifier = oidc_provider()
    auth = Authenticator(admin_username=None, admin_password=None, lookup_password=no_password, oidc=verifier)
    alice = await auth.identify(f"Bearer {provider.mint('s-123', preferred_username='alice', aud=AUDIENCE)}")
    assert alice is not None
    assert alice.owner == owners.oidc(provider.issuer, "s-123").token
    assert alice.owner not in {"alice", owner_token("alice"), owners.local("alice").token}
    assert (alice.username, alice.source, alice.admin) == ("alice", "oidc", False)
    nameless = await auth.identify(f"bearer {provider.mint('s-123', aud=AUDIENCE)}")
    assert nameless is not None
    assert (nameless.username, nameless.owner) == ("s-123", alice.owner)
    for bad in (
        provider.mint(aud="other"),
        provider.mint(aud=AUDIENCE, issuer="https://evil.example"),
        provider.mint(aud=AUDIENCE, expires_in=-120),
        provider.mint(aud=AUDIENCE, foreign=True),
        provider.mint(aud=AUDIENCE) + "x",
    ):
        with pytest.raises(AuthError) as caught:
            await auth.identify(f"Bearer {bad}")
        assert caught.value.reason.startswith("invalid bearer token: ")
        assert bad.split(".")[1] not in caught.value.reason


def test_an_issuer_needs_an_audience() -> None:
    with pytest.raises(ValidationError, match="EB_OIDC_AUDIENCE must be set") as caught:
        HttpSettings(oidc_issuer=ISSUER_BASE, admin_password="hunter2")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValidationError, match="EB_OIDC_AUDIENCE must be set"):
        HttpSettings(oidc_issuer=ISSUER_BASE, oidc_audience=" ")
    with pytest.raises(ValidationError, match="EB_OIDC_ISSUER must be an https URL"):
        HttpSettings(oidc_issuer="http://issuer.example", oidc_audience=AUDIENCE)
    assert HttpSettings(oidc_audience=AUDIENCE).oidc_issuer is None  # an audience alone is harmless


async def test_the_app_builds_its_verifier_from_the_settings(tmp_path: Path) -> None:
    read_model = ReadModel(tmp_path / "offers.sqlite")
    config = HttpSettings(oidc_issuer=ISSUER_BASE, oidc_audience=AUDIENCE, oidc_leeway_s=30)
    verifier = create_app(config, read_model, NoBus()).state.ctx.auth.oidc
    assert isinstance(verifier, OidcVerifier)
    assert (verifier.issuer, verifier.audience, verifier.leeway_s) == (ISSUER_BASE, AUDIENCE, 30)
    assert create_app(HttpSettings(), read_model, NoBus()).state.ctx.auth.oidc is None


class NoBus:
    async def submit(self, owner: str, raw: bytes, request_id: str) -> Any:
        raise AssertionError("no bus in this test")

    async def update(self, owner: str, session_id: str, phase: Any) -> Any:
        raise AssertionError("no bus in this test")

    def event_queue(self) -> Any:
        raise AssertionError("no bus in this test")

    async def history(self, session_id: str) -> list[Any]:
        return []


@contextlib.asynccontextmanager
async def app_client(
    tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeOidcProvider]]:
    read_model = ReadModel(tmp_path / "offers.sqlite")
    await read_model.open()
    issuer, verifier = oidc_provider()
    config = HttpSettings(http_port=1, admin_username="admin", admin_password="pw", **settings)
    app = create_app(config, read_model, NoBus(), oidc=verifier)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, issuer
    finally:
        await read_model.close()


def basic(user: str, password: str) -> dict[str, str]:
    value = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {value}", "Accept": "application/json"}


async def test_identities_basic_and_bearer_auth(tmp_path: Path) -> None:
    async with app_client(tmp_path) as (client, issuer):
        admin = basic("admin", "pw")
        created = await client.post(
            "/admin/identities", json={"username": "dave", "password": "x"}, headers=admin
        )
        assert created.status_code == 201
        assert set(created.json()) == {"uuid", "username"}
        again = await client.post(
            "/admin/identities", json={"username": "dave", "password": "y"}, headers=admin
        )
        assert again.status_code == 409
        missing = await client.post("/admin/identities", json={"username": "erin"}, headers=admin)
        assert missing.status_code == 400
        assert missing.json()["messages"][0]["message"]
        not_admin = await client.post(
            "/admin/identities", json={"username": "f", "password": "g"}, headers=basic("dave", "x")
        )
        assert not_admin.status_code == 403

        me = await client.get("/whoami", headers=basic("dave", "x"))
        assert me.json()["owner"] == "dave"
        wrong = await client.get("/whoami", headers=basic("dave", "nope"))
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Basic")
        assert "Bearer" in wrong.headers["www-authenticate"]

        bearer = {
            "Authorization": f"Bearer {issuer.mint('g-1', preferred_username='gina', aud=AUDIENCE)}",
            "Accept": "application/json",
        }
        me = (await client.get("/whoami", headers=bearer)).json()
        assert (me["username"], me["owner"]) == ("gina", owners.oidc(issuer.issuer, "g-1").token)
        posing = issuer.mint("g-2", preferred_username="dave", aud=AUDIENCE)
        me = (await client.get("/whoami", headers={**bearer, "Authorization": f"Bearer {posing}"})).json()
        assert (me["username"], me["owner"]) == ("dave", owners.oidc(issuer.issuer, "g-2").token)
        assert (await client.get("/sessions", headers=bearer)).json() == {"sessions": []}
        anonymous = await client.get("/sessions/00000000-0000-4000-8000-000000000000")
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"].startswith("application/yaml")
        no_accept = {"Authorization": basic("dave", "x")["Authorization"]}
        token = (await client.post("/events/token", headers=no_accept)).text
        assert token.startswith("token:")  # YAML: the request named no type


async def test_public_reads(tmp_path: Path) -> None:
    async with app_client(tmp_path, public_reads=True) as (client, _):
        missing = await client.get(
            "/sessions/00000000-0000-4000-8000-000000000000", headers={"Accept": "application/json"}
        )
        assert missing.status_code == 404
        assert missing.json()["messages"][0]["kind"] == "urn:not-found"
        bad_id = await client.get("/offersets/not-a-uuid", headers={"Accept": "application/json"})
        assert bad_id.status_code == 422
